"""Reading user media (portrait image, speech audio) and writing the output video."""
from .audio import SUPPORTED_AUDIO_FORMATS, as_speech, load_audio
from .image import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, SUPPORTED_IMAGE_FORMATS, as_portrait, load_image
from .video import VideoWriter, check_audio_bitrate, check_output_path, default_audio_bitrate, encode_frames, probe

__all__ = [
    "MAX_IMAGE_SIDE",
    "MIN_IMAGE_SIDE",
    "SUPPORTED_AUDIO_FORMATS",
    "SUPPORTED_IMAGE_FORMATS",
    "VideoWriter",
    "as_portrait",
    "as_speech",
    "check_audio_bitrate",
    "check_output_path",
    "default_audio_bitrate",
    "encode_frames",
    "load_audio",
    "load_image",
    "probe",
]
