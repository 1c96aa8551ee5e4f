"""The public API: `animate()` renders a file, `say()` renders typed text, `Animator` streams."""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from .config import AnimateConfig
from .errors import InputError
from .io import VideoWriter, as_portrait, check_audio_bitrate, check_output_path, load_audio
from .types import Portrait, Speech
from .utils import prefetch

PREVIEW_FRAMES = 12  # frames on a contact sheet
PREVIEW_COLUMNS = 4


def _speech(audio, max_seconds: float) -> Speech:
    if isinstance(audio, Speech):
        if audio.duration > max_seconds:
            raise InputError(f"audio is {audio.duration:.1f} s long, more than --max-seconds {max_seconds:g}",
                             "trim it or raise --max-seconds")
        return audio
    if isinstance(audio, (str, os.PathLike)):
        return load_audio(audio, max_seconds=max_seconds)
    from .io import as_speech

    return as_speech(audio)


def read_transcript(text: str | os.PathLike | None) -> str | None:
    """A transcript given literally or as a path to a .txt file."""
    if text is None:
        return None
    s = str(text)
    if s.lower().endswith(".txt") or (len(s) < 4096 and os.path.isfile(s)):
        p = Path(s)
        if not p.is_file():
            raise InputError(f"transcript file {s} does not exist", "pass the text itself or an existing .txt file")
        try:
            s = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read transcript {p}: {e}", "save it as UTF-8 text") from None
    s = " ".join(s.split())
    if not s:
        raise InputError("--text is empty", "give the words spoken in the audio, or leave --text out")
    return s


def animate(image, audio, output: str | os.PathLike, text: str | None = None,
            config: AnimateConfig | None = None, preview: str | os.PathLike | None = None,
            progress: bool = False, engine: str = "warp", audio_bitrate: int | str | None = None) -> Path:
    """Render `output` (mp4) from a portrait (path, array or Portrait) and speech (path, array at
    16 kHz, or Speech). With `text` (the words spoken), the mouth follows forced-aligned phones;
    without, it follows the acoustics (any language). The video carries the audio at the rate and
    channel count it came in, as AAC at `audio_bitrate` kb/s (None: transparent default, 192 kb/s
    for stereo). Returns the output path."""
    config = (config or AnimateConfig()).validate()
    bitrate = check_audio_bitrate(audio_bitrate)
    out = check_output_path(output)
    preview_path = _check_preview(preview)
    transcript = read_transcript(text)
    portrait = as_portrait(image)
    speech = _speech(audio, config.render.max_seconds)
    if transcript and not speech.phones:
        from .audio.phonemes import align

        phones = align(speech, transcript)
        if phones is None:
            warnings.warn("could not align the transcript with the audio; the mouth follows the sound instead",
                          stacklevel=2)
        speech = dataclasses.replace(speech, transcript=transcript, phones=phones)
    animator = _engine(engine, portrait, config)
    return render_to_file(animator, speech, out, preview_path, progress, audio_bitrate=bitrate)


def say(text: str, image, output: str | os.PathLike, voice: str = "en-us",
        config: AnimateConfig | None = None, preview: str | os.PathLike | None = None,
        progress: bool = False, engine: str = "warp", audio_bitrate: int | str | None = None) -> Path:
    """Speak `text` with espeak-ng and animate the portrait with the synthesizer's own phone timings.
    The video's audio is the synthesizer's, at its own rate (AAC at `audio_bitrate` kb/s)."""
    from .audio.tts import synthesize

    config = (config or AnimateConfig()).validate()
    bitrate = check_audio_bitrate(audio_bitrate)
    out = check_output_path(output)
    preview_path = _check_preview(preview)
    portrait = as_portrait(image)
    speech = synthesize(text, voice=voice)
    if speech.duration > config.render.max_seconds:
        raise InputError(f"the speech is {speech.duration:.1f} s long, more than --max-seconds "
                         f"{config.render.max_seconds:g}", "shorten the text or raise --max-seconds")
    animator = _engine(engine, portrait, config)
    return render_to_file(animator, speech, out, preview_path, progress, audio_bitrate=bitrate)


def _engine(name: str, portrait: Portrait, config: AnimateConfig):
    from .systems import make_animator

    return make_animator(name, portrait, config)


def _check_preview(preview) -> Path | None:
    if preview is None:
        return None
    p = Path(preview)
    if p.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise InputError(f"--preview {p} must be a .png or .jpg file", "e.g. --preview sheet.png")
    if not p.parent.exists() or not os.access(p.parent, os.W_OK):
        raise InputError(f"cannot write --preview {p}: folder {p.parent} is missing or not writable",
                         "choose a folder that exists and that you can write to")
    return p


def render_to_file(animator, speech: Speech, out: Path, preview: Path | None = None,
                   progress: bool = False, audio_bitrate: int | None = None) -> Path:
    """Encode every frame of `speech` to `out` (atomically), optionally with a contact sheet.
    `animator` is any engine's animator (fps, frame_size, n_frames, frames); the audio track is
    `speech.original` when present (see VideoWriter), AAC at `audio_bitrate` bit/s (None: default)."""
    total = animator.n_frames(speech)
    picks = set(np.linspace(0, total - 1, min(PREVIEW_FRAMES, total)).round().astype(int).tolist())
    sheet = []
    bar = _progress(total, progress, out.name)
    with VideoWriter(out, animator.fps, animator.frame_size, audio=speech, audio_bitrate=audio_bitrate) as writer:
        for i, frame in enumerate(prefetch(animator.frames(speech))):  # render overlaps encode
            writer.write(frame)
            if preview is not None and i in picks:
                sheet.append(frame)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if preview is not None:
        write_contact_sheet(sheet, preview)
    return out


def _progress(total: int, enabled: bool, name: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=name, leave=False, dynamic_ncols=True)


def write_contact_sheet(frames: list[np.ndarray], path: Path, columns: int = PREVIEW_COLUMNS,
                        thumb: int = 256) -> Path:
    """A grid of thumbnails, written atomically."""
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
        raise InputError(f"could not write {path}", "check the folder is writable")
    os.replace(tmp, path)
    return path
