"""CPU benchmark of the `warp` engine: speed, streaming latency and memory, measured in one run.

    .venv/bin/python benchmarks/cpu_engine.py            # 10 s of speech, 512x512 @ 25 fps
    .venv/bin/python benchmarks/cpu_engine.py --quick    # a few seconds, tiny sizes (smoke test)

Prints, next to its target (PASS/MISS; a benchmark never fails on speed):
  0. end to end, as a user runs it: `talkinghead animate` on 60 s of speech (--e2e-seconds) in a fresh
     process, from process start to the closed output file, and its time to the first frame (the
     first VideoWriter.write; compiled bytecode cached, as for an installed package), next to the
     encode-only ceiling for the same clip measured in this run
     (the same number of frames through VideoWriter with the same audio), and `talkinghead --help`;
  1. engine fps / x real-time: motion + render + H.264/AAC encode through api.render_to_file,
     the code path of `talkinghead animate`;
  2. render-only fps and encode-only fps of the same frames, and engine fps / encode-only fps;
  3. streaming latency: compute from an audio chunk to its first rendered frame, plus the
     algorithmic lookahead;
  4. peak RSS of a whole `animate` run for a short and a long clip, each in a fresh subprocess
     (`--rss-child SECONDS`), run first while this process is still small.
and a per-stage breakdown (motion, rig displace, field, backward map, remap, mouth, encode).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # quieter MediaPipe / TFLite start-up logs
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SR = 16000
FPS = 25.0
CLIPS = ("librivox_0870", "librivox_0880")  # 7.1 s + 3.0 s of bundled LibriVox speech

# targets
TARGET_XRT = 10.0  # engine >= 10x real time, and end to end (process start to closed file)
TARGET_START_S = 1.0  # process start -> first frame of `animate`
TARGET_ENCODE_SHARE = 0.60  # engine fps >= 60% of the encode-only fps
TARGET_FIRST_FRAME_MS = 150.0  # first streamed frame (lookahead + compute) <= 150 ms
TARGET_RSS_MIB = 1024.0  # peak RSS < 1 GiB
TARGET_RSS_FLAT = 1.25  # peak RSS(long) / peak RSS(short) <= 1.25 counts as flat

METRIC = "{:<34}{:<44}{:<26}{}"  # name, value, target, PASS/MISS


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def line(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
    print(METRIC.format(name, value, target, "" if ok is None else mark(ok)).rstrip())


def mib(kib: float) -> float:
    return kib / 1024.0  # ru_maxrss is in KiB on Linux


# ---------------------------------------------------------------------------------------- inputs
def base_speech() -> np.ndarray:
    """The bundled LibriVox clips back to back: ~10.1 s of real read speech, 16 kHz float32."""
    from talkinghead.assets import speech_path
    from talkinghead.io import load_audio

    return np.concatenate([load_audio(speech_path(name)[0]).samples for name in CLIPS]).astype(np.float32)


def tiled(base: np.ndarray, seconds: float) -> np.ndarray:
    n = int(round(seconds * SR))
    reps = -(-n // len(base))
    return np.tile(base, reps)[:n].copy()


def write_tiled_wav(path: Path, base: np.ndarray, seconds: float) -> None:
    """A 16-bit wav of `base` tiled to `seconds`, written piecewise (never the whole clip in memory)."""
    pcm = (np.clip(base, -1, 1) * 32767).astype("<i2")
    left = int(round(seconds * SR))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        while left > 0:
            piece = pcm[:left]
            w.writeframes(piece.tobytes())
            left -= len(piece)


def make_animator(size: int):
    from talkinghead.assets import portrait
    from talkinghead.config import AnimateConfig, RenderConfig
    from talkinghead.systems.warp.engine import Animator
    from talkinghead.types import Portrait

    return Animator(Portrait(portrait("astronaut"), "astronaut"), AnimateConfig(render=RenderConfig(fps=FPS, size=size)))


def _machine_busy() -> float | None:
    """CPU seconds all processes on this machine have used so far (/proc/stat), None if unknown."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = v[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


_PROBE_DATA = np.random.default_rng(0).random((512, 512)).astype(np.float32)


def host_probe() -> float:
    """CPU ms of one fixed single-threaded workload (interpreted Python and a numpy sort). On a
    virtual machine the host's own load changes how fast a core runs: the same work takes
    different CPU time from one second to the next although this machine is otherwise idle, which
    no setting inside the process can fix. Measured next to each end-to-end run, it tells a slow run
    on a slow host from a slow program."""
    t0 = time.thread_time()
    x = 0
    for i in range(200_000):
        x += i * i
    for _ in range(30):
        np.sort(_PROBE_DATA, axis=1)
    return 1000 * (time.thread_time() - t0)


