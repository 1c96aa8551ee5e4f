"""talkinghead: portrait + speech -> talking-head video.

    import talkinghead
    talkinghead.animate("face.jpg", "speech.wav", "out.mp4")             # a file
    anim = talkinghead.Animator(talkinghead.load_image("face.jpg"))      # a live stream
    for frame in anim.stream(chunks): ...
"""
import os as _os

# Before numpy loads: a multithreaded OpenBLAS stalls the renderer's mesh setup for seconds when the
# cores are busy (measured: 12.8 s lost over 60 renders under load, none with one thread). Our numpy
# work is small per call; torch keeps its own thread pool. A value the user set is left alone.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .api import animate, say  # noqa: E402
from .config import AnimateConfig, MotionConfig, RenderConfig  # noqa: E402
from .errors import InputError, TalkingHeadError  # noqa: E402
from .io import load_audio, load_image  # noqa: E402
from .pipelines import Animator  # noqa: E402
from .types import FaceAnalysis, MotionFrame, MotionTrack, PhoneSegment, Portrait, Speech  # noqa: E402

__version__ = "0.1.0"
__all__ = ["animate", "say", "Animator", "AnimateConfig", "MotionConfig", "RenderConfig", "InputError",
           "TalkingHeadError", "load_audio", "load_image", "FaceAnalysis", "MotionFrame", "MotionTrack",
           "PhoneSegment", "Portrait", "Speech"]
