"""benchmarks/dub.py runs end to end (--quick: a small, short source) and prints every metric.
It checks that the script works, never how fast anything is."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "dub.py"

METRICS = ("decode-only fps (ceiling)", "encode-only fps (ceiling)", "dub fps (end to end)", "dub x real time",
           "dub fps / encode-only fps", "dub fps / decode-only fps", "track (FaceMesh on the crop)", "retarget",
           "warp + interior", "encode", "peak RSS, short", "peak RSS, long", "peak RSS ratio long / short")


def test_quick_dub_benchmark_runs_and_prints_every_metric():
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = {ln[:38].strip(): ln[38:] for ln in p.stdout.splitlines()}
    for name in METRICS:
        assert name in rows, f"missing metric line {name!r} in:\n{p.stdout}"
        assert any(ch.isdigit() for ch in rows[name]), f"no number on {name!r}: {rows[name]!r}"
    for name in ("dub x real time", "peak RSS ratio long / short"):
        assert rows[name].rstrip().endswith(("PASS", "MISS")), rows[name]
    assert "nan" not in p.stdout.lower()
