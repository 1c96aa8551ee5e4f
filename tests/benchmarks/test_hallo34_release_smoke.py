"""benchmarks/hallo34_release.py runs on the tiny reference data and prints each path's time and its parity with
the official run. It checks that the script works, never how fast anything is."""
from __future__ import annotations

import re

from tests.support import fixture, load_benchmark


def test_quick_run_prints_times_and_parity(capsys):
    for system in ("hallo3", "hallo4"):  # skips without the shared reference data
        fixture(system, f"{system}_tiny")
    bench = load_benchmark("hallo34_release")
    bench.main(["--quick"])
    out = capsys.readouterr().out
    diffs = {m[0]: float(m[1]) for m in re.findall(r"^(hallo\d tiny .*?)\s+[0-9.]+ s\s+max\|diff\| vs official "
                                                  r"([0-9.e+-]+)", out, re.M)}
    assert len(diffs) == 3, out
    assert all(d < 0.1 for d in diffs.values())  # within the README tolerances
    assert "batched / official time ratio" in out
