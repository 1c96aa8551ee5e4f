"""The render service: speech prepared one way, rendered with any engine into an mp4, with progress and
cancellation. The Python API, the HTTP jobs, the web app, the bench, SynthTalk and the preference tool all
render through it, so a fix to how speech is read or a video is written lands everywhere at once."""
from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .config import AnimateConfig
from .errors import InputError, TooLongError, UnsupportedFormatError
from .io import VideoWriter, as_portrait, load_audio
from .types import Speech
from .utils import prefetch

PREVIEW_FRAMES = 12  # frames on a contact sheet
PREVIEW_COLUMNS = 4


class Cancelled(Exception):
    """The render was cancelled between two frames; no output file was left."""


# ----------------------------------------------------------------------------------------------- speech
def read_transcript(text: str | os.PathLike | None) -> str | None:
    """A transcript given literally or as a path to a .txt file."""
    if text is None:
        return None
    s = str(text)
    if s.lower().endswith(".txt") or (len(s) < 4096 and os.path.isfile(s)):
        p = Path(s)
        if not p.is_file():
            raise InputError(f"{s} does not exist (a name ending in .txt is read as a transcript file)",
                             "pass the text itself or an existing .txt file", field="text")
        try:
            s = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{p} cannot be read as a transcript: {e}", "save it as UTF-8 text", field="text") from None
    s = " ".join(s.split())
    if not s:
        raise InputError("is empty", "give the words spoken in the audio, or leave the text out", field="text")
    return s


def load_speech(audio, max_seconds: float) -> Speech:
    """Speech from a path, a Speech or an array of 16 kHz mono samples, refused past `max_seconds`."""
    if isinstance(audio, (str, os.PathLike)):
        return load_audio(audio, max_seconds=max_seconds)
    if not isinstance(audio, Speech):
        from .io import as_speech

        audio = as_speech(audio)
    if audio.duration > max_seconds:
        raise TooLongError(f"is {audio.duration:.1f} s long, more than the limit of {max_seconds:g} s",
                           "trim it, or raise the max-seconds limit", field="audio")
    return audio


def with_transcript(speech: Speech, transcript: str | None) -> Speech:
    """`speech` with phone timings force-aligned to `transcript` (English); when alignment fails, a warning and
    the speech as it was (the mouth then follows the sound). The original audio track is kept."""
    if not transcript or speech.phones:
        return speech
    from .audio.phonemes import align

    phones = align(speech, transcript)
    if phones is None:
        warnings.warn("could not align the transcript with the audio; the mouth follows the sound instead",
                      stacklevel=3)
    return dataclasses.replace(speech, transcript=transcript, phones=phones)


def spoken(text: str, voice: str, max_seconds: float) -> Speech:
    """`text` spoken by espeak-ng with its own phone timings, refused past `max_seconds`."""
    from .audio.tts import synthesize

    speech = synthesize(text, voice=voice)
    if speech.duration > max_seconds:
        raise TooLongError(f"takes {speech.duration:.1f} s to speak, more than the limit of {max_seconds:g} s",
                           "shorten the text, or raise the max-seconds limit", field="text")
    return speech


# ----------------------------------------------------------------------------------------------- output
def check_preview(preview) -> Path | None:
    """The contact-sheet path, refused before any work when it cannot be written."""
    if preview is None:
        return None
    p = Path(preview)
    if p.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UnsupportedFormatError(f"must be a .png or .jpg file, got {p.name!r}", "e.g. sheet.png", field="preview")
    if not p.parent.exists() or not os.access(p.parent, os.W_OK):
        raise InputError(f"{p} cannot be written: folder {p.parent} is missing or not writable",
                         "choose a folder that exists and that you can write to", field="preview")
    return p


def progress_bar(total: int, enabled: bool, name: str):
    """A tqdm bar over `total` frames, or None."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=name, leave=False, dynamic_ncols=True)


def render_to_file(animator, speech: Speech, out: Path, preview: Path | None = None, progress: bool = False,
                   audio_bitrate: int | None = None, cancel: threading.Event | None = None,
                   on_progress: Callable[[float], None] | None = None, lossless: bool = False) -> Path:
    """Encode every frame of `speech` to `out` (atomically), optionally with a contact sheet; `lossless`
    encodes at quantiser 0, so decoding gives back exactly the rendered frames.
    `animator` is any engine's animator (fps, frame_size, n_frames, frames); the audio track is
    `speech.original` when present (see VideoWriter), AAC at `audio_bitrate` bit/s (None: default).
    `cancel`, when set, stops between frames (raising Cancelled; the partial file is deleted);
    `on_progress` gets the fraction of frames written."""
    total = animator.n_frames(speech)
    picks = set(np.linspace(0, total - 1, min(PREVIEW_FRAMES, total)).round().astype(int).tolist())
    sheet = []
    bar = progress_bar(total, progress, out.name)
    try:
        with VideoWriter(out, animator.fps, animator.frame_size, audio=speech, audio_bitrate=audio_bitrate,
                         lossless=lossless) as writer:
            for i, frame in enumerate(prefetch(animator.frames(speech))):  # render overlaps encode
                if cancel is not None and cancel.is_set():
                    raise Cancelled  # the writer deletes its partial file
                writer.write(frame)
                if preview is not None and i in picks:
                    sheet.append(frame)
                if bar is not None:
                    bar.update(1)
                if on_progress is not None:
                    on_progress(min(1.0, (i + 1) / max(1, total)))
    finally:
        if bar is not None:
            bar.close()
    if preview is not None:
        write_contact_sheet(sheet, preview)
    return out


def write_contact_sheet(frames: list[np.ndarray], path: Path, columns: int = PREVIEW_COLUMNS,
                        thumb: int = 256) -> Path:
    """A grid of thumbnails, written atomically."""
    import cv2

    if not frames:
        raise ValueError("no frames for the contact sheet")
    h, w = frames[0].shape[:2]
    s = thumb / max(h, w)
    th, tw = int(round(h * s)), int(round(w * s))
    thumbs = [cv2.resize(f, (tw, th), interpolation=cv2.INTER_AREA) for f in frames]
    rows = -(-len(thumbs) // columns)
    grid = np.full((rows * th, columns * tw, 3), 255, np.uint8)
    for i, t in enumerate(thumbs):
        r, c = divmod(i, columns)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = t
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise InputError(f"{path} could not be written", "check the folder is writable", field="preview")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------- render
def render(engine: str, image, speech: Speech, output: Path, config: AnimateConfig | None = None,
           preview: Path | None = None, progress: bool = False, audio_bitrate: int | None = None,
           cancel: threading.Event | None = None, on_progress: Callable[[float], None] | None = None,
           warn: bool = True) -> Path:
    """Render prepared `speech` with the engine `engine` (a registry name) into `output`."""
    from .systems import make_animator

    config = (config or AnimateConfig()).validate()
    animator = make_animator(engine, as_portrait(image), config, warn)
    if cancel is not None and cancel.is_set():
        raise Cancelled
    return render_to_file(animator, speech, Path(output), preview, progress, audio_bitrate, cancel, on_progress,
                          lossless=config.render.lossless)