OTHERS: list[float] = []  # cores used by other processes during each timed block


class CpuClock:
    """Wall time and process CPU time (all threads, x264's included) of a block, and how many cores
    other processes on the machine took meanwhile (a busy machine makes every speed number low)."""

    def __enter__(self):
        self.m0 = _machine_busy()
        self.w0 = time.perf_counter()
        r = resource.getrusage(resource.RUSAGE_SELF)
        self.c0 = r.ru_utime + r.ru_stime
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        r = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu = r.ru_utime + r.ru_stime - self.c0
        m1 = _machine_busy()
        self.others = None if m1 is None or self.m0 is None else max(0.0, (m1 - self.m0 - self.cpu) / self.wall)
        if self.others is not None:
            OTHERS.append(self.others)
        return False

    @property
    def cores(self) -> float:
        return self.cpu / max(self.wall, 1e-9)

    @property
    def note(self) -> str:
        others = "" if self.others is None else f", others {self.others:.2f}"
        return f"(cpu {self.cores:.2f} cores{others})"


# ------------------------------------------------------------------------------ 1. the engine
def bench_engine(animator, speech, tmp: Path, repeats: int) -> dict:
    from talkinghead.api import render_to_file

    n = animator.n_frames(speech)
    runs = []
    for i in range(repeats):
        out = tmp / f"engine_{i}.mp4"
        with CpuClock() as c:
            render_to_file(animator, speech, out)
        runs.append((c.wall, c.cores))
        print(f"  run {i + 1}: {c.wall:6.3f} s  {n / c.wall:7.1f} fps  {speech.duration / c.wall:5.2f}x real-time"
              f"  {c.note}")
        out.unlink()
    wall = statistics.median(w for w, _ in runs)
    return dict(frames=n, wall=wall, fps=n / wall, xrt=speech.duration / wall,
                cores=statistics.median(c for _, c in runs))


# --------------------------------------------------------------- 2. render only, encode only
def bench_render_only(animator, speech, repeats: int) -> tuple[dict, list[np.ndarray]]:
    frames, walls = None, []
    for i in range(repeats):
        with CpuClock() as c:
            got = list(animator.frames(speech))
        walls.append((c.wall, c.cores))
        print(f"  run {i + 1}: {c.wall:6.3f} s  {len(got) / c.wall:7.1f} fps  {c.note}")
        frames = got
    wall = statistics.median(w for w, _ in walls)
    return dict(frames=len(frames), wall=wall, fps=len(frames) / wall,
                cores=statistics.median(c for _, c in walls)), frames


def bench_encode_only(frames: list[np.ndarray], fps: float, speech, tmp: Path, repeats: int) -> dict:
    from talkinghead.io import VideoWriter

    h, w = frames[0].shape[:2]
    walls = []
    for i in range(repeats):
        out = tmp / f"encode_{i}.mp4"
        with CpuClock() as c:
            with VideoWriter(out, fps, (w, h), audio=speech) as writer:
                for f in frames:
                    writer.write(f)
        walls.append((c.wall, c.cores))
        print(f"  run {i + 1}: {c.wall:6.3f} s  {len(frames) / c.wall:7.1f} fps  {c.note}")
        out.unlink()
    wall = statistics.median(w for w, _ in walls)
    return dict(frames=len(frames), wall=wall, fps=len(frames) / wall, cores=statistics.median(c for _, c in walls))


