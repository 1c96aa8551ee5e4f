"""benchmarks/dit_forward.py and benchmarks/midas_stream.py run end to end at tiny size and print a row per
system (or the streaming numbers). They check that the scripts work, never how fast anything is."""
from __future__ import annotations

import re

import torch

from tests.support import load_benchmark

NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def test_dit_forward_prints_a_tiny_row_per_system(capsys):
    bench = load_benchmark("dit_forward")
    assert bench.main(["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for entry in bench.SYSTEMS:
        row = re.search(rf"^{entry.name}\s+tiny\s+cpu\s+\(.*?\)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})", out, re.M)
        assert row, f"no tiny row for {entry.name}:\n{out}"
        assert float(row.group(1)) > 0 and float(row.group(2)) > 0  # parameters and forward time
        if not torch.cuda.is_available():
            assert re.search(rf"^{entry.name}\s+official\s+skipped: no GPU", out, re.M)


def test_midas_stream_prints_latency_and_fps(capsys):
    bench = load_benchmark("midas_stream")
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--chunks", "3"]) == 0
    finally:
        torch.set_num_threads(threads)  # the script pins its own thread count
    out = capsys.readouterr().out
    assert re.search(rf"first frame.*?{NUMBER}\s*ms", out, re.I | re.S), out
    assert re.search(rf"{NUMBER}\s*fps", out), out
