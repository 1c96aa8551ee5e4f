"""Errors a user can act on. Each carries what went wrong and how to fix it."""
from __future__ import annotations


class TalkingHeadError(Exception):
    """Base class for every error talkinghead raises on purpose."""


class InputError(TalkingHeadError):
    """The user's input is wrong (bad file, bad value). The CLI prints it and exits with code 2.

    `message` says what is wrong; `hint` says how to fix it.
    """

    def __init__(self, message: str, hint: str = ""):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} — {hint}")

    def __str__(self) -> str:  # one clear line, fix included
        return self.message if not self.hint else f"{self.message}\n  how to fix: {self.hint}"


class TooLongError(InputError):
    """The media is longer than the limit it was given (`--max-seconds`, or a server's cap). Interfaces tell it
    apart by type, not by its words: the HTTP API answers it with its own error code."""


class CheckpointError(TalkingHeadError):
    """A checkpoint folder is missing files or holds files we refuse to load."""