# ------------------------------------------------------------------------ per-stage breakdown
def breakdown(animator, speech, frames: list[np.ndarray], repeats: int) -> dict:
    """ms/frame of each stage, one frame at a time in this process (OpenCV single-threaded, as in the
    engine's file rendering). The renderer's own calls are timed by wrapping its methods on the
    instance (rig.displace, field, backward_map, mouth.draw), so this follows WarpRenderer.render as
    it is; remap = render minus the wrapped parts."""
    import cv2

    from talkinghead.types import SAMPLE_RATE

    # motion: the generator fed 1 s chunks, as Animator.frames does
    step = SAMPLE_RATE
    motion_t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gen = animator.motion(speech.phones)
        motions = []
        for i in range(0, len(speech.samples), step):
            motions += gen.push(speech.samples[i:i + step])
        motions += gen.finish()
        motion_t.append(time.perf_counter() - t0)
    n = len(motions)

    r = animator.renderer
    acc: dict[str, float] = {}
    wrapped = []

    def wrap(obj, attr: str, key: str) -> None:
        fn = getattr(obj, attr, None)
        if fn is None:
            return

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                acc[key] = acc.get(key, 0.0) + time.perf_counter() - t0

        setattr(obj, attr, timed)
        wrapped.append((obj, attr))

    wrap(r.rig, "displace", "displace")
    wrap(r, "field", "field")
    wrap(r, "backward_map", "backward")
    wrap(getattr(r, "mouth", None), "draw", "mouth")
    # OpenCV single-threaded, as while the engine renders a file (Animator.frames): its thread pool
    # would split these small calls and spin between them
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        total = 0.0
        for _ in range(repeats):
            for m in motions:
                t0 = time.perf_counter()
                r.render(m)
                total += time.perf_counter() - t0
    finally:
        cv2.setNumThreads(threads)
        for obj, attr in wrapped:
            delattr(obj, attr)  # back to the class's method
    per = {k: 1000 * v / (n * repeats) for k, v in acc.items()}
    res = dict(motion=1000 * min(motion_t) / n, render=1000 * total / (n * repeats), frames=n)
    for k in ("displace", "field", "backward", "mouth"):
        res[k] = per.get(k, float("nan"))
    res["backward"] -= per.get("field", 0.0)  # backward_map calls field; report its own share
    res["remap"] = res["render"] - sum(per.get(k, 0.0) for k in ("displace", "backward", "mouth"))
    res["cvt"] = 1000 * _time_per(lambda f: cv2.cvtColor(f, cv2.COLOR_RGB2YUV_I420), frames)
    return res


def _time_per(fn, items) -> float:
    t0 = time.perf_counter()
    for x in items:
        fn(x)
    return (time.perf_counter() - t0) / len(items)


# ------------------------------------------------------------------------ 3. streaming latency
def bench_latency(animator, samples: np.ndarray, chunk_ms: float) -> dict:
    """Feed the generator `chunk_ms` chunks as fast as they are processed (no real-time pacing).
    Per chunk that releases frames: compute = push(chunk) + rendering the first frame it released;
    algorithmic = audio in hand at that moment - that frame's time (its pts, k / fps)."""
    from talkinghead.config import LOOKAHEAD

    chunk = int(round(chunk_ms / 1000 * SR))
    fps = animator.fps
    gen = animator.motion(None)
    compute, whole, algo = [], [], []
    pushed = 0
    k = 0  # index of the next frame to come out
    for i in range(0, len(samples), chunk):
        piece = samples[i:i + chunk]
        t0 = time.perf_counter()
        ms = gen.push(piece)
        if ms:
            animator.render(ms[0])
            t1 = time.perf_counter()
            for m in ms[1:]:
                animator.render(m)
            t2 = time.perf_counter()
            compute.append(t1 - t0)
            whole.append(t2 - t0)
        pushed += len(piece)
        if ms:
            algo.append((pushed / SR - k / fps))
        k += len(ms)
    gen.finish()
    compute_ms, algo_ms = 1000 * np.array(compute), 1000 * np.array(algo)
    first_ms = compute_ms + algo_ms  # per chunk: its first frame's time in audio -> that frame out
    algo_r = np.round(algo_ms, 3)
    late = int((algo_r > np.median(algo_r)).sum())
    return dict(
        chunk_ms=1000 * chunk / SR, chunks=len(compute),
        median_ms=float(np.median(compute_ms)), p95_ms=float(np.percentile(compute_ms, 95)),
        max_ms=float(compute_ms.max()),
        chunk_total_median_ms=1000 * float(np.median(whole)), chunk_total_max_ms=1000 * float(np.max(whole)),
        algo_median_ms=float(np.median(algo_ms)), algo_max_ms=float(algo_ms.max()), algo_late=late,
        first_median_ms=float(np.median(first_ms)), first_max_ms=float(first_ms.max()),
        config_lookahead_ms=1000 * LOOKAHEAD, latency_frames=gen.latency_frames,
    )


