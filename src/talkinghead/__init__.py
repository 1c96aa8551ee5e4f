"""talkinghead: portrait + speech -> talking-head video.

    import talkinghead
    talkinghead.animate("face.jpg", "speech.wav", "out.mp4")             # a file
    talkinghead.dub("talk.mp4", "new_speech.wav", "dubbed.mp4")          # re-sync a video's lips
    anim = talkinghead.Animator(talkinghead.load_image("face.jpg"))      # a live stream
    for frame in anim.stream(chunks): ...
"""
import os as _os

# Before numpy loads: a multithreaded OpenBLAS stalls the renderer's mesh setup for seconds when the
# cores are busy (measured: 12.8 s lost over 60 renders under load, none with one thread). Our numpy
# work is small per call; torch keeps its own thread pool. A value the user set is left alone.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from importlib import import_module as _import_module  # noqa: E402
from importlib.util import find_spec as _find_spec  # noqa: E402

# Public names, imported on first use (PEP 562) so that `talkinghead --help` or `talkinghead eval`
# do not pay for the renderer, PyAV and OpenCV: name -> the submodule that defines it.
_EXPORTS = {
    "animate": "api", "say": "api", "Animator": "systems.warp.engine",
    "AnimateConfig": "config", "MotionConfig": "config", "RenderConfig": "config",
    "InputError": "errors", "TalkingHeadError": "errors", "load_audio": "io", "load_image": "io",
    "FaceAnalysis": "types", "MotionFrame": "types", "MotionTrack": "types", "PhoneSegment": "types",
    "Portrait": "types", "Speech": "types",
}

__version__ = "0.1.0"
# `dub` is the talkinghead.dub package, which can be called like its function dub.dub(...)
__all__ = [*_EXPORTS, "dub"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(_import_module(f".{_EXPORTS[name]}", __name__), name)
    elif not name.startswith("_") and _find_spec(f"{__name__}.{name}") is not None:
        value = _import_module(f".{name}", __name__)  # `talkinghead.io` without importing it first
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
