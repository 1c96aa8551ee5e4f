"""`talkinghead serve`: the HTTP API (FastAPI). Portrait + speech in, talking-head mp4 out; live streaming.

Routes (all under /v1; with a token set, each needs `Authorization: Bearer TOKEN`, else 401):

- `POST /v1/videos` (multipart/form-data): file `image`, and file `audio` or form field `text` (+ `voice`,
  an espeak-ng voice, default en-us; with `audio`, `text` is its transcript). Controls are form fields named
  like the CLI options (`head-motion`, `blink-rate`, `gaze`, `mouth-scale`, `smile`, `brows`, `lips-only`,
  `seed`, `fps`, `size`, `crop`, `face-index`, `max-seconds`) plus `engine` (default warp). Everything is
  checked before the job is queued: 202 `{"id": ...}`, or an error.
- `GET /v1/videos/{id}` -> `{"id", "status": queued|running|done|failed|cancelled, "progress": 0..1, "error"}`.
- `GET /v1/videos/{id}/file` -> the mp4 (409 until done).
- `DELETE /v1/videos/{id}`: cancels a queued job (200) or asks a running one to stop between frames (202);
  removes a finished one and its files (204).
- `GET /v1/health` -> queue, job and stream counts.
- `WS /v1/stream`: live frames as audio arrives (the warp engine), protocol below.

Errors all have one body, `{"error": {"code": "...", "message": "..."}}`, where `message` is what the CLI
would print (what is wrong + "how to fix"): 400 malformed body, 401 no/bad token, 404 unknown job, 408 upload
too slow, 409 not done yet, 413 upload too large (counted while it streams in), 415 not multipart,
422 bad image/audio/text/option or audio too long, 429 queue full, 503 shutting down.

Security: clients never name a path. Uploads are written under server-made names in a private temp folder
(mode 0700) that is deleted on shutdown; `checkpoint-dir`, `face-embedding` and `device` are the operator's
(set at startup) and refused from clients; text is never read as a file name.

Stream protocol (`WS /v1/stream`):

1. The client sends ONE message with the portrait: binary (the image file's bytes), or text JSON
   `{"image": "<base64 of the image file>", "head-motion": 0.5, "size": 256, ...}` (controls named like the CLI
   options). The server answers `{"fps": 25.0, "width": 512, "height": 512, "sample_rate": 16000,
   "audio": "pcm_s16le", "video": "jpeg", "max_seconds": ...}`.
2. The client sends audio as binary messages: 16 kHz mono PCM, int16 little-endian, any chunk size
   (~100 ms is a good size). The server sends each frame as one binary message (a JPEG) as soon as the
   audio up to that frame + 120 ms lookahead is in. At most ~1 s of audio is buffered ahead of rendering;
   a client that sends faster is slowed down (the server stops reading until rendering catches up).
3. The client sends the text message `{"end": true}`; the server sends the remaining frames, then
   `{"end": true, "frames": N}`, and closes with 1000.

On an error the server sends `{"error": {"code", "message"}}` and closes: 1003 unexpected message,
1007 bad image/options, 1008 limits (session longer than max_seconds, idle too long), 1009 portrait image over
the upload size limit, 1011 internal error,
1013 too many streams (try again later). A client that disconnects frees everything at once.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from fastapi import Depends, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..config import AnimateConfig, config_from_options, controls
from ..errors import InputError, TooLongError
from ..types import SAMPLE_RATE
from .jobs import DubRequest, JobService, RenderRequest, ServiceError, relabel
from .settings import Settings, make_settings

log = logging.getLogger("talkinghead.serve")

FILE_FIELDS = ("image", "audio")

MAX_FIELDS = 64  # form fields per submission
MAX_FIELD_BYTES = 64 * 1024  # one non-file form field
MAX_TEXT_CHARS = 10_000  # `text` to speak or align
UPLOAD_SECONDS = 120.0  # s, a whole upload must arrive within this
HELLO_SECONDS = 30.0  # s, a stream's first message (the portrait) must arrive within this
STREAM_IDLE_SECONDS = 30.0  # s without any message ends a stream
STREAM_AHEAD_SECONDS = 1.0  # s of audio buffered ahead of rendering, at most
STREAM_PIECE = SAMPLE_RATE // 10  # samples handed to the renderer at once (100 ms)
HALT_SECONDS = 5.0  # s, how long a stopped stream waits for its render thread before closing anyway
JPEG_QUALITY = 85
FILE_CHUNK = 256 * 1024  # bytes per read when sending an mp4


class ErrorDetail(BaseModel):
    """One refusal: a code for programs, a message for people."""

    code: str = Field(description="machine-readable, e.g. invalid_image, queue_full, upload_too_large")
    message: str = Field(description="what is wrong and how to fix it (the CLI's message)")


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
    error: str | None = Field(None, description="why a failed job failed (the CLI's message)")


class Health(BaseModel):
    """GET /v1/health: whether the server takes work and how busy it is."""

    status: str
    workers: int
    queued: int
    running: int
    jobs: int
    streams: int


def error_body(code: str, message: str) -> dict:
    """The one error body every route and the stream use."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSONResponse with the one error body."""
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def _errors(*statuses: int) -> dict:
    """OpenAPI `responses` entries for these error statuses."""
    return {s: {"model": ErrorBody} for s in statuses}


