"""benchmarks/hallo34_release.py runs on the tiny reference data and prints each path's time and its parity with
the official run. It checks that the script works, never how fast anything is."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hallo34_release.py"
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"


def test_quick_run_prints_times_and_parity(capsys):
    if not (FIXTURES / "hallo4").is_dir() or not (FIXTURES / "hallo3").is_dir():
        pytest.skip("shared reference data not found")
    spec = importlib.util.spec_from_file_location("hallo34_release_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    bench.main(["--quick"])
    out = capsys.readouterr().out
    diffs = {m[0]: float(m[1]) for m in re.findall(r"^(hallo\d tiny .*?)\s+[0-9.]+ s\s+max\|diff\| vs official "
                                                  r"([0-9.e+-]+)", out, re.M)}
    assert len(diffs) == 3, out
    assert all(d < 0.1 for d in diffs.values())  # within the README tolerances
    assert "batched / official time ratio" in out
