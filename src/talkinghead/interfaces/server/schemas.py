"""What the HTTP API sends and takes, as OpenAPI sees it: the JSON bodies (pydantic) and the two submission
forms. The video form's controls come from their declarations in config.py, so a new control appears here."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ...config import controls
from .errors import CODES

VIDEO_FILES = ("image", "audio")  # the file fields of POST /v1/videos
DUB_FILES = ("video", "audio")  # the file fields of POST /v1/dubs
MAX_TEXT_CHARS = 10_000  # `text` to speak or align


class ErrorDetail(BaseModel):
    """One refusal: a code for programs, the field to blame where one is, a message for people."""

    code: str = Field(description="machine-readable, stable: one of the codes in the API description, "
                                  "e.g. invalid_image, audio_too_long, queue_full")
    message: str = Field(description="what is wrong and how to fix it")
    field: str | None = Field(None, description="the form field (or control) to blame, where one is, "
                                                "e.g. head-motion, image, audio")


class ErrorBody(BaseModel):
    """The body of every error response (and of a stream's error message)."""

    error: ErrorDetail


class JobCreated(BaseModel):
    """POST /v1/videos accepted the job."""

    id: str


class JobStatus(BaseModel):
    """A job as GET /v1/videos/{id} describes it."""

    id: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float = Field(ge=0.0, le=1.0, description="fraction of the frames written")
    error: str | None = Field(None, description="why a failed job failed: what is wrong and how to fix it")
    error_code: str | None = Field(None, description="only when failed, a stable code: no_face, unreadable_media, "
                                                     "unsupported_format, too_long or invalid_input for a problem "
                                                     "with the inputs found while rendering; internal for a fault "
                                                     "of the server")
    error_field: str | None = Field(None, description="only when failed, the input or control its error is "
                                                      "about, where one is (null otherwise), e.g. video")


class Health(BaseModel):
    """GET /v1/health: whether the server takes work and how busy it is."""

    status: str
    workers: int
    queued: int
    running: int
    jobs: int
    streams: int


def error_responses(*statuses: int) -> dict:
    """OpenAPI `responses` entries for these error statuses, each listing the codes it is sent with."""
    out = {}
    for status in statuses:
        codes = sorted(code for code, (s, _) in CODES.items() if s == status)
        out[status] = {"model": ErrorBody, "description": "error codes: " + ", ".join(codes)}
    return out


def control_schema(spec) -> dict:
    """The OpenAPI schema of one control declared in config.py: type, range or choices, default and help."""
    m = spec.meta
    schema: dict = {"type": {"bool": "boolean", "int": "integer", "float": "number"}.get(spec.kind, "string")}
    if m.integer:
        schema["type"] = "integer"
    if m.choices:
        schema["enum"] = list(m.choices)
    if m.range is not None and schema["type"] in ("integer", "number"):
        schema["minimum"] = m.range[0]
        if m.range[1] is not None:
            schema["maximum"] = m.range[1]
    if spec.default is not None and spec.default != ():
        schema["default"] = spec.default
    schema["description"] = m.help + (f" ({m.unit})" if m.unit else "") + (
        "; empty or absent: the engine's own default" if spec.optional else "")
    return schema


def video_form() -> dict:
    """OpenAPI schema of the POST /v1/videos form: the files, the speech, the engine and every client control."""
    from ...systems import engine_names

    props: dict = {
        "image": {"type": "string", "format": "binary", "description": "portrait photo: jpg, png, webp, bmp or tiff"},
        "audio": {"type": "string", "format": "binary",
                  "description": "speech: wav, mp3, flac, ogg/opus, m4a/aac, or a video with sound"},
        "text": {"type": "string", "maxLength": MAX_TEXT_CHARS,
                 "description": "without audio: words to speak (espeak-ng); with audio: its transcript (English)"},
        "voice": {"type": "string", "default": "en-us", "description": "espeak-ng voice for `text`, e.g. en-us, de"},
        "engine": {"type": "string", "enum": engine_names(), "default": "warp"},
    }
    for spec in controls():
        if spec.meta.client:
            props[spec.flag] = control_schema(spec)
    return {"type": "object", "properties": props, "required": ["image"], "additionalProperties": False}


def dub_form() -> dict:
    """OpenAPI schema of the POST /v1/dubs form; its fields are the only ones a dubbing submission may send."""
    from ...dub import FACES, FITS
    from ...dub.pipeline import MIX_RANGE

    return {"type": "object", "required": list(DUB_FILES), "additionalProperties": False, "properties": {
        "video": {"type": "string", "format": "binary", "description": "the video to dub (mp4, mov, mkv, webm, ...)"},
        "audio": {"type": "string", "format": "binary", "description": "the new speech: wav, mp3, flac, ogg, m4a"},
        "text": {"type": "string", "maxLength": MAX_TEXT_CHARS, "description": "the transcript of `audio` (English)"},
        "fit": {"type": "string", "enum": list(FITS), "default": "pingpong",
                "description": "speech longer than the video: play it back and forth, loop it, hold the last "
                               "frame; trim: stop at whichever ends first"},
        "face": {"type": "string", "enum": list(FACES), "default": "largest",
                 "description": "which face to dub: the largest, or the one whose lips move most"},
        "face-index": {"type": "integer", "minimum": 0, "description": "dub the N-th face by size instead "
                                                                     "(0 = largest)"},
        "keep-original-audio": {"type": "number", "minimum": MIX_RANGE[0], "maximum": MIX_RANGE[1],
                                "description": "mix the video's own sound this many dB under the speech"},
        "mouth-scale": {"type": "number", "minimum": 0, "maximum": 2, "default": 1.0,
                        "description": "mouth movement: 0 = none, 1 = natural, 2 = exaggerated"},
        "max-seconds": {"type": "number", "description": "refuse media longer than this (at most the server's limit)"},
    }}