def _input_error(status: int, code: str, e: InputError) -> ServiceError:
    """A ServiceError carrying an InputError's message (what is wrong + how to fix), as the CLI prints it."""
    return ServiceError(status, code, str(e))


# ------------------------------------------------------------------------------------------ uploads
@dataclass
class Upload:
    """A parsed submission: form fields, and the file fields saved on disk under server-made names."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    filenames: dict[str, str] = field(default_factory=dict)  # the names the client gave its files


def _client_filename(raw: str | None, default: str) -> str:
    """A client's file name fit for messages (base name, printable, short); never used on disk."""
    name = re.split(r"[\\/]", raw or "")[-1]
    name = "".join(c for c in name if c.isprintable())[:100].strip()
    return name or default


def _safe_suffix(filename: str) -> str:
    """The client's extension when it is plain (.png, .mp3): it helps decoders and hints, never paths."""
    suffix = Path(filename).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""


class _FormReader:
    """python-multipart callbacks: file fields go straight to disk, other fields are kept (size-capped)."""

    def __init__(self, folder: Path, file_fields: tuple[str, ...] = FILE_FIELDS):
        self.folder = folder
        self.file_fields = file_fields
        self.upload = Upload()
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._name: str | None = None
        self._file = None
        self._data = bytearray()

    def callbacks(self) -> dict:
        """The callback table python-multipart calls while it parses."""
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_end": self.on_end}

    def on_part_begin(self) -> None:
        """A new part starts: forget the previous one's headers."""
        self._headers, self._name, self._file, self._data = {}, None, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        """Part of a header name."""
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        """Part of a header value."""
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        """A header is complete."""
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        """The part's headers are in: open its file (image/audio) or start collecting its value."""
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise ServiceError(400, "bad_request", "a multipart part has no name\n"
                               "  how to fix: send a multipart/form-data body with named fields")
        name = options[b"name"].decode("utf-8", "replace")
        up = self.upload
        if name in up.fields or name in up.files:
            raise ServiceError(422, "invalid_option", f"field {name!r} was sent twice\n  how to fix: send it once")
        if name in self.file_fields:
            client = _client_filename(options.get(b"filename", b"").decode("utf-8", "replace"), f"the uploaded {name}")
            path = self.folder / f"{name}{_safe_suffix(client)}"
            self._file = open(path, "xb")  # noqa: SIM115 - closed in on_part_end or close()
            up.files[name], up.filenames[name] = path, client
        elif b"filename" in options:
            raise ServiceError(422, "invalid_option", f"unexpected file field {name!r}\n"
                               f"  how to fix: send files only as {' and '.join(f'`{f}`' for f in self.file_fields)}")
        elif len(up.fields) >= MAX_FIELDS:
            raise ServiceError(422, "invalid_option", f"more than {MAX_FIELDS} form fields\n"
                               "  how to fix: send only image, audio or text, voice, engine and the controls")
        self._name = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        """Part of a part's body: to its file, or to its (size-capped) value."""
        if self._file is not None:
            self._file.write(data[start:end])  # small writes to the page cache; no event-loop stall worth a thread
            return
        self._data += data[start:end]
        if len(self._data) > MAX_FIELD_BYTES:
            raise ServiceError(413, "field_too_large", f"form field {self._name!r} is larger than "
                               f"{MAX_FIELD_BYTES // 1024} KB\n  how to fix: send files as `image` / `audio` parts")

    def on_part_end(self) -> None:
        """A part is complete: close its file, or keep its value as UTF-8 text."""
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._name is not None:
            try:
                self.upload.fields[self._name] = self._data.decode("utf-8")
            except UnicodeDecodeError:
                raise ServiceError(422, "invalid_option", f"form field {self._name!r} is not UTF-8 text\n"
                                   "  how to fix: send text fields as UTF-8") from None

    def on_end(self) -> None:
        """The closing boundary was seen."""
        self.ended = True

    def close(self) -> None:
        """Close a file left open by an interrupted upload."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _too_large(limit: int) -> ServiceError:
    """413: the request body is over the upload limit."""
    return ServiceError(413, "upload_too_large", f"the upload is larger than this server's limit of "
                        f"{limit / 2**20:.3g} MB\n  how to fix: send a smaller image or shorter/compressed audio")


def check_upload_headers(request: Request, limit: int) -> bytes:
    """The multipart boundary, once the headers say the body is a form of at most `limit` bytes
    (415 / 400 / 413 before a byte of the body is read)."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data":
        raise ServiceError(415, "unsupported_media_type", "the body must be multipart/form-data\n"
                           "  how to fix: send the files as a form, e.g. curl -F image=@face.jpg -F audio=@speech.wav")
    if not params.get(b"boundary"):
        raise ServiceError(400, "bad_request", "the multipart body has no boundary\n"
                           "  how to fix: let your HTTP client build the multipart body")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    return params[b"boundary"]


