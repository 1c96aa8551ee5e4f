"""benchmarks/dit_forward.py and benchmarks/midas_stream.py run end to end at tiny size and print a row per
system (or the streaming numbers). They check that the scripts work, never how fast anything is."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_dit_forward_prints_a_tiny_row_per_system(capsys):
    bench = _script("dit_forward")
    assert bench.main(["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for entry in bench.SYSTEMS:
        row = re.search(rf"^{entry.name}\s+tiny\s+cpu\s+\(.*?\)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})", out, re.M)
        assert row, f"no tiny row for {entry.name}:\n{out}"
        assert float(row.group(1)) > 0 and float(row.group(2)) > 0  # parameters and forward time
        if not torch.cuda.is_available():
            assert re.search(rf"^{entry.name}\s+official\s+skipped: no GPU", out, re.M)


def test_midas_stream_prints_latency_and_fps(capsys):
    bench = _script("midas_stream")
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--chunks", "3"]) == 0
    finally:
        torch.set_num_threads(threads)  # the script pins its own thread count
    out = capsys.readouterr().out
    assert re.search(rf"first frame.*?{NUMBER}\s*ms", out, re.I | re.S), out
    assert re.search(rf"{NUMBER}\s*fps", out), out
