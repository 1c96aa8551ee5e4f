"""CPU benchmark of dubbing (`talkinghead dub`): speed against the decode and encode ceilings, a
per-stage breakdown and memory, measured in one run.

    .venv/bin/python benchmarks/dub.py            # 720p25 60 s and 1080p25 20 s sources
    .venv/bin/python benchmarks/dub.py --quick    # small, short sources (smoke test)

The sources are made by our own warp engine (a portrait speaking utterance A in a larger, panning
frame, with a cut-away), then dubbed with utterance B. For each size it prints: decode-only fps of
the source, encode-only fps of its frames (H.264 at the size, the writer `dub` uses), the dub's
end-to-end fps and x real time (decode -> track -> warp -> encode, with the speech as sound), the
time share of each stage, and peak RSS of a whole dub for a short and a long source, each in a fresh
process. Targets (PASS/MISS; a benchmark never fails on speed): 720p >= 1.5x real time, 1080p >= 1x.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FPS = 25.0
METRIC = "{:<38}{:<40}{:<16}{}"


def line(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
    print(METRIC.format(name, value, target, "" if ok is None else ("PASS" if ok else "MISS")).rstrip())


def speeches(seconds: float):
    """(A, B): A = the 7.1 s clip backwards then the 3 s clip, repeated; B = the 7.1 s clip repeated."""
    from talkinghead.assets import speech_path
    from talkinghead.io import load_audio
    from talkinghead.types import Speech

    b = load_audio(speech_path("librivox_0870")[0]).samples
    c = load_audio(speech_path("librivox_0880")[0]).samples
    n = int(seconds * 16000)
    a = np.concatenate([b[::-1], c])
    return (Speech(np.resize(a, n).astype(np.float32)), Speech(np.resize(b, n).astype(np.float32)))


def make(path: Path, seconds: float, width: int, height: int, face: int) -> Path:
    from talkinghead.dub.testsrc import make_source

    a, _ = speeches(seconds)
    cut = int(seconds * FPS * 0.4)
    return make_source(path, a, width, height, face, cutaway=(cut, 12), crf=16)


def decode_only(path: Path) -> tuple[float, int]:
    from talkinghead.dub.source import VideoSource

    t = time.perf_counter()
    n = sum(1 for _ in VideoSource(path).frames())
    return n / (time.perf_counter() - t), n


def encode_only(path: Path, n: int, tmp: Path) -> float:
    """The writer's fps on this video's own frames (the first 50 decoded, cycled to n frames)."""
    from talkinghead.dub.source import VideoSource
    from talkinghead.io import VideoWriter

    src = VideoSource(path)
    frames = [f.image for _, f in zip(range(50), src.frames())]
    t = time.perf_counter()
    with VideoWriter(tmp / "enc.mp4", FPS, src.size) as w:
        for i in range(n):
            w.write(frames[i % len(frames)])
    return n / (time.perf_counter() - t)


def dub_timed(path: Path, seconds: float, out: Path) -> tuple[float, int, dict]:
    """End-to-end dub through talkinghead.dub, with time per stage from wrapped stage functions."""
    import talkinghead.dub.pipeline as P
    from talkinghead.dub import dub
    from talkinghead.dub.compose import MouthCompositor
    from talkinghead.dub.track import _CropTracker
    from talkinghead.io import VideoWriter

    _, b = speeches(seconds)
    stages = {"track (FaceMesh on the crop)": 0.0, "retarget": 0.0, "warp + interior": 0.0, "encode": 0.0}
    orig = (_CropTracker.track, P.retarget, MouthCompositor.render, VideoWriter.write)

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                stages[name] += time.perf_counter() - t
        return wrapper

    _CropTracker.track = timed("track (FaceMesh on the crop)", orig[0])
    P.retarget = timed("retarget", orig[1])
    MouthCompositor.render = timed("warp + interior", orig[2])
    VideoWriter.write = timed("encode", orig[3])
    try:
        t = time.perf_counter()
        dub(path, b, out)
        wall = time.perf_counter() - t
    finally:
        _CropTracker.track, P.retarget, MouthCompositor.render, VideoWriter.write = orig
    from talkinghead.io import probe

    return wall, probe(out, decode=False)["n_frames"] or int(seconds * FPS), stages


def rss_child(path: str, seconds: float, out: str) -> None:
    from talkinghead.dub import dub

    _, b = speeches(seconds)
    dub(path, b, out)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


def peak_rss(path: Path, seconds: float, out: Path) -> float:
    p = subprocess.run([sys.executable, __file__, "--rss-child", str(path), str(seconds), str(out)],
                       capture_output=True, text=True, check=True)
    return float(p.stdout.strip().splitlines()[-1])


def run_size(label: str, seconds: float, w: int, h: int, face: int, target: float, tmp: Path) -> None:
    src = make(tmp / f"src_{label}.mp4", seconds, w, h, face)
    dec_fps, n = decode_only(src)
    enc_fps = encode_only(src, n, tmp)
    wall, n_out, stages = dub_timed(src, seconds, tmp / f"dub_{label}.mp4")
    fps = n_out / wall
    xrt = fps / FPS
    print(f"\n== {label}: {w}x{h} @ {FPS:g} fps, {seconds:g} s ({n} frames) ==")
    line("decode-only fps (ceiling)", f"{dec_fps:.1f}")
    line("encode-only fps (ceiling)", f"{enc_fps:.1f}")
    line("dub fps (end to end)", f"{fps:.1f}  ({wall:.1f} s wall)")
    line("dub x real time", f"{xrt:.2f}x", f">= {target:g}x", xrt >= target)
    line("dub fps / encode-only fps", f"{fps / enc_fps:.2f}")
    line("dub fps / decode-only fps", f"{fps / dec_fps:.2f}")
    print("stages (time summed over frames; decode and tracking run in a second thread):")
    for name, s in stages.items():
        line(f"  {name}", f"{1000 * s / max(n_out, 1):.2f} ms/frame")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small, short sources (checks the script runs)")
    ap.add_argument("--rss-child", nargs=3, metavar=("VIDEO", "SECONDS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child[0], float(args.rss_child[1]), args.rss_child[2])
        return 0
    print(f"cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.quick:
            sizes = [("small", 3.0, 480, 320, 256, 1.5)]
            rss = (2.0, 4.0, 480, 320, 256)
        else:
            sizes = [("720p", 60.0, 1280, 720, 512, 1.5), ("1080p", 20.0, 1920, 1080, 720, 1.0)]
            rss = (10.0, 40.0, 640, 360, 288)
        short_s, long_s, rw, rh, rf = rss
        short_src, long_src = make(tmp / "rss_s.mp4", short_s, rw, rh, rf), make(tmp / "rss_l.mp4", long_s, rw, rh, rf)
        r_short = peak_rss(short_src, short_s, tmp / "rss_s_out.mp4")
        r_long = peak_rss(long_src, long_s, tmp / "rss_l_out.mp4")
        for label, seconds, w, h, face, target in sizes:
            run_size(label, seconds, w, h, face, target, tmp)
        print(f"\n== memory: {rw}x{rh}, {short_s:g} s vs {long_s:g} s source, fresh processes ==")
        line("peak RSS, short", f"{r_short:.0f} MiB")
        line("peak RSS, long", f"{r_long:.0f} MiB")
        line("peak RSS ratio long / short", f"{r_long / r_short:.2f}", "<= 1.25 (flat)", r_long / r_short <= 1.25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