async def read_upload(request: Request, boundary: bytes, folder: Path, limit: int,
                      file_fields: tuple[str, ...] = FILE_FIELDS) -> Upload:
    """Stream a multipart body into `folder`, refusing it (413) as soon as more than `limit` bytes came in."""
    reader = _FormReader(folder, file_fields)
    parser = MultipartParser(boundary, reader.callbacks())
    received = 0
    try:
        async with asyncio.timeout(UPLOAD_SECONDS):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise _too_large(limit)
                parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise ServiceError(400, "bad_request", "the multipart body is malformed\n"
                           "  how to fix: let your HTTP client build the multipart body") from None
    except TimeoutError:
        raise ServiceError(408, "upload_timeout", f"the upload took longer than {UPLOAD_SECONDS:g} s\n"
                           "  how to fix: send smaller files or use a faster connection") from None
    except ClientDisconnect:
        raise ServiceError(400, "bad_request", "the client went away during the upload\n"
                           "  how to fix: send the whole body") from None
    finally:
        reader.close()
    if not reader.ended:
        raise ServiceError(400, "bad_request", "the multipart body ends early\n"
                           "  how to fix: send the whole body, ending with the closing boundary")
    return reader.upload


# ------------------------------------------------------------------------------------------ validation
def client_config(options: dict, settings: Settings, engine: str) -> AnimateConfig:
    """An AnimateConfig from a client's controls (named like the CLI options), with the operator's
    engine settings filled in; ServiceError 422 for anything wrong or not the client's to set."""
    from ..systems import engine_names

    operator_only = {spec.flag for spec in controls() if not spec.meta.client}  # paths and devices
    for name in options:
        key = name.replace("_", "-")
        if key in operator_only:
            raise ServiceError(422, "option_not_allowed", f"{key!r} is set by the server's operator, not per request\n"
                               f"  how to fix: leave {key!r} out")
    if engine not in engine_names():
        raise ServiceError(422, "invalid_option", f"unknown engine {engine!r}\n"
                           f"  how to fix: choose one of: {', '.join(engine_names())}")
    if engine != "warp" and not settings.checkpoint_dir:
        raise ServiceError(422, "engine_unavailable", f"this server has no checkpoints for --engine {engine}\n"
                           "  how to fix: use engine=warp, or ask the operator to start it with --checkpoint-dir")
    try:
        config = config_from_options(options)
    except InputError as e:
        raise _input_error(422, "invalid_option", e) from None
    given = any(n.replace("_", "-") == "max-seconds" for n in options)
    cap = settings.max_audio_seconds
    config.render.max_seconds = min(config.render.max_seconds, cap) if given else cap
    from ..systems import SYSTEMS, check_controls

    try:  # a control the engine cannot honour is the client's mistake, found before the job is queued
        check_controls(SYSTEMS[engine], config)
    except InputError as e:
        raise _input_error(422, "invalid_option", e) from None
    if SYSTEMS[engine].weights != "none":  # the operator's weights, for the engines that run from them
        config.diffusion.checkpoint_dir = settings.checkpoint_dir
        config.diffusion.face_embedding = settings.face_embedding
    return config


def _too_long(what: str, cap: float) -> ServiceError:
    """422: speech over this server's audio limit."""
    return ServiceError(422, "audio_too_long", f"{what} is longer than this server's limit of {cap:g} s\n"
                        f"  how to fix: send at most {cap:g} s of speech")


def check_speech(request: RenderRequest, settings: Settings) -> None:
    """Decode the audio (or speak the text) once, as the render will: 422 for bad or too-long speech."""
    limit = request.config.render.max_seconds
    server_limit = limit >= settings.max_audio_seconds  # else the client's own, smaller max-seconds
    if request.audio is None:
        from ..audio.tts import synthesize

        try:
            speech = synthesize(request.text, voice=request.voice)
        except InputError as e:
            raise _input_error(422, "invalid_text", e) from None
        if speech.duration > limit:
            if server_limit:
                raise _too_long(f"the speech ({speech.duration:.1f} s)", limit)
            raise ServiceError(422, "audio_too_long", str(InputError(
                f"the speech is {speech.duration:.1f} s long, more than --max-seconds {limit:g}",
                "shorten the text or raise --max-seconds")))
        return
    from ..io import load_audio

    try:
        load_audio(request.audio, max_seconds=limit)
    except InputError as e:
        if not isinstance(e, TooLongError):
            raise _input_error(422, "invalid_audio", relabel(e, request.labels)) from None
        if server_limit:
            raise _too_long(f"the audio {request.labels.get(str(request.audio), '')}".rstrip(), limit) from None
        raise _input_error(422, "audio_too_long", relabel(e, request.labels)) from None


