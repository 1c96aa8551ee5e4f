"""benchmarks/cpu_engine.py runs end to end (--quick: tiny clip, small frames) and prints every metric.
It checks that the script works, never how fast anything is."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_engine.py"

METRICS = (
    "end to end, 2 s (animate)",
    "time to first frame (animate)",
    "encode-only ceiling, 2 s",
    "end to end / encode-only ceiling",
    "end to end, range of 1",
    "end to end CPU, 2 s",
    "end to end CPU, range",
    "talkinghead --help",
    "engine fps (motion+render+encode)",
    "render-only fps (no encode)",
    "encode-only fps (same frames)",
    "engine fps / encode-only fps",
    "chunk -> first frame compute",
    "algorithmic latency (lookahead)",
    "first streamed frame latency",
    "first streamed frame, worst chunk",
    "peak RSS, 2 s audio",
    "peak RSS, 4 s audio",
    "peak RSS ratio long / short",
)
STAGES = ("motion (", "render (", "rig displace", "field (", "backward map", "remap", "mouth interior", "encode (")


def test_quick_benchmark_runs_and_prints_every_metric():
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    summary = out[out.index("== results:"):]
    rows = {ln[:34].strip(): ln[34:] for ln in summary.splitlines()[2:]}
    for name in METRICS:
        assert name in rows, f"missing metric line {name!r} in:\n{summary}"
        assert any(ch.isdigit() for ch in rows[name]), f"no number on {name!r}: {rows[name]!r}"
    for name in ("end to end, 2 s (animate)", "time to first frame (animate)", "engine fps (motion+render+encode)", "engine fps / encode-only fps", "first streamed frame latency",
                 "first streamed frame, worst chunk", "peak RSS, 2 s audio", "peak RSS, 4 s audio",
                 "peak RSS ratio long / short"):
        assert rows[name].rstrip().endswith(("PASS", "MISS")), rows[name]
    for stage in STAGES:
        assert stage in out, f"missing stage {stage!r} in the breakdown"
    assert "nan" not in summary.lower()
