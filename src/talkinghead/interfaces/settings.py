"""Settings of `talkinghead serve`, apart from the server so the CLI can list them without FastAPI."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import InputError

TOKEN_ENV = "TALKINGHEAD_TOKEN"


def default_workers() -> int:
    """One render thread per two cores (rendering and x264 each keep a core busy)."""
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass
class Settings:
    """How the server runs. The CLI exposes each field as `--field-name` (`max_upload_mb` -> --max-upload-mb)."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on (127.0.0.1: this machine only)"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    workers: int = field(default_factory=default_workers, metadata={"help": "render threads (default: cores / 2)"})
    queue_size: int = field(default=16, metadata={"help": "jobs that may wait for a render thread; more get 429"})
    max_jobs: int = field(default=200, metadata={"help": "jobs kept in any state (finished ones until they expire)"})
    max_upload_mb: float = field(default=25.0, metadata={"help": "largest request body (image + audio), MB"})
    max_audio_seconds: float = field(default=120.0, metadata={"help": "longest speech per video, seconds"})
    ttl_seconds: float = field(default=3600.0, metadata={"help": "finished jobs and their files expire after this"})
    max_streams: int = field(default=4, metadata={"help": "concurrent /v1/stream sessions; more are refused (1013)"})
    max_stream_seconds: float = field(default=600.0, metadata={"help": "longest /v1/stream session, seconds"})
    token: str | None = field(default=None, metadata={"help": f"bearer token clients must send (or env {TOKEN_ENV})"})
    checkpoint_dir: str | None = field(default=None, metadata={"help": "official release folder for hallo/hallo2"})
    face_embedding: str | None = field(default=None, metadata={"help": "ArcFace .onnx model (or embedding file) "
                                                                        "for hallo/hallo2"})

    @property
    def max_upload_bytes(self) -> int:
        """The upload limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    def validate(self) -> "Settings":
        """Raise InputError, naming the setting as its `field`, for a setting that cannot work."""
        def positive(name: str, integer: bool = False, zero: bool = False) -> None:
            """Refuse a setting that is not a positive (or, with `zero`, non-negative) finite number."""
            v = getattr(self, name)
            number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not (number and (v >= 0 if zero else v > 0) and (not integer or float(v).is_integer())):
                kind = "a whole number" if integer else "a number"
                raise InputError(f"must be {kind} {'>= 0' if zero else '> 0'}, got {v!r}",
                                 f"e.g. {getattr(Settings(), name)}", field=name)
        for name in ("workers", "queue_size", "max_jobs"):
            positive(name, integer=True)
        positive("max_streams", integer=True, zero=True)
        for name in ("max_upload_mb", "max_audio_seconds", "ttl_seconds", "max_stream_seconds"):
            positive(name)
        if isinstance(self.port, bool) or not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            raise InputError(f"must be 0..65535, got {self.port!r}", "e.g. 8000", field="port")
        if self.token is not None and not self.token.strip():
            raise InputError("is empty", f"pass a long random string, or leave it and {TOKEN_ENV} unset",
                             field="token")
        if self.checkpoint_dir is not None and not Path(self.checkpoint_dir).is_dir():
            raise InputError(f"{self.checkpoint_dir} is not a folder",
                             "pass the official release folder (pretrained_models/)", field="checkpoint_dir")
        if self.face_embedding is not None and not Path(self.face_embedding).is_file():
            raise InputError(f"{self.face_embedding} does not exist",
                             "pass an ArcFace .onnx model or a 512-value embedding file", field="face_embedding")
        return self


def make_settings(**options) -> Settings:
    """Validated Settings from options named like its fields (None = the default, as from a CLI);
    `token` falls back to the TALKINGHEAD_TOKEN environment variable. Raises InputError."""
    known = {f.name for f in fields(Settings)}
    unknown = set(options) - known
    if unknown:
        raise InputError(f"unknown server setting(s): {', '.join(sorted(unknown))}",
                         f"known: {', '.join(sorted(known))}")
    options = {k: v for k, v in options.items() if v is not None}
    options.setdefault("token", os.environ.get(TOKEN_ENV) or None)
    return Settings(**options).validate()
