"""talkinghead: portrait + speech -> talking-head video.

    import talkinghead
    talkinghead.animate("face.jpg", "speech.wav", "out.mp4")             # a file
    anim = talkinghead.Animator(talkinghead.load_image("face.jpg"))      # a live stream
    for frame in anim.stream(chunks): ...
"""
from .api import animate, say
from .config import AnimateConfig, MotionConfig, RenderConfig
from .errors import InputError, TalkingHeadError
from .io import load_audio, load_image
from .pipelines import Animator
from .types import FaceAnalysis, MotionFrame, MotionTrack, PhoneSegment, Portrait, Speech

__version__ = "0.1.0"
__all__ = ["animate", "say", "Animator", "AnimateConfig", "MotionConfig", "RenderConfig", "InputError",
           "TalkingHeadError", "load_audio", "load_image", "FaceAnalysis", "MotionFrame", "MotionTrack",
           "PhoneSegment", "Portrait", "Speech"]
