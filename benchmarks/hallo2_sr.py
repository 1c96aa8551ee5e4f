"""Hallo2 video super-resolution benchmark (VQVideoSuperResolution.restore): time per restored frame, ours /
upstream-equivalent, and the parity of each speed option, measured in one run with seeded random weights.

    .venv/bin/python benchmarks/hallo2_sr.py                          # tiny network (fixture widths), CPU
    .venv/bin/python benchmarks/hallo2_sr.py --size full --device cuda --frames 16   # the official network

Prints:
  1. seconds per frame of our restore (SDPA in the VQGAN attention blocks, nn.MultiheadAttention on its fused
     path with need_weights=False) and of the upstream-equivalent (explicit bmm/softmax attention blocks, MHA
     computing the averaged attention weights it then discards), the ratio, and max |ours - upstream| of the
     output and whether every code index agrees;
  2. on a GPU: the VQGAN in fp16 and bf16 (the transformer stays fp32, as the engine keeps the code logits exact),
     seconds per frame and max |half - fp32| of the output and the share of code indices that agree. On a CPU
     this part prints "skipped: no GPU".
The median over `--repeats` is reported; a benchmark never fails on speed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from talkinghead.nn import vq_super_resolution as sr

TINY = dict(nf=32, ch_mult=(1, 1, 1, 1, 1, 1), codebook_size=64, dim_embd=32, n_head=4, n_layers=2)


def upstream_attn_forward(self, x):
    """The official AttnBlock arithmetic: bmm, scale int(c)**-0.5, softmax, bmm."""
    t = self.norm(x)
    q, k, v = self.q(t), self.k(t), self.v(t)
    b, c, h, w = q.shape
    weights = torch.bmm(q.reshape(b, c, h * w).permute(0, 2, 1), k.reshape(b, c, h * w)) * int(c) ** -0.5
    weights = F.softmax(weights, dim=2)
    out = torch.bmm(v.reshape(b, c, h * w), weights.permute(0, 2, 1)).reshape(b, c, h, w)
    return x + self.proj_out(out)


def upstream_mha(mha):
    """nn.MultiheadAttention called as the official layer does (attention weights computed and averaged)."""
    real = mha.forward

    def forward(q, k, v, need_weights=True, **kw):
        return real(q, k, v, need_weights=True, **kw)
    return forward


def build(size: str, device: str, seed: int = 0) -> sr.VQVideoSuperResolution:
    torch.manual_seed(seed)
    config = sr.VQSuperResolutionConfig(**(TINY if size == "tiny" else {}))
    net = sr.VQVideoSuperResolution(config).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1:
                p.normal_(0, p[0].numel() ** -0.5)
        net.idx_pred_layer[1].weight.mul_(4.0)
    return net.to(device)


def timed(fn, repeats: int, device: str) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    net = build(args.size, args.device)
    s = net.config.img_size
    x = torch.rand(1, args.frames, 3, s, s, generator=torch.Generator().manual_seed(1)).to(args.device) * 2 - 1
    with torch.no_grad():
        ours_t, ours = timed(lambda: net.restore(x, 1.0), args.repeats, args.device)
        patched = sr.AttnBlock.forward
        sr.AttnBlock.forward = upstream_attn_forward
        for layer in net.ft_layers:
            layer.self_attn.forward, layer.temp_attn.forward = upstream_mha(layer.self_attn), upstream_mha(layer.temp_attn)
        try:
            up_t, up = timed(lambda: net.restore(x, 1.0), args.repeats, args.device)
        finally:
            sr.AttnBlock.forward = patched
            for layer in net.ft_layers:
                del layer.self_attn.forward, layer.temp_attn.forward
    f = args.frames
    print(f"{args.size} network, {f} frames of {s}x{s} on {args.device}")
    print(f"  ours      {ours_t / f:.3f} s/frame")
    print(f"  upstream  {up_t / f:.3f} s/frame   ours/upstream {ours_t / up_t:.2f}x")
    print(f"  parity: max|ours - upstream| {float((ours.video - up.video).abs().max()):.2e} "
          f"(output max {float(up.video.abs().max()):.1f}), indices equal {torch.equal(ours.indices, up.indices)}")

    if not torch.cuda.is_available() or not args.device.startswith("cuda"):
        print("  half precision: skipped: no GPU")
        return
    for dtype in (torch.float16, torch.bfloat16):
        half = build(args.size, args.device)
        for part in (half.encoder, half.generator, half.fuse_convs_dict):
            part.to(dtype)

        def run():
            lq, skips = half.encode(x.flatten(0, 1).to(dtype))
            logits = half.code_logits(lq.float(), f)
            idx = logits.softmax(2).topk(1, dim=2).indices[..., 0]
            quant = sr.adain(half.quantize.lookup(idx, (half.config.latent_side,) * 2), lq.float())
            return half.decode(quant.to(dtype), skips, 1.0).float(), idx

        with torch.no_grad():
            t, (video, idx) = timed(run, args.repeats, args.device)
        agree = float((idx == ours.indices).float().mean())
        print(f"  {str(dtype)[6:]:8s}  {t / f:.3f} s/frame ({t / ours_t:.2f}x fp32), max|half - fp32| "
              f"{float((video - ours.video.flatten(0, 1)).abs().max()):.2e}, indices agreeing {agree:.4f}")


if __name__ == "__main__":
    main()
