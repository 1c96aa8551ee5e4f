"""The submission forms as they stream in: multipart parsed as it arrives, file fields written straight to disk
under server-made names, everything else size-capped, and the whole body refused (413) past the upload limit."""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from .errors import ServiceError
from .schemas import VIDEO_FILES

MAX_FIELDS = 64  # form fields per submission
MAX_FIELD_BYTES = 64 * 1024  # one non-file form field
UPLOAD_SECONDS = 120.0  # s, a whole upload must arrive within this


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

    def __init__(self, folder: Path, file_fields: tuple[str, ...] = VIDEO_FILES):
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
            raise ServiceError("bad_request", "a multipart part has no name\n"
                               "  how to fix: send a multipart/form-data body with named fields")
        name = options[b"name"].decode("utf-8", "replace")
        up = self.upload
        if name in up.fields or name in up.files:
            raise ServiceError("invalid_option", f"field {name!r} was sent twice\n  how to fix: send it once",
                               field=name)
        if name in self.file_fields:
            client = _client_filename(options.get(b"filename", b"").decode("utf-8", "replace"), f"the uploaded {name}")
            path = self.folder / f"{name}{_safe_suffix(client)}"
            self._file = open(path, "xb")  # noqa: SIM115 - closed in on_part_end or close()
            up.files[name], up.filenames[name] = path, client
        elif b"filename" in options:
            raise ServiceError("invalid_option", f"unexpected file field {name!r}\n"
                               f"  how to fix: send files only as {' and '.join(f'`{f}`' for f in self.file_fields)}",
                               field=name)
        elif len(up.fields) >= MAX_FIELDS:
            raise ServiceError("invalid_option", f"more than {MAX_FIELDS} form fields\n"
                               "  how to fix: send only the files, the speech and the options the form describes")
        self._name = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        """Part of a part's body: to its file, or to its (size-capped) value."""
        if self._file is not None:
            self._file.write(data[start:end])  # small writes to the page cache; no event-loop stall worth a thread
            return
        self._data += data[start:end]
        if len(self._data) > MAX_FIELD_BYTES:
            raise ServiceError("field_too_large", f"form field {self._name!r} is larger than "
                               f"{MAX_FIELD_BYTES // 1024} KB\n  how to fix: send files as "
                               f"{' / '.join(f'`{f}`' for f in self.file_fields)} parts",
                               field=self._name)

    def on_part_end(self) -> None:
        """A part is complete: close its file, or keep its value as UTF-8 text."""
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._name is not None:
            try:
                self.upload.fields[self._name] = self._data.decode("utf-8")
            except UnicodeDecodeError:
                raise ServiceError("invalid_option", f"form field {self._name!r} is not UTF-8 text\n"
                                   "  how to fix: send text fields as UTF-8", field=self._name) from None

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
    return ServiceError("upload_too_large", f"the upload is larger than this server's limit of "
                        f"{limit / 2**20:.3g} MB\n  how to fix: send a smaller image or shorter/compressed audio")


def check_upload_headers(request: Request, limit: int) -> bytes:
    """The multipart boundary, once the headers say the body is a form of at most `limit` bytes
    (415 / 400 / 413 before a byte of the body is read)."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data":
        raise ServiceError("unsupported_media_type", "the body must be multipart/form-data\n"
                           "  how to fix: send the files as a form, e.g. curl -F image=@face.jpg -F audio=@speech.wav")
    if not params.get(b"boundary"):
        raise ServiceError("bad_request", "the multipart body has no boundary\n"
                           "  how to fix: let your HTTP client build the multipart body")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    return params[b"boundary"]


async def read_upload(request: Request, boundary: bytes, folder: Path, limit: int,
                      file_fields: tuple[str, ...] = VIDEO_FILES) -> Upload:
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
        raise ServiceError("bad_request", "the multipart body is malformed\n"
                           "  how to fix: let your HTTP client build the multipart body") from None
    except TimeoutError:
        raise ServiceError("upload_timeout", f"the upload took longer than {UPLOAD_SECONDS:g} s\n"
                           "  how to fix: send smaller files or use a faster connection") from None
    except ClientDisconnect:
        raise ServiceError("bad_request", "the client went away during the upload\n"
                           "  how to fix: send the whole body") from None
    finally:
        reader.close()
    if not reader.ended:
        raise ServiceError("bad_request", "the multipart body ends early\n"
                           "  how to fix: send the whole body, ending with the closing boundary")
    return reader.upload
