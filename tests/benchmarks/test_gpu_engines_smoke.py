"""benchmarks/gpu_engines.py runs its GPU code end to end on tiny configs on the CPU (`--tiny`): a row for every
registry engine with weights, ours against the upstream-equivalent path with their parity, and fp16 / bf16
against fp32. Without CUDA the official-size run prints "skipped: no GPU". It checks that the script works, never
how fast anything is."""
from __future__ import annotations

import math
import re

import pytest
import torch

from talkinghead.systems import SYSTEMS
from tests.support import fixture, load_benchmark

NUMBER = r"[0-9.]+(?:e[+-]?[0-9]+)?|inf"


def test_tiny_run_gives_every_engine_a_row(capsys):
    fixture("echomimic", "echomimic_tiny")  # the tiny EchoMimic sizes are read from it
    bench = load_benchmark("gpu_engines")
    assert bench.main(["--tiny", "--steps", "1", "--frames", "5", "--no-memory"]) == 0
    out = capsys.readouterr().out
    engines = [s.name for s in SYSTEMS.values() if s.weights != "none" and s.engine is not None]
    assert set(engines) <= set(bench.CASES) and "not benchmarked" not in out and "could not run" not in out
    table = out[out.index("system "):]
    for name in engines:
        line = re.search(rf"^{re.escape(name)} +(.*)$", table, re.M)
        assert line, f"no row for {name}:\n{table}"
        cells = line.group(1).split()
        assert len(cells) == 11, line.group(0)
        ours, upstream, ratio, parity = cells[:4]
        assert float(ours) > 0
        if "ours is the official path" in bench.CASES[name].upstream or "no official code" in bench.CASES[name].upstream:
            assert (upstream, ratio, parity) == ("-", "-", "-")
        else:  # the upstream-equivalent computes the same clip: float rounding apart (Hallo4's bf16 attention)
            assert float(upstream) > 0 and float(ratio) > 0 and float(parity) < 1e-2, line.group(0)
        for seconds, diff, psnr in (cells[4:7], cells[7:10]):
            assert re.fullmatch(NUMBER, seconds) and float(seconds) > 0
            assert float(diff) > 0 and math.isfinite(float(diff))  # half precision rounds, and stays finite
            assert float(psnr) > 20, line.group(0)  # close to fp32 on the output's range
        assert cells[10] == "-"  # peak CUDA memory: none on a CPU


def test_official_sizes_are_skipped_without_a_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the official sizes would run")
    bench = load_benchmark("gpu_engines")
    assert bench.main(["--systems", "hallo,skyreels-a2"]) == 0
    assert capsys.readouterr().out.strip() == "skipped: no GPU"


def test_unknown_system_is_refused(capsys):
    bench = load_benchmark("gpu_engines")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--tiny", "--systems", "warp"])
    assert exc.value.code == 2
    assert "unknown system(s) warp" in capsys.readouterr().err


def test_a_cell_that_cannot_run_says_why_and_the_table_goes_on(capsys, monkeypatch):
    """Out of memory in one precision (what a 14B model in fp32 can meet on one GPU) leaves that cell n/a."""
    import dataclasses

    bench = load_benchmark("gpu_engines")
    case = bench.CASES["hallo4"]

    def build(tiny, device, dtype, steps, frames):
        if dtype == torch.float16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return case.build(tiny, device, dtype, steps, frames)

    monkeypatch.setitem(bench.CASES, "hallo4", dataclasses.replace(case, build=build))
    assert bench.main(["--tiny", "--steps", "1", "--frames", "5", "--systems", "hallo4,skyreels-a1"]) == 0
    out = capsys.readouterr().out
    cells = re.search(r"^hallo4 +(.*)$", out, re.M).group(1).split()
    assert cells[4:7] == ["n/a"] * 3 and float(cells[7]) > 0 and float(cells[9]) > 20
    assert "fp16: could not run: out of memory" in out
    assert re.search(r"^skyreels-a1 +[0-9.]+ ", out, re.M)  # the next system still ran