# ------------------------------------------------------------------------------ 4. peak RSS
def vm_hwm_kib() -> int | None:
    """This process's own peak RSS (VmHWM, KiB; Linux), for cross-checking ru_maxrss."""
    try:
        for ln in Path("/proc/self/status").read_text().splitlines():
            if ln.startswith("VmHWM:"):
                return int(ln.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_child(seconds: float, size: int) -> None:
    """Render `seconds` of tiled speech through api.animate (the `talkinghead animate` path: wav
    file -> load_audio -> Animator -> render_to_file) and print peak RSS as one JSON line."""
    from talkinghead import api
    from talkinghead.assets import portrait_path
    from talkinghead.config import AnimateConfig, RenderConfig

    base = base_speech()
    image = portrait_path("astronaut")
    with tempfile.TemporaryDirectory(prefix="th-bench-rss-") as d:
        wav = Path(d) / "speech.wav"
        write_tiled_wav(wav, base, seconds)
        del base
        ready_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cfg = AnimateConfig(render=RenderConfig(fps=FPS, size=size, max_seconds=max(600.0, seconds + 1)))
        t0 = time.perf_counter()
        out = api.animate(image, wav, Path(d) / "out.mp4", config=cfg)
        wall = time.perf_counter() - t0
        mp4_bytes = out.stat().st_size
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("RSS_CHILD " + json.dumps(dict(seconds=seconds, size=size, peak_kib=peak_kib, ready_kib=ready_kib,
                                         hwm_kib=vm_hwm_kib(), wall=wall, mp4_bytes=mp4_bytes)), flush=True)


def run_rss_child(seconds: float, size: int) -> dict:
    """Run `--rss-child` in a fresh interpreter. Call it while this process is still small: Linux
    carries the parent's peak RSS over a fork/vfork + exec into the child's ru_maxrss."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", repr(float(seconds)), "--size", str(size)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    for ln in p.stdout.splitlines():
        if ln.startswith("RSS_CHILD "):
            return json.loads(ln[len("RSS_CHILD "):])
    sys.stderr.write(p.stdout + p.stderr)
    raise SystemExit(f"--rss-child {seconds} failed with exit code {p.returncode}")


# ------------------------------------------------------------------------------ 0. end to end
def e2e_child(report: str, cli_args: list[str]) -> None:
    """Run the `talkinghead` CLI in this (fresh) process; write to `report` the wall-clock time
    (time.time) of the first encoded frame and the process's CPU time then (all threads; a busy
    machine stretches wall time far more than CPU time). The only instrumentation is on
    VideoWriter.write."""
    from talkinghead.interfaces import cli
    from talkinghead.io import video

    first: list[float] = []
    write = video.VideoWriter.write

    def timed_write(self, frame):
        if not first:
            first.extend((time.time(), time.process_time()))
        return write(self, frame)

    video.VideoWriter.write = timed_write
    try:
        cli.main(cli_args)
    except SystemExit as e:
        Path(report).write_text(json.dumps(dict(first_frame=first[0] if first else None,
                                                first_cpu=first[1] if first else None, code=e.code)))
        raise


PYCACHE = tempfile.TemporaryDirectory(prefix="th-bench-pycache-")


def child_env() -> dict:
    """The environment of the timed `talkinghead` processes: compiled bytecode is cached (in a
    temporary folder, never in the source tree) even where PYTHONDONTWRITEBYTECODE is set, so that
    after one untimed warm-up run every timed run starts as an installed package does (pip compiles
    the .pyc files at install) instead of compiling ~100 source files first."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE.name
    return env


def run_e2e(image: Path, wav: Path, out: Path, size: int) -> dict:
    """`talkinghead animate` (progress bar and summary on, as a user runs it) in a fresh interpreter:
    wall time from just before the process is started to its exit (the file is closed and moved into
    place before exit), and from the same start to its first frame."""
    report = out.with_suffix(".json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--e2e-child", str(report), "--",
           "animate", "--image", str(image), "--audio", str(wav), "-o", str(out), "--size", str(size),
           "--fps", f"{FPS:g}"]
    probe0 = host_probe()
    m0 = _machine_busy()
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
    wall = time.time() - t0
    m1 = _machine_busy()
    probe1 = host_probe()
    r = json.loads(report.read_text()) if report.exists() else {}
    if p.returncode != 0 or not out.exists() or r.get("first_frame") is None:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        raise SystemExit(f"end-to-end `talkinghead animate` failed with exit code {p.returncode}")
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    report.unlink()
    return dict(wall=wall, first=r["first_frame"] - t0, first_cpu=r["first_cpu"], busy=None if m0 is None or m1 is None else (m1 - m0) / wall,
                children_cpu=child.ru_utime + child.ru_stime, probe=(probe0 + probe1) / 2)


def run_help() -> float:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "talkinghead", "--help"], capture_output=True, text=True, env=child_env())
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"`talkinghead --help` failed: {p.stderr[-2000:]}")
    return wall


