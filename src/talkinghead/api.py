"""The public API: `animate()` renders a file, `say()` renders typed text, `Animator` streams.
Both go through the render service (`talkinghead.service`), as every other interface does."""
from __future__ import annotations

import os
from pathlib import Path

from .config import AnimateConfig
from .io import check_audio_bitrate, check_output_path
from .service import (check_preview, load_speech, read_transcript, render, render_to_file, spoken,
                      with_transcript, write_contact_sheet)


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
    preview_path = check_preview(preview)
    transcript = read_transcript(text)
    speech = with_transcript(load_speech(audio, config.render.max_seconds), transcript)
    return render(engine, image, speech, out, config, preview_path, progress, bitrate)


def say(text: str, image, output: str | os.PathLike, voice: str = "en-us",
        config: AnimateConfig | None = None, preview: str | os.PathLike | None = None,
        progress: bool = False, engine: str = "warp", audio_bitrate: int | str | None = None) -> Path:
    """Speak `text` with espeak-ng and animate the portrait with the synthesizer's own phone timings.
    The video's audio is the synthesizer's, at its own rate (AAC at `audio_bitrate` kb/s)."""
    config = (config or AnimateConfig()).validate()
    bitrate = check_audio_bitrate(audio_bitrate)
    out = check_output_path(output)
    preview_path = check_preview(preview)
    speech = spoken(text, voice, config.render.max_seconds)
    return render(engine, image, speech, out, config, preview_path, progress, bitrate)


__all__ = ["animate", "say", "read_transcript", "render_to_file", "write_contact_sheet"]
