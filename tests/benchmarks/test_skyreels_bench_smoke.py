"""benchmarks/skyreels.py runs end to end on the tiny release folders and prints every row; it checks that the
script works and that batched guidance keeps float32 parity, never how fast anything is."""
from __future__ import annotations

import re

from tests.support import fixture, load_benchmark


def test_prints_times_and_parity(capsys):
    for system in ("skyreels_a1", "skyreels_a2"):  # skips without the shared reference data
        fixture(system, f"{system}_tiny")
    bench = load_benchmark("skyreels")
    assert bench.main([]) == 0
    out = capsys.readouterr().out
    for name in ("A1 tiny fp32", "A1 tiny bf16", "A2 tiny fp32 serial", "A2 tiny fp32 batched", "A2 tiny bf16 batched"):
        assert re.search(rf"^{name}: [0-9.]+ s per clip", out, re.M), out
    batched = int(re.search(r"max \|fp32 batched - fp32 serial\| frames: (\d+)/255", out).group(1))
    assert batched <= 1  # one batch of 2 instead of two calls: float rounding only
