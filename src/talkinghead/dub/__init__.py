"""Dubbing: re-sync the lips of a face in an existing video to new speech, on a CPU, streaming.

    import talkinghead
    talkinghead.dub("talk.mp4", "new_speech.wav", "dubbed.mp4", fit="trim")
"""
from .pipeline import FACES, FITS, Dubber, DubOptions, dub
from .source import VideoSource

__all__ = ["FACES", "FITS", "Dubber", "DubOptions", "VideoSource", "dub"]
