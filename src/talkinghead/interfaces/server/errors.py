"""How the HTTP API refuses: one JSON error body with a stable `code`, the `field` it is about where one is to
blame, and a message for people. Library InputErrors are translated by their type and field, never by their text."""
from __future__ import annotations

from fastapi.responses import JSONResponse

from ...errors import InputError, TooLongError

# Every code a route may answer with: code -> (HTTP status, when). The API description lists them.
CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "the body is not a complete multipart form (malformed, no boundary, cut short)"),
    "unauthorized": (401, "no bearer token, or the wrong one"),
    "not_found": (404, "no such job (finished jobs expire) or no such route"),
    "method_not_allowed": (405, "the route exists, but not with this method"),
    "upload_timeout": (408, "the upload did not arrive within the server's time limit"),
    "not_ready": (409, "the video is not done: queued, running, failed or cancelled"),
    "upload_too_large": (413, "the body (or a stream's portrait) is over the upload limit"),
    "field_too_large": (413, "a form field that is not a file is over 64 KB"),
    "unsupported_media_type": (415, "the body is not multipart/form-data"),
    "invalid_request": (422, "the request does not match the route's parameters"),
    "invalid_option": (422, "a control or option is unknown, malformed or out of range"),
    "option_not_allowed": (422, "the option is the operator's to set (paths, devices), not a client's"),
    "engine_unavailable": (422, "the engine needs checkpoints this server was not started with"),
    "missing_image": (422, "no `image` file in the form"),
    "missing_audio": (422, "no `audio` file (and, for a video, no `text` either)"),
    "missing_video": (422, "no `video` file in the dubbing form"),
    "invalid_image": (422, "the image cannot be read, or no face is found in it at the requested geometry"),
    "invalid_audio": (422, "the audio cannot be read as speech"),
    "invalid_video": (422, "the video to dub cannot be read"),
    "invalid_text": (422, "`text` is empty or too long, or its voice is unknown"),
    "audio_too_long": (422, "the speech is longer than the server's limit or the request's max-seconds"),
    "video_too_long": (422, "the video to dub is longer than the server's limit or the request's max-seconds"),
    "queue_full": (429, "the render queue is full; try again after `Retry-After` seconds"),
    "too_many_jobs": (429, "the server keeps as many jobs as it may; delete the finished ones you downloaded"),
    "shutting_down": (503, "the server is stopping"),
}

# Codes only a stream sends: code -> (WebSocket close code, when). A bad portrait or bad controls in its first
# message get the HTTP codes above (invalid_image, invalid_option, ...) with close code 1007, upload_too_large 1009.
STREAM_CODES: dict[str, tuple[int, str]] = {
    "unexpected_message": (1003, "a message that is neither audio nor {\"end\": true}"),
    "idle": (1008, "no message for too long (or no portrait at the start)"),
    "stream_too_long": (1008, "the stream reached the server's length limit"),
    "internal": (1011, "rendering failed on the server"),
    "too_many_streams": (1013, "the server runs as many streams as it may; try again later"),
}


class ServiceError(Exception):
    """A request the server refuses: a code from CODES (which gives its HTTP status), a message (what is wrong
    and how to fix it), the field to blame when one is, and extra response headers."""

    def __init__(self, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = CODES[code][0]
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def error_body(code: str, message: str, field: str | None = None) -> dict:
    """The one error body every route and the stream use; `field` only where one is to blame."""
    detail = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return {"error": detail}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSONResponse with the one error body."""
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


def api_name(field: str) -> str:
    """A library field as the API names it: form fields are spelt like the command-line options (`head-motion`)."""
    return field.replace("_", "-")


def words(e: InputError, labels: dict[str, str] | None = None) -> str:
    """An InputError in the API's words: its field named as the API names it, the fix on a second line, and
    server paths replaced by the names the client gave its files."""
    text = e.text(api_name(e.field) if e.field else None)
    if e.hint:
        text += f"\n  how to fix: {e.hint}"
    for path, label in (labels or {}).items():
        text = text.replace(path, label)
    return text


def refusal(e: InputError, checking: str, labels: dict[str, str] | None = None) -> ServiceError:
    """The refusal for an InputError met while checking `checking` (an input: "image", "audio", "video",
    "text"; or "option"). Its type says whether the media was too long; what was being checked gives the code
    clients rely on (invalid_image, invalid_audio, ...); its field, where it has one, is the field reported."""
    if isinstance(e, TooLongError):
        code = "video_too_long" if checking == "video" else "audio_too_long"
    else:
        code = "invalid_option" if checking == "option" else f"invalid_{checking}"
    field = api_name(e.field) if e.field else (None if checking == "option" else checking)
    return ServiceError(code, words(e, labels), field=field)
