"""Start-up: a command imports only what it uses. Each case runs in a fresh interpreter and lists the
heavy modules it ended up importing (no timing: speed is measured in benchmarks/cpu_engine.py)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from talkinghead.assets import portrait_path, speech_path

HEAVY = ("scipy.signal", "torch", "matplotlib.pyplot", "sounddevice", "mediapipe", "cv2", "av", "scipy")


def loaded_after(code: str) -> dict[str, bool]:
    """Which HEAVY modules are in sys.modules after running `code` in a fresh interpreter."""
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print("LOADED " + json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))
    """)
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("LOADED "))
    return json.loads(line[len("LOADED "):])


def test_importing_the_package_and_api_loads_no_resampler_model_or_plotting():
    got = loaded_after("import talkinghead, talkinghead.api")
    assert not any(got[m] for m in ("scipy.signal", "torch", "matplotlib.pyplot", "mediapipe")), got


def test_animate_loads_no_resampler_torch_or_plotting(tmp_path):
    """The warp engine's whole `animate` path: MediaPipe runs, but scipy (the mesh is triangulated and
    rasterised with OpenCV; 16 kHz input needs no resampling), torch and MediaPipe's
    matplotlib/sounddevice helpers stay unloaded."""
    wav, _ = speech_path("librivox_0880")
    out = tmp_path / "a.mp4"
    got = loaded_after(f"""
        from talkinghead.interfaces.cli import main
        try:
            main(["animate", "--image", {str(portrait_path("astronaut"))!r}, "--audio", {str(wav)!r},
                  "-o", {str(out)!r}, "--size", "128", "--quiet"])
        except SystemExit as e:
            assert e.code == 0, e.code
    """)
    assert out.exists()
    assert got["mediapipe"] and got["cv2"] and got["av"]  # it did analyse and encode
    assert not any(got[m] for m in ("scipy", "scipy.signal", "torch", "matplotlib.pyplot", "sounddevice")), got


def test_deferred_imports_stand_in_until_used():
    got = loaded_after("""
        import sys
        from talkinghead.utils import deferred_imports

        with deferred_imports("matplotlib.pyplot"):
            import matplotlib.pyplot as plt
            assert "matplotlib.figure" not in sys.modules  # only the stand-in so far
        assert "matplotlib.pyplot" not in sys.modules  # the stand-in is gone after the block
        assert plt.figure.__module__ == "matplotlib.pyplot"  # first use imports the real module
        import matplotlib.pyplot as real
        assert real.figure is plt.figure
    """)
    assert got["matplotlib.pyplot"]


@pytest.mark.parametrize("argv", [["--help"], ["animate", "--help"], ["say", "--help"]])
def test_help_imports_nothing_heavy(argv):
    got = loaded_after(f"""
        from talkinghead.interfaces.cli import main
        try:
            main({argv!r})
        except SystemExit as e:
            assert e.code == 0
    """)
    assert not any(got.values()), {m: v for m, v in got.items() if v}