def bench_e2e(base: np.ndarray, seconds: float, size: int, repeats: int, tmp: Path) -> dict:
    from talkinghead.assets import portrait_path

    wav = tmp / "e2e_speech.wav"
    write_tiled_wav(wav, base, seconds)
    image = portrait_path("astronaut")
    short = tmp / "warmup.wav"
    write_tiled_wav(short, base, 1.0)
    run_e2e(image, short, tmp / "warmup.mp4", size)  # untimed: fills the bytecode cache (child_env)
    print(f"  (timed runs use cached bytecode, as an installed package does; one untimed 1 s warm-up run "
          f"filled the cache{' although PYTHONDONTWRITEBYTECODE is set here' if os.environ.get('PYTHONDONTWRITEBYTECODE') else ''})")
    helps = [run_help() for _ in range(repeats)]
    print(f"  `talkinghead --help`: median {statistics.median(helps):.3f} s over {repeats} runs")
    runs = []
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = child.ru_utime + child.ru_stime  # the children so far (RSS runs, --help)
    for i in range(repeats):
        out = tmp / f"e2e_{i}.mp4"
        r = run_e2e(image, wav, out, size)
        cpu, cpu0 = r["children_cpu"] - cpu0, r["children_cpu"]
        r["cpu"] = cpu
        runs.append(r)
        busy = "" if r["busy"] is None else f", machine {r['busy']:.2f} cores busy"
        print(f"  run {i + 1}: {r['wall']:6.3f} s = {seconds / r['wall']:5.2f}x real-time, first frame at "
              f"{r['first']:.3f} s (process cpu then {r['first_cpu']:.3f} s; in all {cpu:.2f} s{busy}; host probe "
              f"{r['probe']:.0f} ms)", flush=True)
        out.unlink()
    wall = statistics.median(r["wall"] for r in runs)
    probes = [host_probe() for _ in range(5)]
    print(f"  host probe (the same single-threaded work each time; more ms = a slower core): {min(probes):.0f} ms "
          f"at best now, {', '.join(format(r['probe'], '.0f') for r in runs)} ms around the runs above")
    return dict(wall=wall, xrt=seconds / wall, first=statistics.median(r["first"] for r in runs),
                wall_min=min(r["wall"] for r in runs), wall_max=max(r["wall"] for r in runs),
                cpu_min=min(r["cpu"] for r in runs), cpu_max=max(r["cpu"] for r in runs),
                probe_best=min(probes), probe_runs=[r["probe"] for r in runs],
                first_cpu=statistics.median(r["first_cpu"] for r in runs),
                cpu=statistics.median(r["cpu"] for r in runs),
                first_min=min(r["first"] for r in runs), help=statistics.median(helps), wav=wav)


def bench_encode_ceiling(frames: list[np.ndarray], fps: float, wav: Path, tmp: Path, repeats: int) -> dict:
    """Encode-only for the end-to-end clip: as many frames as the clip has (the rendered frames
    cycled) through VideoWriter with the clip's audio as load_audio gives it, from memory."""
    from talkinghead.io import VideoWriter, load_audio

    speech = load_audio(wav)
    n = max(1, int(round(speech.duration * fps)))
    h, w = frames[0].shape[:2]
    walls = []
    for i in range(repeats):
        out = tmp / f"ceiling_{i}.mp4"
        with CpuClock() as c:
            with VideoWriter(out, fps, (w, h), audio=speech) as writer:
                for k in range(n):
                    writer.write(frames[k % len(frames)])
        walls.append(c.wall)
        print(f"  run {i + 1}: {c.wall:6.3f} s  {n / c.wall:7.1f} fps = {speech.duration / c.wall:5.2f}x real-time  "
              f"{c.note}")
        out.unlink()
    wall = statistics.median(walls)
    return dict(frames=n, wall=wall, fps=n / wall, xrt=speech.duration / wall)


# ---------------------------------------------------------------------------------- profiling
def profile_engine(animator, speech, tmp: Path, top: int = 25) -> None:
    import cProfile
    import pstats

    from talkinghead.api import render_to_file

    pr = cProfile.Profile()
    pr.enable()
    render_to_file(animator, speech, tmp / "profile.mp4")
    pr.disable()
    pstats.Stats(pr, stream=sys.stdout).sort_stats("tottime").print_stats(top)


