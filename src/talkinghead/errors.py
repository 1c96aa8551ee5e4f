"""Errors a user can act on. Each carries what went wrong, how to fix it and, where one input or control is
to blame, that field's name; interfaces word it their own way (a flag, a form field, a JSON error code)."""
from __future__ import annotations


class TalkingHeadError(Exception):
    """Base class for every error talkinghead raises on purpose."""


class InputError(TalkingHeadError):
    """The user's input is wrong (bad file, bad value). The CLI prints it and exits with code 2.

    `message` says what is wrong; `hint` says how to fix it. With `field` (a control or input name as in
    config.py, e.g. "head_motion", "audio"), `message` is the predicate about that field ("must be between 0 and
    2, got 5") and each interface names the subject itself: `--head-motion` on the command line, `head_motion`
    in the HTTP API, "head motion" in the web app. `code` is the stable identifier the HTTP API reports.
    """

    code = "invalid_input"

    def __init__(self, message: str, hint: str = "", field: str | None = None):
        self.message = message
        self.hint = hint
        self.field = field
        super().__init__(self.text() if not hint else f"{self.text()} — {hint}")

    def text(self, subject: str | None = None) -> str:
        """The message as one sentence, its field named `subject` (default: the field's own name)."""
        if self.field is None:
            return self.message
        return f"{subject if subject is not None else self.field} {self.message}"

    def __str__(self) -> str:  # one clear line, fix included
        return self.text() if not self.hint else f"{self.text()}\n  how to fix: {self.hint}"


class TooLongError(InputError):
    """The media is longer than the limit it was given (`max_seconds`, or a server's cap)."""

    code = "too_long"


class NoFaceError(InputError):
    """No face was found where one is needed (a portrait, a video to dub, a driving video)."""

    code = "no_face"


class UnreadableMediaError(InputError):
    """A file exists but cannot be decoded as the image, audio or video it should be (corrupt, empty, truncated)."""

    code = "unreadable_media"


class UnsupportedFormatError(InputError):
    """A file's format or extension is one talkinghead does not read or write."""

    code = "unsupported_format"


class CheckpointError(TalkingHeadError):
    """A checkpoint folder is missing files or holds files we refuse to load."""


class MissingFilesError(CheckpointError):
    """A weights folder lacks files a loader needs. `missing` lists each absent file as the release names it
    (alternatives joined by " or "), so interfaces can show the list without reading the message."""

    def __init__(self, folder, missing: list[str], release: str):
        self.folder, self.missing, self.release = folder, list(missing), release
        super().__init__(f"{folder} is missing files of the {release} release:\n"
                         + "\n".join(f"  {m}" for m in self.missing))