def validate_submission(upload: Upload, settings: Settings) -> RenderRequest:
    """Everything a render needs, checked now so that a bad request fails at submit time (422):
    options, the image (decoded, a face found at the output geometry), the speech (decoded or spoken)."""
    from ..face import prepare
    from ..io import load_image

    options = dict(upload.fields)
    engine = options.pop("engine", "warp").strip() or "warp"
    text = options.pop("text", None)
    voice = options.pop("voice", "en-us").strip() or "en-us"
    config = client_config(options, settings, engine)
    if "image" not in upload.files:
        raise ServiceError(422, "missing_image", "no `image` file in the form\n"
                           "  how to fix: send the portrait as the file field `image`")
    audio = upload.files.get("audio")
    if text is not None:
        if len(text) > MAX_TEXT_CHARS:
            raise ServiceError(422, "invalid_text", f"`text` is longer than {MAX_TEXT_CHARS} characters\n"
                               "  how to fix: split it into several videos")
        text = " ".join(text.split())
        if not text:
            raise ServiceError(422, "invalid_text", "`text` is empty\n  how to fix: give the words to speak "
                               "(or, with audio, the words spoken), or leave `text` out")
    if audio is None and text is None:
        raise ServiceError(422, "missing_audio", "no `audio` file and no `text`\n"
                           "  how to fix: send speech as the file field `audio`, or words to speak as `text`")
    labels = {str(upload.files[k]): upload.filenames[k] for k in upload.files}
    request = RenderRequest(engine, config, upload.files["image"], audio, text, voice, labels)
    try:
        portrait = load_image(request.image)
        r = config.render
        prepare(portrait, r.size, r.crop if engine == "warp" else "face", r.face_index, warn=False)
    except InputError as e:
        raise _input_error(422, "invalid_image", relabel(e, labels)) from None
    check_speech(request, settings)
    return request


# ------------------------------------------------------------------------------------------ dubbing
DUB_FILE_FIELDS = ("video", "audio")
DUB_FIELDS = ("fit", "face", "face-index", "keep-original-audio", "mouth-scale", "max-seconds", "text")


def _dub_schema() -> dict:
    """OpenAPI schema of the POST /v1/dubs form."""
    from ..dub import FACES, FITS

    return {"type": "object", "required": ["video", "audio"], "additionalProperties": False, "properties": {
        "video": {"type": "string", "format": "binary", "description": "the video to dub (mp4, mov, mkv, webm, ...)"},
        "audio": {"type": "string", "format": "binary", "description": "the new speech: wav, mp3, flac, ogg, m4a"},
        "text": {"type": "string", "maxLength": MAX_TEXT_CHARS, "description": "the transcript of `audio` (English)"},
        "fit": {"type": "string", "enum": list(FITS), "default": "pingpong", "description": "as the CLI's --fit"},
        "face": {"type": "string", "enum": list(FACES), "default": "largest", "description": "as the CLI's --face"},
        "face-index": {"type": "integer", "description": "as the CLI's --face-index"},
        "keep-original-audio": {"type": "number", "description": "as the CLI's --keep-original-audio (dB)"},
        "mouth-scale": {"type": "number", "default": 1.0, "description": "as the CLI's --mouth-scale"},
        "max-seconds": {"type": "number", "description": "as the CLI's --max-seconds (at most the server's limit)"},
    }}


def validate_dub(upload: Upload, settings: Settings) -> DubRequest:
    """A dubbing submission checked now (422 for anything wrong): options, the video (decoded, within the
    server's length limit) and the speech. Whether a face is in the video is known only once it is tracked."""
    from ..dub import DubOptions, VideoSource
    from ..io import load_audio

    fields_ = {k.replace("_", "-"): v for k, v in upload.fields.items()}
    unknown = sorted(set(fields_) - set(DUB_FIELDS))
    if unknown:
        raise ServiceError(422, "invalid_option", f"unknown option(s) {', '.join(unknown)}\n"
                           f"  how to fix: use only {', '.join(DUB_FIELDS)}")
    for name in ("video", "audio"):
        if name not in upload.files:
            raise ServiceError(422, f"missing_{name}", f"no `{name}` file in the form\n"
                               f"  how to fix: send the {'video to dub' if name == 'video' else 'new speech'} "
                               f"as the file field `{name}`")
    text = fields_.pop("text", None)
    if text is not None:
        text = " ".join(text.split())[:MAX_TEXT_CHARS] or None

    def number(name, kind):
        v = fields_.get(name)
        if v is None or str(v).strip() == "":
            return None
        try:
            x = float(v)
        except ValueError:
            raise ServiceError(422, "invalid_option", f"{name} needs a number, got {v!r}\n"
                               f"  how to fix: e.g. {name}=1") from None
        if kind is int:
            if not x.is_integer():
                raise ServiceError(422, "invalid_option", f"{name} needs a whole number, got {v!r}\n"
                                   f"  how to fix: e.g. {name}=0")
            return int(x)
        return x

    cap = settings.max_audio_seconds
    asked = number("max-seconds", float)
    mouth = number("mouth-scale", float)
    options = DubOptions(fit=fields_.get("fit", "pingpong").strip() or "pingpong",
                         face=fields_.get("face", "largest").strip() or "largest",
                         face_index=number("face-index", int), keep_original_audio=number("keep-original-audio", float),
                         max_seconds=cap if asked is None else min(asked, cap),
                         mouth_scale=1.0 if mouth is None else mouth)
    labels = {str(upload.files[k]): upload.filenames[k] for k in upload.files}
    try:
        options.validate()
    except InputError as e:
        raise _input_error(422, "invalid_option", e) from None
    video, audio = upload.files["video"], upload.files["audio"]
    try:
        VideoSource(video, options.max_seconds)
    except InputError as e:
        code = "video_too_long" if isinstance(e, TooLongError) else "invalid_video"
        raise _input_error(422, code, relabel(e, labels)) from None
    except (ValueError, TypeError, AttributeError, OSError):
        raise ServiceError(422, "invalid_video", f"cannot read the video {upload.filenames.get('video', '')}\n"
                           "  how to fix: send a complete video file (mp4, mov, mkv, webm)") from None
    try:
        load_audio(audio, max_seconds=options.max_seconds)
    except InputError as e:
        code = "audio_too_long" if isinstance(e, TooLongError) else "invalid_audio"
        raise _input_error(422, code, relabel(e, labels)) from None
    return DubRequest(video, audio, text, options, labels)


