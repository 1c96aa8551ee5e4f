"""benchmarks/hallo_engine.py runs end to end on the tiny net (1 step, 2 frames) and prints every stage, the
memory and the ours / upstream ratio. It checks that the script works, never how fast anything is."""
from __future__ import annotations

import re

import pytest

from tests.support import load_benchmark

STAGES = ("VAE encode (portrait + motion frames)", "conditions (projections + face locator)",
          "reference net (fill_bank)", "UNet steps (all)", "VAE decode", "clip total")
RESULTS = ("seconds per generated frame", "UNet step", "reference net (fill_bank)", "VAE decode per frame",
           "peak memory per frame")
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def test_tiny_benchmark_prints_stages_memory_and_ratio(capsys):
    bench = load_benchmark("hallo_engine")
    assert bench.main(["--size", "tiny", "--steps", "1", "--frames", "2", "--repeats", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "1 DDIM steps" in out and "2 frames" in out
    for title in ("[stages] ours", "[stages] upstream-equivalent"):
        block = out[out.index(title):].split("\n\n")[0]
        for stage in STAGES:
            assert re.search(re.escape(stage) + r"\s+" + NUMBER + " s", block), f"no time for {stage!r} in:\n{block}"
        assert "= 1 x " in block and "s/step" in block and "= 2 x " in block and "s/frame" in block
    assert re.search(r"ours\s+peak RSS\s+" + NUMBER + r" MiB, \+" + NUMBER + " MiB", out)
    assert re.search(r"upstream\s+peak RSS\s+" + NUMBER + r" MiB, \+" + NUMBER + " MiB", out)
    summary = out[out.index("== results:"):]
    rows = {ln[:36].strip(): ln[36:] for ln in summary.splitlines()[2:]}
    for name in RESULTS:
        row = next((v for k, v in rows.items() if k.startswith(name)), None)
        assert row is not None, f"missing result line {name!r} in:\n{summary}"
        assert len(re.findall(NUMBER, row)) >= 2, row
    ratio = re.search(r"ours / upstream-equivalent time: (" + NUMBER + ")", out)
    assert ratio and float(ratio.group(1)) > 0
    diff = re.search(r"max \|diff\| (\S+) ", out)  # the upstream-equivalent reader computes what ours does
    assert diff and float(diff.group(1)) < 1e-4, diff
    assert "nan" not in summary.lower()


def test_full_size_is_refused_on_cpu_without_force(capsys):
    bench = load_benchmark("hallo_engine")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--size", "full", "--device", "cpu"])
    assert exc.value.code == 2
    assert "--force" in capsys.readouterr().err


def test_upstream_reader_matches_ours_and_does_the_extra_work():
    """UpstreamReadProcessor returns what ReferenceReadProcessor returns, and runs attention over
    [own, reference] for all rows (the unconditional ones included) before redoing those rows."""
    import torch
    from diffusers.models.attention_processor import Attention

    from talkinghead.nn.reference_attention import ReferenceBank, ReferenceReadProcessor

    bench = load_benchmark("hallo_engine")
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    bank = ReferenceBank(dtype=None)
    bank.groups, bank.uncond_groups = 2, 1
    bank.write("x", torch.randn(2 * 3, 10, 16))  # 2 groups x (portrait + 2 motion frames)
    hidden = torch.randn(2 * 4, 10, 16)  # 2 groups x 4 frames
    ours = ReferenceReadProcessor(bank, "x")
    upstream = bench.UpstreamReadProcessor(bank, "x")
    keys = []
    attn.to_k.register_forward_hook(lambda _m, inp, _out: keys.append(inp[0].shape))
    with torch.no_grad():
        a = ours(attn, hidden)
        n_ours = len(keys)
        b = upstream(attn, hidden)
    torch.testing.assert_close(a, b)
    assert keys[n_ours:] == [torch.Size([8, 20, 16]), torch.Size([4, 10, 16])]  # all rows with the reference
    assert keys[:n_ours] == [torch.Size([4, 20, 16]), torch.Size([4, 10, 16])]  # ours: cond rows only
