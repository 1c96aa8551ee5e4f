"""Dubbing: re-sync the lips of a face in an existing video to new speech, on a CPU, streaming.

    import talkinghead
    talkinghead.dub("talk.mp4", "new_speech.wav", "dubbed.mp4", fit="trim")
"""
import sys as _sys
import types as _types

from .pipeline import FACES, FITS, Dubber, DubOptions, dub
from .source import VideoSource

__all__ = ["FACES", "FITS", "Dubber", "DubOptions", "VideoSource", "dub"]


class _CallableModule(_types.ModuleType):
    """`talkinghead.dub` is both this package and the function: importing the package replaces the
    parent's attribute with the module, so the module itself must answer a call."""

    def __call__(self, *args, **kwargs):
        return dub(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