# ------------------------------------------------------------------------------------------ streaming
class StreamSlots:
    """Counts live streams, refuses more than `limit`, and stops them all on shutdown."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0  # live streams
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._sessions: set[StreamSession] = set()

    def acquire(self, session: "StreamSession") -> bool:
        """Take a slot for `session`; False when all are taken or the server is stopping."""
        with self._lock:
            if self.stopping.is_set() or self.active >= self.limit:
                return False
            self.active += 1
            self._sessions.add(session)
            return True

    def release(self, session: "StreamSession") -> None:
        """Give `session`'s slot back (idempotent)."""
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)
                self.active -= 1

    def stop_all(self) -> None:
        """Server shutdown: every render thread stops at its next frame."""
        self.stopping.set()
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            s.halt()


class FeedClosed(Exception):
    """The stream ended abnormally (disconnect, limit, shutdown): the render thread stops."""


class AudioFeed:
    """Audio pieces from the socket to the render thread, never more than `limit` samples waiting.
    Iterating it (in the render thread) blocks until audio comes, ends after `end()`, raises after `close()`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.pending = 0
        self._pieces: deque[np.ndarray] = deque()
        self._cond = threading.Condition()
        self._state = "open"  # open | ended | closed

    def room(self, n: int) -> bool:
        """Whether `n` more samples fit (an empty feed takes any piece)."""
        return self.pending == 0 or self.pending + n <= self.limit

    def put(self, samples: np.ndarray) -> None:
        """Queue a piece of audio for the renderer (the reader checked `room` first)."""
        with self._cond:
            self._pieces.append(samples)
            self.pending += len(samples)
            self._cond.notify()

    def end(self) -> None:
        """No more audio: the renderer finishes the tail and stops."""
        with self._cond:
            if self._state == "open":
                self._state = "ended"
            self._cond.notify()

    def close(self) -> None:
        """Abort: drop what is queued; the renderer stops with FeedClosed."""
        with self._cond:
            self._state = "closed"
            self._pieces.clear()
            self.pending = 0
            self._cond.notify()

    def __iter__(self):
        """The render thread's audio chunks, as they come."""
        while True:
            with self._cond:
                while not self._pieces and self._state == "open":
                    self._cond.wait()
                if self._state == "closed":
                    raise FeedClosed
                if not self._pieces:
                    return
                piece = self._pieces.popleft()
                self.pending -= len(piece)
            yield piece


def encode_jpeg(frame: np.ndarray) -> bytes:
    """RGB uint8 frame -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def stream_animator(image: bytes, options: dict, settings: Settings, scratch: Path):
    """A warp Animator for a stream's portrait (bytes) and controls; ServiceError 422 when either is bad."""
    from ..io import load_image
    from ..pipelines import Animator

    options = dict(options)
    engine = str(options.pop("engine", "warp"))
    if engine != "warp":
        raise ServiceError(422, "invalid_option", f"streaming uses the warp engine, not {engine!r}\n"
                           "  how to fix: leave `engine` out")
    config = client_config(options, settings, "warp")
    path = scratch / f"stream-{secrets.token_hex(8)}.image"
    try:
        with open(path, "xb") as f:
            f.write(image)
        portrait = load_image(path)
        return Animator(portrait, config, warn=False)
    except InputError as e:
        raise _input_error(422, "invalid_image", relabel(e, {str(path): "the image"})) from None
    finally:
        path.unlink(missing_ok=True)


_TIMEOUT = object()


