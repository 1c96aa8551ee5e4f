"""The API description OpenAPI shows (`/docs`, `/openapi.json`): the routes, the error codes (from CODES), the
security rules and the stream protocol."""
from __future__ import annotations

from .errors import CODES, STREAM_CODES

ROUTES = """\
Routes (all under /v1; with a token set, each needs `Authorization: Bearer TOKEN`, else 401):

- `POST /v1/videos` (multipart/form-data): file `image`, and file `audio` or form field `text` (+ `voice`,
  an espeak-ng voice, default en-us; with `audio`, `text` is its transcript), `engine` (default warp) and the
  controls: form fields named like the command-line options (`head-motion`, `size`, ...), each listed with its
  range and default in this route's request body. Everything is checked before the job is queued: 202
  `{"id": ...}`, or an error.
- `POST /v1/dubs` (multipart/form-data): file `video` and file `audio` (the new speech), its options in the
  request body; the job is followed like a video job.
- `GET /v1/videos/{id}` -> `{"id", "status": queued|running|done|failed|cancelled, "progress": 0..1, "error"}`;
  a job that failed while rendering adds `error_code`, a stable code (no_face, unreadable_media,
  unsupported_format, too_long, invalid_input; internal for a fault of the server), and `error_field`, the input
  or control to blame (or null).
- `GET /v1/videos/{id}/file` -> the mp4 (409 until done).
- `DELETE /v1/videos/{id}`: cancels a queued job (200) or asks a running one to stop between frames (202);
  removes a finished one and its files (204).
- `GET /v1/health` -> queue, job and stream counts.
- `WS /v1/stream`: live frames as audio arrives (the warp engine), protocol below."""

ERRORS = """\
Errors all have one body, `{"error": {"code": "...", "message": "...", "field": "..."}}`: `code` is stable and
meant for programs, `field` names the form field or control to blame (only where one is), and `message` says
what is wrong and how to fix it. The codes:"""

SECURITY = """\
Security: clients never name a path. Uploads are written under server-made names in a private temp folder
(mode 0700) that is deleted on shutdown; `checkpoint-dir`, `face-embedding` and `device` are the operator's
(set at startup) and refused from clients; text is never read as a file name."""

STREAM = """\
Stream protocol (`WS /v1/stream`):

1. The client sends ONE message with the portrait: binary (the image file's bytes), or text JSON
   `{"image": "<base64 of the image file>", "head-motion": 0.5, "size": 256, ...}` (controls named like the
   form fields of POST /v1/videos). The server answers `{"fps": 25.0, "width": 512, "height": 512,
   "sample_rate": 16000, "audio": "pcm_s16le", "video": "jpeg", "max_seconds": ...}`.
2. The client sends audio as binary messages: 16 kHz mono PCM, int16 little-endian, any chunk size
   (~100 ms is a good size). The server sends each frame as one binary message (a JPEG) as soon as the
   audio up to that frame + 120 ms lookahead is in. At most ~1 s of audio is buffered ahead of rendering;
   a client that sends faster is slowed down (the server stops reading until rendering catches up).
3. The client sends the text message `{"end": true}`; the server sends the remaining frames, then
   `{"end": true, "frames": N}`, and closes with 1000.

On an error the server sends the error body and closes. A bad portrait or bad controls in the first message
get the HTTP codes above (invalid_image, invalid_option, option_not_allowed) and close code 1007
(upload_too_large: 1009); the stream's own codes are below. A client that disconnects frees everything at once."""


def _table(codes: dict[str, tuple[int, str]], status: str) -> str:
    """A markdown table of error codes."""
    rows = [f"| code | {status} | when |", "|---|---|---|"]
    rows += [f"| `{code}` | {number} | {when} |" for code, (number, when) in codes.items()]
    return "\n".join(rows)


def api_description() -> str:
    """The whole description, error tables included."""
    return "\n\n".join((ROUTES, ERRORS, _table(CODES, "HTTP status"), SECURITY, STREAM,
                        _table(STREAM_CODES, "close code")))
