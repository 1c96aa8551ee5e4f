"""Hallo4 §3.2 preference data: candidate videos from several engines per audio, scored by human 1–5 ratings of
motion–video alignment and portrait fidelity (a CSV) or by the eval card as an automatic proxy (the candidates are
rendered and scored by data/preference.py), a composite reward r = ½ (r_align + r_fidelity), and one best-vs-worst
pair per audio for Diffusion-DPO.

    talkinghead prefer ratings ratings.csv -o pairs.jsonl
    talkinghead prefer generate portrait.png a.wav b.wav --engines warp,hallo --candidates cands/ -o pairs.jsonl

Ratings CSV columns: audio, video, align, fidelity (1–5), optional engine and rater; several raters of one
video are averaged. Rewards are ratings mapped to [0, 1] by (x − 1) / 4.
"""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from ..errors import InputError

RATING_MIN, RATING_MAX = 1, 5
REQUIRED_COLUMNS = ("audio", "video", "align", "fidelity")
ALIGN_OFFSET_SCALE = 10.0  # frames: the card proxy's alignment falls linearly to 0 at this |A/V offset|


@dataclass
class Candidate:
    """One generated video for one audio, with its two rewards in [0, 1]."""

    audio: str
    video: str
    engine: str
    r_align: float
    r_fidelity: float

    @property
    def reward(self) -> float:
        return composite_reward(self.r_align, self.r_fidelity)


@dataclass
class PreferencePair:
    audio: str
    winner: str
    loser: str
    winner_engine: str
    loser_engine: str
    winner_reward: float
    loser_reward: float

    @property
    def margin(self) -> float:
        return self.winner_reward - self.loser_reward


def rating_to_reward(x: float) -> float:
    """A 1–5 rating -> [0, 1]; InputError (field "rating") outside 1–5."""
    if not RATING_MIN <= x <= RATING_MAX:  # NaN included
        raise InputError(f"must be from {RATING_MIN} to {RATING_MAX}, got {x:g}",
                         f"rate from {RATING_MIN} to {RATING_MAX}", field="rating")
    return (x - RATING_MIN) / (RATING_MAX - RATING_MIN)


def composite_reward(r_align: float, r_fidelity: float) -> float:
    """Hallo4's composite reward r = ½ (r_align + r_fidelity)."""
    return 0.5 * (r_align + r_fidelity)


def read_ratings(path: str | Path) -> list[Candidate]:
    """Candidates from a ratings CSV (one row per rater and video; raters of a video are averaged)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"ratings file {p} not found", "pass a CSV with columns " + ", ".join(REQUIRED_COLUMNS))
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{p} lacks the columns {missing}", "the header needs " + ", ".join(REQUIRED_COLUMNS))
        sums: dict[tuple[str, str], list] = {}
        for line, row in enumerate(reader, start=2):
            a, fi = (_reward(p, line, row, column) for column in ("align", "fidelity"))
            key = (row["audio"], row["video"])
            entry = sums.setdefault(key, [row.get("engine") or "", 0.0, 0.0, 0])
            entry[1] += a
            entry[2] += fi
            entry[3] += 1
    return [Candidate(audio, video, engine, sa / n, sf / n) for (audio, video), (engine, sa, sf, n) in sums.items()]


def _reward(path: Path, line: int, row: dict, column: str) -> float:
    """One rating of a ratings-CSV row as a reward; InputError naming the file, line and column otherwise."""
    text = row[column]
    try:
        return rating_to_reward(float(text))
    except (TypeError, ValueError):  # not a number (or an empty cell)
        raise InputError(f"{path} line {line}: {column} must be a number, got {text!r}",
                         f"rate from {RATING_MIN} to {RATING_MAX}") from None
    except InputError as e:
        raise InputError(f"{path} line {line}: {column} {e.message}", e.hint) from None


def card_rewards(card: dict) -> tuple[float, float] | None:
    """The eval card as a proxy for the two ratings, each in [0, 1], or None when the card lacks them.

    r_align: sync confidence (clipped to [0, 1]) × (1 − |offset| / 10 frames, floored at 0).
    r_fidelity: 1 − identity distance / (2 × same-person threshold), clipped (distance 0 -> 1, the threshold
    -> ½); without identity metrics (no dlib), the mouth's sharpness relative to the portrait, clipped."""
    sync, ident, mouth = card.get("sync", {}), card.get("identity", {}), card.get("mouth", {})
    conf, offset = sync.get("confidence"), sync.get("offset_frames")
    if conf is None:
        return None
    r_align = min(max(conf, 0.0), 1.0) * max(0.0, 1.0 - abs(offset or 0) / ALIGN_OFFSET_SCALE)
    distance, threshold = ident.get("distance_mean"), ident.get("threshold")
    if distance is not None and threshold:
        r_fid = 1.0 - distance / (2 * threshold)
    elif mouth.get("sharpness_vs_ref") is not None:
        r_fid = mouth["sharpness_vs_ref"]
    else:
        return None
    return r_align, min(max(r_fid, 0.0), 1.0)


def best_vs_worst(candidates: Iterable[Candidate], min_margin: float = 0.0) -> list[PreferencePair]:
    """Per audio, the highest-reward candidate against the lowest; audios with fewer than two candidates or
    a margin ≤ `min_margin` give no pair. Ties are broken by video name, so the result is deterministic."""
    by_audio: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_audio[c.audio].append(c)
    pairs = []
    for audio in sorted(by_audio):
        cands = sorted(by_audio[audio], key=lambda c: (-c.reward, c.video))
        best, worst = cands[0], cands[-1]
        if len(cands) < 2 or best.reward - worst.reward <= min_margin:
            continue
        pairs.append(PreferencePair(audio, best.video, worst.video, best.engine, worst.engine, best.reward,
                                    worst.reward))
    return pairs


def write_pairs(pairs: list[PreferencePair], path: str | Path) -> Path:
    """JSON lines, one pair each (with its margin)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps({**asdict(x), "margin": x.margin}) + "\n" for x in pairs))
    return p


def read_pairs(path: str | Path) -> list[PreferencePair]:
    keys = PreferencePair.__dataclass_fields__
    return [PreferencePair(**{k: v for k, v in json.loads(line).items() if k in keys})
            for line in Path(path).read_text().splitlines() if line.strip()]