class StreamSession:
    """One /v1/stream connection: reads the portrait, then audio; a thread renders and sends frames."""

    def __init__(self, ws: WebSocket, settings: Settings, slots: StreamSlots, scratch: Path):
        self.ws = ws
        self.settings = settings
        self.slots = slots
        self.scratch = scratch
        self.loop = asyncio.get_running_loop()
        self.feed = AudioFeed(int(STREAM_AHEAD_SECONDS * SAMPLE_RATE))
        self.stop = threading.Event()
        self.done = asyncio.Event()
        self.thread: threading.Thread | None = None
        self.frames = 0
        self.failed = False

    def halt(self) -> None:
        """Stop rendering now (thread-safe): the render thread ends at its next frame or audio wait."""
        self.stop.set()
        self.feed.close()

    async def run(self) -> None:
        """The whole session; returns when the stream is over (the caller frees the slot)."""
        started = time.monotonic()
        hello = await self._receive(HELLO_SECONDS)
        if hello is None:
            return
        if hello is _TIMEOUT:
            return await self._fail(1008, "idle", f"no portrait within {HELLO_SECONDS:g} s\n"
                                    "  how to fix: send the image as the first message")
        try:
            image, options = self._parse_hello(hello)
            animator = await run_in_threadpool(stream_animator, image, options, self.settings, self.scratch)
        except ServiceError as e:
            return await self._fail(1009 if e.status == 413 else 1007, e.code, e.message)
        w, h = animator.frame_size
        await self.ws.send_json({"fps": animator.fps, "width": w, "height": h, "sample_rate": SAMPLE_RATE,
                                 "audio": "pcm_s16le", "video": "jpeg",
                                 "max_seconds": self.settings.max_stream_seconds})
        self.thread = threading.Thread(target=self._render, args=(animator,), daemon=True,
                                       name=f"talkinghead-stream-{id(self):x}")
        self.thread.start()
        outcome = await self._read_audio(started)
        if outcome == "gone":
            return
        if outcome == "end":  # the tail frames go out first (within the session's time)
            remaining = started + self.settings.max_stream_seconds - time.monotonic()
            if not await self._finished(max(remaining, 0.0)):
                outcome = "time_limit"
            elif self.failed:
                outcome = "failed"
            else:
                await self.ws.send_json({"end": True, "frames": self.frames})
                return await self.ws.close(1000)
        self.halt()
        await self._finished(HALT_SECONDS)
        code, name, message = {
            "time_limit": (1008, "stream_too_long", f"the stream reached this server's limit of "
                           f"{self.settings.max_stream_seconds:g} s\n  how to fix: start a new stream"),
            "idle": (1008, "idle", f"no message for {STREAM_IDLE_SECONDS:g} s\n"
                     "  how to fix: keep sending audio (silence is fine), or send {\"end\": true}"),
            "failed": (1011, "internal", "rendering failed (the server log has the details)"),
        }.get(outcome, (1003, "unexpected_message", "expected binary audio (16 kHz mono int16 LE) or {\"end\": true}\n"
                                                    "  how to fix: see the protocol in the API description"))
        await self._fail(code, name, message)

    async def _finished(self, timeout: float) -> bool:
        """Wait for the render thread to end; False if it is still going after `timeout` s."""
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def _parse_hello(self, msg: dict) -> tuple[bytes, dict]:
        """The portrait's bytes and the controls from the first message (ServiceError when it is not one)."""
        limit = self.settings.max_upload_bytes
        if msg.get("bytes") is not None:
            image, options = msg["bytes"], {}
        else:
            try:
                options = json.loads(msg.get("text") or "")
            except ValueError:
                options = None
            if not isinstance(options, dict) or not isinstance(options.get("image"), str):
                raise ServiceError(422, "invalid_image", "the first message must be the image: binary, or JSON "
                                   "{\"image\": \"<base64>\", ...controls}\n  how to fix: see the stream protocol")
            data = options.pop("image")
            if len(data) > limit * 4 // 3 + 4:
                raise ServiceError(413, "upload_too_large", f"the image is larger than {limit / 2**20:.3g} MB\n"
                                   "  how to fix: send a smaller image")
            try:
                image = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise ServiceError(422, "invalid_image", "`image` is not valid base64\n"
                                   "  how to fix: base64-encode the image file's bytes") from None
        if len(image) > limit:
            raise ServiceError(413, "upload_too_large", f"the image is larger than {limit / 2**20:.3g} MB\n"
                               "  how to fix: send a smaller image")
        return image, options

    async def _receive(self, timeout: float):
        """The next message; None when the client left; _TIMEOUT after `timeout` s."""
        try:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
        except TimeoutError:
            return _TIMEOUT
        return None if msg["type"] == "websocket.disconnect" else msg

    async def _read_audio(self, started: float) -> str:
        """Feed audio to the render thread until the client ends (or leaves, or a limit is hit)."""
        max_samples = int(self.settings.max_stream_seconds * SAMPLE_RATE)
        deadline = started + self.settings.max_stream_seconds
        carry, total = b"", 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "time_limit"
            msg = await self._receive(min(remaining, STREAM_IDLE_SECONDS))
            if msg is None:
                return "gone"
            if msg is _TIMEOUT:
                return "idle" if remaining > STREAM_IDLE_SECONDS else "time_limit"
            if msg.get("bytes") is not None:
                data = carry + msg["bytes"]
                cut = len(data) - len(data) % 2
                carry = data[cut:]
                samples = np.frombuffer(data[:cut], "<i2").astype(np.float32) / 32768.0
                total += len(samples)
                if total > max_samples:
                    return "time_limit"
                for i in range(0, len(samples), STREAM_PIECE):
                    piece = samples[i:i + STREAM_PIECE]
                    while not self.feed.room(len(piece)):  # back-pressure: stop reading until rendering catches up
                        if self.stop.is_set():
                            return "failed" if self.failed else "gone"
                        await asyncio.sleep(0.005)
                    if self.stop.is_set():
                        return "failed" if self.failed else "gone"
                    self.feed.put(piece)
            else:
                try:
                    message = json.loads(msg.get("text") or "")
                except ValueError:
                    message = None
                if isinstance(message, dict) and message.get("end") is True:
                    self.feed.end()
                    return "end"
                return "unexpected"

    def _render(self, animator) -> None:
        """Render thread: frames from the audio feed, each sent as a JPEG as soon as it is made."""
        try:
            for frame in animator.stream(self.feed):
                if self.stop.is_set() or not self._send(encode_jpeg(frame)):
                    break
                self.frames += 1
        except FeedClosed:
            pass
        except Exception:  # noqa: BLE001 - reported to the client, logged here
            log.exception("stream rendering failed")
            self.failed = True
        finally:
            self.stop.set()
            self.feed.close()
            self.slots.release(self)
            try:
                self.loop.call_soon_threadsafe(self.done.set)
            except RuntimeError:  # the event loop is gone (server stopped)
                pass

    def _send(self, data: bytes) -> bool:
        """Send one frame from the render thread through the event loop; False when the stream is over."""
        try:
            fut = asyncio.run_coroutine_threadsafe(self.ws.send_bytes(data), self.loop)
        except RuntimeError:
            return False
        while True:
            try:
                fut.result(timeout=0.1)
                return True
            except TimeoutError:
                if self.stop.is_set():
                    fut.cancel()
                    return False
            except Exception:  # noqa: BLE001 - the client went away
                return False

    async def _fail(self, code: int, name: str, message: str) -> None:
        """Send the error body, then close with `code` (quietly if the client is already gone)."""
        try:
            await self.ws.send_json(error_body(name, message))
            await self.ws.close(code, reason=name)
        except Exception:  # noqa: BLE001 - the client may already be gone
            pass

    def finish(self) -> None:
        """Free everything: stop the render thread (it frees the slot as it ends), or free the slot here."""
        self.halt()
        if self.thread is None or not self.thread.is_alive():
            self.slots.release(self)