# --------------------------------------------------------------------------------------- main
def machine() -> str:
    cpu = "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def libraries() -> str:
    import av
    import cv2

    from talkinghead.io.video import _X264_PARAMS

    return (f"numpy {np.__version__}, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), "
            f"PyAV {av.__version__} (libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}), "
            f"x264 preset veryfast ({_X264_PARAMS.get('veryfast', 'as is')}) crf 18")


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="speech length for the speed runs (default 10)")
    ap.add_argument("--long-seconds", type=float, default=600.0,
                    help="speech length of the long peak-RSS run (default 600 = 10 min)")
    ap.add_argument("--size", type=int, default=512, help="output side in pixels (default 512)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per speed measurement; the median is reported")
    ap.add_argument("--chunk-ms", type=float, default=40.0, help="streaming chunk length (default 40 ms)")
    ap.add_argument("--quick", action="store_true", help="tiny, fast run that only checks the script works")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of one engine run")
    ap.add_argument("--e2e-seconds", type=float, default=60.0,
                    help="speech length of the end-to-end `talkinghead animate` runs (default 60)")
    ap.add_argument("--rss-child", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    ap.add_argument("--e2e-child", metavar="REPORT", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if "--e2e-child" in argv:  # a fresh process for one timed CLI run: nothing else parsed or imported
        k = argv.index("--e2e-child")
        e2e_child(argv[k + 1], argv[argv.index("--") + 1:])
        return 0
    args = ap.parse_args(argv)

    if args.rss_child is not None:
        rss_child(args.rss_child, args.size)
        return 0
    if args.quick:
        args.seconds, args.long_seconds, args.size, args.repeats, args.e2e_seconds = 2.0, 4.0, 192, 1, 2.0

    t_start = time.perf_counter()
    print("talkinghead CPU engine benchmark (warp engine)")
    print(f"  machine: {machine()}")
    print(f"  load average at start: {load()}")

    # [4] first, while this process is small (its peak RSS would leak into the children's ru_maxrss)
    print("\n[4] peak RSS: the `animate` path (wav -> load_audio -> Animator -> render_to_file) in a fresh "
          "process each, run first")
    print(f"  (this process: {mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss):.0f} MiB peak so far)")
    rss = {}
    for label, secs in (("short", args.seconds), ("long", args.long_seconds)):
        print(f"  {label}: {secs:g} s of audio ({secs / 60:.1f} min) ...", flush=True)
        r = rss[label] = run_rss_child(secs, args.size)
        hwm = f", VmHWM {mib(r['hwm_kib']):.0f} MiB" if r.get("hwm_kib") else ""
        print(f"    peak RSS {mib(r['peak_kib']):.0f} MiB (ru_maxrss{hwm}; {mib(r['ready_kib']):.0f} MiB after "
              f"imports + wav), whole call {r['wall']:.1f} s = {secs / r['wall']:.2f}x real-time "
              f"incl. face analysis and audio decode, mp4 {r['mp4_bytes'] / 1e6:.1f} MB", flush=True)
    short, long = rss["short"], rss["long"]
    ratio = long["peak_kib"] / short["peak_kib"]
    audio_mib = (long["seconds"] - short["seconds"]) * SR * 4 / 2**20
    print(f"  growth long - short: {mib(long['peak_kib'] - short['peak_kib']):+.0f} MiB; the extra audio alone, "
          f"16 kHz float32, is {audio_mib:.0f} MiB per copy")
    if long["wall"] > 240:
        print(f"  note: the long run took {long['wall'] / 60:.1f} min; pass --long-seconds to shorten it")

    print(f"\n[0] end to end: `talkinghead animate` on {args.e2e_seconds:g} s of speech in a fresh process, "
          f"{args.size}x{args.size} @ {FPS:g} fps (median of {args.repeats})")
    e2e_tmp = tempfile.TemporaryDirectory(prefix="th-bench-e2e-")
    e2e = bench_e2e(base_speech(), args.e2e_seconds, args.size, args.repeats, Path(e2e_tmp.name))

    from talkinghead.types import Speech

    print("\n[setup]")
    print(f"  libraries: {libraries()}")
    base = base_speech()
    speech = Speech(tiled(base, args.seconds), source="+".join(CLIPS))
    with CpuClock() as c:
        animator = make_animator(args.size)
    w, h = animator.frame_size
    n = animator.n_frames(speech)
    sx, sy = animator.renderer.stride
    print(f"  portrait: astronaut (bundled), face crop {w}x{h}, {animator.fps:g} fps; warp grid cells {sx} x {sy} px")
    print(f"  speech: {speech.duration:.2f} s = {n} frames ({' + '.join(CLIPS)}"
          f"{', tiled' if args.seconds > len(base) / SR else ''}; no transcript: acoustic mouth, as `animate` without --text)")
    print(f"  setup, once per portrait (face analysis + mesh): {c.wall:.2f} s, not in the timings below")

    with tempfile.TemporaryDirectory(prefix="th-bench-") as d:
        tmp = Path(d)
        from talkinghead.api import render_to_file

        render_to_file(animator, Speech(tiled(base, min(1.0, args.seconds))), tmp / "warmup.mp4")  # warm-up

        print(f"\n[1] engine: motion + render + H.264/AAC encode via api.render_to_file (median of {args.repeats})")
        eng = bench_engine(animator, speech, tmp, args.repeats)

        print(f"\n[2a] render only: list(Animator.frames(speech)), motion + render, no encode (median of {args.repeats})")
        ren, frames = bench_render_only(animator, speech, args.repeats)
        print(f"[2b] encode only: the same {len(frames)} frames from memory through VideoWriter with the audio "
              f"(median of {args.repeats})")
        enc = bench_encode_only(frames, animator.fps, speech, tmp, args.repeats)
        print(f"[0b] encode-only ceiling of the end-to-end clip: {args.e2e_seconds:g} s of frames (the frames above, "
              f"cycled) through VideoWriter with its audio, from memory (median of {args.repeats})")
        ceiling = bench_encode_ceiling(frames, animator.fps, e2e["wav"], tmp, args.repeats)
        e2e_tmp.cleanup()

        print("\n[stages] per-stage breakdown, one frame at a time (ms/frame)")
        bd = breakdown(animator, speech, frames, args.repeats)
        del frames
        print(f"  motion (features + targets + head/blinks)  {bd['motion']:7.3f}")
        print(f"  render (WarpRenderer.render)               {bd['render']:7.3f}")
        print(f"    rig displace                             {bd['displace']:7.3f}")
        print(f"    field (mesh gathers + weighted sum)      {bd['field']:7.3f}")
        print(f"    backward map (inverse + upsample)        {bd['backward']:7.3f}")
        print(f"    remap of the face region + frame copy    {bd['remap']:7.3f}")
        print(f"    mouth interior                           {bd['mouth']:7.3f}")
        print(f"  encode (VideoWriter.write + close)         {1000 / enc['fps']:7.3f}  wall, x264 threaded")
        print(f"    of which RGB -> I420 (cv2.cvtColor)      {bd['cvt']:7.3f}")
        print(f"  engine                                     {1000 / eng['fps']:7.3f}  wall")
        print(f"  serial sum motion + render + encode        {bd['motion'] + bd['render'] + 1000 / enc['fps']:7.3f}")
        cpu_r, cpu_e = 1000 * ren["cores"] / ren["fps"], 1000 * enc["cores"] / enc["fps"]
        ncpu = os.cpu_count() or 1
        bound = (cpu_r + cpu_e) / ncpu
        print(f"  CPU time per frame (core-ms): render-only {cpu_r:.2f}, encode-only {cpu_e:.2f}, engine "
              f"{1000 * eng['cores'] / eng['fps']:.2f}; with all {ncpu} cores busy the engine needs >= {bound:.2f} ms/frame "
              f"(<= {1000 / bound:.0f} fps = {1000 / bound / enc['fps']:.0%} of encode-only)")

        print(f"\n[3] streaming: {args.chunk_ms:g} ms chunks into the motion generator + renderer, unpaced")
        lat = bench_latency(animator, speech.samples, args.chunk_ms)
        print(f"  {lat['chunks']} chunks released frames; compute chunk -> first frame: median {lat['median_ms']:.2f} ms,"
              f" p95 {lat['p95_ms']:.2f} ms, max {lat['max_ms']:.2f} ms")
        print(f"  compute per chunk incl. all its frames: median {lat['chunk_total_median_ms']:.2f} ms, "
              f"max {lat['chunk_total_max_ms']:.2f} ms (real time needs < {lat['chunk_ms']:g} ms)")
        print(f"  algorithmic latency (audio in hand when a chunk's first frame is released - that frame's pts): "
              f"median {lat['algo_median_ms']:.1f} ms, max {lat['algo_max_ms']:.1f} ms "
              f"({lat['algo_late']} of {lat['chunks']} chunks above the median)")
        print(f"    config.LOOKAHEAD {lat['config_lookahead_ms']:.0f} ms; generator latency_frames {lat['latency_frames']}"
              f" (= {1000 * lat['latency_frames'] / animator.fps:.0f} ms of mouth smoothing, inside the lookahead)")
        print(f"  first streamed frame latency (algorithmic + compute, per chunk): median {lat['first_median_ms']:.1f} ms,"
              f" max {lat['first_max_ms']:.1f} ms")

        if args.profile:
            print("\n[profile] cProfile of one engine run, by own time")
            profile_engine(animator, speech, tmp)

    print(f"\n  load average at end: {load()}; benchmark wall time {time.perf_counter() - t_start:.0f} s")
    if OTHERS:
        worst = max(OTHERS)
        print(f"  other processes took up to {worst:.2f} cores during the timed runs"
              + (" -- the machine was busy, speed numbers read low; run again when it is idle" if worst > 0.25 else ""))
    print(f"\n== results: {w}x{h} @ {FPS:g} fps, {args.seconds:g} s of speech ==")
    line("metric", "value", "target")
    line(f"end to end, {args.e2e_seconds:g} s (animate)", f"{e2e['wall']:.2f} s = {e2e['xrt']:.2f}x real-time",
         f">= {TARGET_XRT:g}x real-time", e2e["xrt"] >= TARGET_XRT)
    line("time to first frame (animate)", f"{e2e['first']:.3f} s (best {e2e['first_min']:.3f} s, cpu "
         f"{e2e['first_cpu']:.3f} s)",
         f"<= {TARGET_START_S:g} s", e2e["first"] <= TARGET_START_S)
    line(f"encode-only ceiling, {args.e2e_seconds:g} s", f"{ceiling['wall']:.2f} s = {ceiling['xrt']:.2f}x real-time")
    line("end to end / encode-only ceiling", f"{ceiling['wall'] / e2e['wall']:.2f} "
         f"({100 * ceiling['wall'] / e2e['wall']:.0f}%)")
    line(f"end to end, range of {args.repeats}", f"{e2e['wall_min']:.2f}-{e2e['wall_max']:.2f} s = "
         f"{args.e2e_seconds / e2e['wall_max']:.1f}-{args.e2e_seconds / e2e['wall_min']:.1f}x real-time")
    line(f"end to end CPU, {args.e2e_seconds:g} s", f"{e2e['cpu']:.2f} core-s = {e2e['cpu'] / args.e2e_seconds:.3f} "
         f"core-s per s of speech (wall on {os.cpu_count()} idle cores >= {e2e['cpu'] / (os.cpu_count() or 1):.2f} s)")
    line("end to end CPU, range", f"{e2e['cpu_min']:.2f}-{e2e['cpu_max']:.2f} core-s (host probe "
         f"{min(e2e['probe_runs']):.0f}-{max(e2e['probe_runs']):.0f} ms around the runs, best {e2e['probe_best']:.0f} ms)")
    line("talkinghead --help", f"{e2e['help']:.3f} s")
    line("engine fps (motion+render+encode)", f"{eng['fps']:.1f} fps = {eng['xrt']:.2f}x real-time",
         f">= {TARGET_XRT:g}x real-time", eng["xrt"] >= TARGET_XRT)
    line("render-only fps (no encode)", f"{ren['fps']:.1f} fps ({1000 / ren['fps']:.2f} ms/frame)")
    line("encode-only fps (same frames)", f"{enc['fps']:.1f} fps ({1000 / enc['fps']:.2f} ms/frame)")
    share = eng["fps"] / enc["fps"]
    line("engine fps / encode-only fps", f"{share:.2f} ({100 * share:.0f}%)",
         f">= {100 * TARGET_ENCODE_SHARE:.0f}%", share >= TARGET_ENCODE_SHARE)
    line("chunk -> first frame compute", f"median {lat['median_ms']:.1f} ms, max {lat['max_ms']:.1f} ms")
    line("algorithmic latency (lookahead)", f"median {lat['algo_median_ms']:.0f} ms, max {lat['algo_max_ms']:.0f} ms"
         f" (LOOKAHEAD {lat['config_lookahead_ms']:.0f} ms, {lat['latency_frames']} frames)")
    line("first streamed frame latency", f"median {lat['first_median_ms']:.0f} ms",
         f"<= {TARGET_FIRST_FRAME_MS:g} ms", lat["first_median_ms"] <= TARGET_FIRST_FRAME_MS)
    line("first streamed frame, worst chunk", f"max {lat['first_max_ms']:.0f} ms",
         f"<= {TARGET_FIRST_FRAME_MS:g} ms", lat["first_max_ms"] <= TARGET_FIRST_FRAME_MS)
    line(f"peak RSS, {args.seconds:g} s audio", f"{mib(short['peak_kib']):.0f} MiB",
         "< 1 GiB", mib(short["peak_kib"]) < TARGET_RSS_MIB)
    line(f"peak RSS, {args.long_seconds:g} s audio", f"{mib(long['peak_kib']):.0f} MiB",
         "< 1 GiB", mib(long["peak_kib"]) < TARGET_RSS_MIB)
    line("peak RSS ratio long / short", f"{ratio:.2f} (+{mib(long['peak_kib'] - short['peak_kib']):.0f} MiB)",
         f"flat (<= {TARGET_RSS_FLAT:g})", ratio <= TARGET_RSS_FLAT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
