"""Hallo4 §3.2 preference candidates: every audio rendered by several engines, and the videos scored by the
eval card as an automatic proxy for human ratings (`talkinghead prefer generate`). The pairs' format, the
rewards and the best-vs-worst choice live in train/preference.py.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..train.preference import Candidate, card_rewards

Engine = Callable[[str, str, Path], Path]  # (portrait, audio, output mp4) -> output


def engine_runner(name: str, **controls) -> Engine:
    """An engine of `talkinghead.api.animate` by name, with AnimateConfig controls (e.g. head_motion=0.5)."""
    def run(portrait: str, audio: str, out: Path) -> Path:
        from ..config import AnimateConfig, config_from_options
        from ..io import check_output_path
        from ..service import load_speech, render

        config = config_from_options(controls) if controls else None
        speech = load_speech(audio, (config or AnimateConfig()).render.max_seconds)
        return render(name, portrait, speech, check_output_path(out), config)
    return run


def generate_candidates(portrait: str | Path, audios: list[str | Path], engines: dict[str, Engine],
                        out_dir: str | Path) -> list[tuple[str, str, str]]:
    """Render every audio with every engine into out_dir/<audio stem>/<engine>.mp4; returns
    (audio, video, engine) triples."""
    if len(engines) < 2:
        raise InputError(f"must name at least two engines, got {len(engines)}",
                         "a preference pair compares two engines' videos of one audio, e.g. warp,hallo",
                         field="engines")
    out = Path(out_dir)
    triples = []
    for audio in audios:
        folder = out / Path(audio).stem
        folder.mkdir(parents=True, exist_ok=True)
        for name, run in engines.items():
            video = run(str(portrait), str(audio), folder / f"{name}.mp4")
            triples.append((str(audio), str(video), name))
    return triples


def score_with_card(triples: list[tuple[str, str, str]], portrait: str | Path) -> list[Candidate]:
    """Candidates scored by the eval card proxy (`card_rewards`); videos the card cannot score are left out."""
    from ..eval.card import evaluate

    cands = []
    for audio, video, engine in triples:
        rewards = card_rewards(evaluate(video, audio=audio, ref=str(portrait)))
        if rewards is not None and all(math.isfinite(r) for r in rewards):
            cands.append(Candidate(audio, video, engine, *rewards))
    return cands