# ------------------------------------------------------------------------------------------ app
def _token_ok(authorization: str | None, token: str | None) -> bool:
    """Whether an Authorization header carries the token (always true when no token is set)."""
    if token is None:
        return True
    scheme, _, credentials = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(credentials.strip().encode(), token.encode())


def _unauthorized() -> ServiceError:
    """401, with the header that tells clients to use a bearer token."""
    return ServiceError(401, "unauthorized", "missing or wrong bearer token\n"
                        "  how to fix: send the header `Authorization: Bearer <token>` the operator gave you",
                        headers={"WWW-Authenticate": "Bearer"})


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


def _form_schema() -> dict:
    """OpenAPI schema of the POST /v1/videos form (the body is parsed by hand, streamed to disk)."""
    from ..systems import engine_names

    kinds = {"float": {"type": "number"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
             "str": {"type": "string"}, "int | None": {"type": "integer"},
             "float | None": {"type": "number"}}
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


API_DESCRIPTION = (__doc__ or "").split("\n", 1)[1].strip()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app for `settings`. Its render threads start with the app (or the first submission);
    shutting the app down cancels every job, stops every stream and deletes the temp folder."""
    from .. import __version__

    settings = (settings or Settings()).validate()
    service = JobService(settings.workers, settings.queue_size, settings.max_jobs, settings.ttl_seconds)
    slots = StreamSlots(settings.max_streams)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        """Start the render threads (again if the app restarts); on shutdown stop streams, cancel jobs, delete files."""
        service.reopen()
        slots.stopping.clear()
        yield
        slots.stop_all()
        await run_in_threadpool(service.close)

    bearer = HTTPBearer(auto_error=False, description="the token the operator started the server with")

    async def require_token(request: Request, _=Depends(bearer)) -> None:
        """401 unless the request carries the bearer token."""
        if not _token_ok(request.headers.get("authorization"), settings.token):
            raise _unauthorized()

    auth = [Depends(require_token)] if settings.token else []
    app = FastAPI(title="talkinghead", version=__version__, description=API_DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.service, app.state.streams = settings, service, slots
    deny = (401,) if settings.token else ()

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        """Refusals raised anywhere become the one error body."""
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own request validation errors, in the one error body."""
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}\n"
                              "  how to fix: see /docs for the expected request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's 404 (no such route) and 405 (wrong method), in the one error body."""
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"{exc.detail}: {request.method} {request.url.path}\n  how to fix: see /docs for the routes"
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    async def accept(request: Request, file_fields: tuple[str, ...], validate) -> JSONResponse:
        """A job slot, the upload streamed into its folder and checked by `validate`, then queued (202); the
        slot is given back on any failure."""
        boundary = check_upload_headers(request, settings.max_upload_bytes)
        job = service.reserve()
        try:
            upload = await read_upload(request, boundary, job.folder, settings.max_upload_bytes, file_fields)
            job_request = await run_in_threadpool(validate, upload, settings)
        except BaseException:
            service.release(job)
            raise
        service.submit(job, job_request)
        return JSONResponse({"id": job.id}, status_code=202, headers={"Location": f"/v1/videos/{job.id}"})

    @app.post("/v1/videos", status_code=202, response_model=JobCreated, dependencies=auth, tags=["videos"],
              summary="Submit a portrait and speech; returns the job id",
              responses=_errors(400, *deny, 408, 413, 415, 422, 429, 503),
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": _form_schema()}}}})
    async def submit(request: Request) -> JSONResponse:
        """Everything is checked before the job is queued: a 202 means it will render."""
        return await accept(request, FILE_FIELDS, validate_submission)

    @app.post("/v1/dubs", status_code=202, response_model=JobCreated, dependencies=auth, tags=["dubs"],
              summary="Submit a video and new speech to re-sync its lips; returns the job id",
              description="The job is a video job: follow it, fetch it and cancel it at /v1/videos/{id}.",
              responses=_errors(400, *deny, 408, 413, 415, 422, 429, 503),
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": _dub_schema()}}}})
    async def submit_dub(request: Request) -> JSONResponse:
        """Checked like a video submission; the same limits, queue and errors."""
        return await accept(request, DUB_FILE_FIELDS, validate_dub)

    @app.get("/v1/videos/{job_id}", response_model=JobStatus, dependencies=auth, tags=["videos"],
             summary="A job's status and progress", responses=_errors(*deny, 404))
    async def status(job_id: str) -> dict:
        """`progress` is the fraction of frames written; `error` says why a failed job failed."""
        return service.get(job_id).public()

    @app.get("/v1/videos/{job_id}/file", dependencies=auth, tags=["videos"], response_class=Response,
             summary="The finished mp4 (H.264 + AAC)", responses={
                 200: {"content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
                 **_errors(*deny, 404, 409)})
    async def video(job_id: str) -> StreamingResponse:
        """The mp4 of a done job; 409 while it is queued or running, or when it failed or was cancelled."""
        f, size = service.open_video(job_id)

        def chunks():
            """The mp4 in pieces; the file is closed when the response ends."""
            with f:
                while data := f.read(FILE_CHUNK):
                    yield data

        return StreamingResponse(chunks(), media_type="video/mp4", headers={
            "Content-Length": str(size), "Content-Disposition": f'attachment; filename="{job_id}.mp4"'})

    @app.delete("/v1/videos/{job_id}", dependencies=auth, tags=["videos"], response_model=JobStatus,
                summary="Cancel a queued/running job, or delete a finished one and its files",
                responses={200: {"description": "cancelled (it was queued)", "model": JobStatus},
                           202: {"description": "cancelling (it is running; it stops at its next frame)",
                                 "model": JobStatus},
                           204: {"description": "removed with its files"}, **_errors(*deny, 404)})
    async def delete(job_id: str) -> Response:
        """A cancelled or removed job keeps no files; a removed one is forgotten (404 afterwards)."""
        outcome, job = service.delete(job_id)
        if outcome == "removed":
            return Response(status_code=204)
        return JSONResponse(job.public(), status_code=200 if outcome == "cancelled" else 202)

    @app.get("/v1/health", response_model=Health, dependencies=auth, tags=["server"],
             summary="Queue, job and stream counts", responses=_errors(*deny))
    async def health() -> dict:
        """Whether the server accepts work, and how busy it is."""
        counts = service.counts()
        return {"status": "stopping" if service.closing else "ok", "workers": settings.workers,
                "queued": counts["queued"], "running": counts["running"], "jobs": sum(counts.values()),
                "streams": slots.active}

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        """Live frames as audio arrives (protocol in the module docstring / API description)."""
        if not _token_ok(ws.headers.get("authorization"), settings.token):
            e = _unauthorized()
            try:
                await ws.send_denial_response(error_response(e.status, e.code, e.message, e.headers))
            except RuntimeError:  # a server without the denial extension: refuse the handshake (403)
                await ws.close(1008, reason="unauthorized")
            return
        session = StreamSession(ws, settings, slots, service.root)
        if not slots.acquire(session):
            await ws.accept()
            await ws.send_json(error_body("too_many_streams", f"this server already runs {settings.max_streams} "
                                          "streams\n  how to fix: try again later"))
            await ws.close(1013, reason="too_many_streams")
            return
        try:
            await ws.accept()
            await session.run()
        except WebSocketDisconnect:  # the client left while we were sending
            pass
        finally:
            session.finish()

    return app


# ------------------------------------------------------------------------------------------ serve
def _loopback(host: str) -> bool:
    """Whether `host` only listens on this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_listen(host: str, port: int) -> None:
    """InputError now, rather than uvicorn's exit later, when `host:port` cannot be listened on."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            sock.bind(address)
    except OSError as e:  # port taken, address not on this machine, unknown host name
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                         "choose another --port or --host") from None


def serve(log_level: str = "info", **options) -> None:
    """Run the API with uvicorn until interrupted (Ctrl-C: jobs are cancelled, the temp folder deleted).
    `options` are Settings fields (`port=8080`, `max_upload_mb=10`, ...), see `make_settings`.
    Raises InputError for a bad setting or an address it cannot listen on."""
    import importlib.util

    import uvicorn

    settings = make_settings(**options)
    check_listen(settings.host, settings.port)
    ws = "auto"
    if not (importlib.util.find_spec("websockets") or importlib.util.find_spec("wsproto")):
        ws = "none"
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level=log_level, ws=ws,
                            ws_max_size=settings.max_upload_bytes * 4 // 3 + 65536, timeout_graceful_shutdown=10)
    say = logging.getLogger("uvicorn.error")  # configured by uvicorn.Config, so these lines show
    say.info("talkinghead serve: %s", {k: ("***" if k == "token" and v else v) for k, v in asdict(settings).items()})
    if ws == "none":
        say.warning("WS /v1/stream needs the `websockets` package (pip install websockets); streaming is off")
    if not _loopback(settings.host) and not settings.token:
        say.warning("listening on %s without a token: anyone who can reach it can use it (pass --token)", settings.host)
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: a normal stop
        pass
