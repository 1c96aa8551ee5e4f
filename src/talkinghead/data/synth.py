"""SynthTalk: training videos rendered by the warp engine from the bundled portraits and espeak-ng speech in
several languages, each saved with the synthesizer's true phone timings. It proves the training stack end to
end on a CPU in minutes (a 3 s clip at 256 px renders in about a second).

Every clip k of a run is drawn from its own generator seeded with (seed, k): the same seed always gives the
same clips, and a rerun skips clips already written (NAME.json is written last, after NAME.mp4).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..config import AnimateConfig, MotionConfig, RenderConfig
from ..errors import InputError
from ..types import Portrait

LANGUAGES = ("en-us", "de", "fr", "es", "it")
PORTRAITS = ("astronaut", "grace_hopper")
FPS = 25
MIN_SECONDS, MAX_SECONDS = 2.0, 5.0  # s, speech length of a clip
MAX_TRIES = 8  # sentence lengths tried to land inside [MIN_SECONDS, MAX_SECONDS]
ZOOM = (1.7, 2.6)  # crop side / face landmark box side
SHIFT = 0.12  # largest crop-centre offset, as a share of the face size
FACE_MARGIN = 1.3  # least face width / the engine's minimum face width (small output sizes zoom in)

# Small per-language word lists; sentences are random word sequences (speech rhythm, not meaning, matters).
WORDS = {
    "en": ("the", "morning", "light", "was", "warm", "and", "quiet", "we", "walked", "along", "river", "people",
           "talked", "about", "weather", "music", "coffee", "tomorrow", "maybe", "very", "good", "idea", "book",
           "window", "friend", "simple", "beautiful", "open", "baby", "mother"),
    "de": ("der", "Morgen", "war", "hell", "und", "ruhig", "wir", "gehen", "heute", "nach", "Hause", "mit",
           "einem", "guten", "Freund", "Buch", "Fenster", "Wasser", "Musik", "immer", "vielleicht", "morgen",
           "schön", "Bahnhof", "Mutter", "Brot", "Zeit", "Stadt", "kleine", "Blume"),
    "fr": ("le", "matin", "était", "calme", "et", "lumineux", "nous", "allons", "avec", "un", "ami", "beaucoup",
           "de", "musique", "pain", "maison", "fenêtre", "toujours", "peut-être", "demain", "belle", "ville",
           "petit", "bateau", "mère", "livre", "parler", "jardin", "pomme", "bonjour"),
    "es": ("la", "mañana", "era", "tranquila", "y", "clara", "vamos", "con", "un", "amigo", "muy", "bueno",
           "música", "pan", "casa", "ventana", "siempre", "quizás", "mañana", "bonita", "ciudad", "pequeño",
           "barco", "madre", "libro", "hablar", "jardín", "manzana", "playa", "hola"),
    "it": ("la", "mattina", "era", "calma", "e", "chiara", "andiamo", "con", "un", "amico", "molto", "buono",
           "musica", "pane", "casa", "finestra", "sempre", "forse", "domani", "bella", "città", "piccolo",
           "barca", "madre", "libro", "parlare", "giardino", "mela", "mare", "ciao"),
}


@dataclass
class ClipPlan:
    """Everything random about one clip."""

    name: str
    language: str
    portrait: str
    flip: bool
    zoom: float  # crop side / face box side
    shift: tuple[float, float]  # crop-centre offset, share of the face size (x, y)
    motion: MotionConfig


def _words(language: str) -> tuple[str, ...]:
    """The word list for an espeak-ng language code ("en-us" -> English)."""
    base = language.lower().split("-")[0]
    if base not in WORDS:
        raise InputError(f"no SynthTalk word list for language {language!r}",
                         f"use some of: {', '.join(LANGUAGES)}")
    return WORDS[base]


def plan_clip(seed: int, k: int, languages: tuple[str, ...]) -> tuple[ClipPlan, np.random.Generator]:
    """The settings of clip k (language k cycles through `languages`), and the generator for its text."""
    rng = np.random.default_rng([seed, k])
    language = languages[k % len(languages)]
    motion = MotionConfig(
        head_motion=round(float(rng.uniform(0.4, 1.6)), 3),
        blink_rate=round(float(rng.uniform(8.0, 30.0)), 2),
        gaze=str(rng.choice(["camera", "wander"])),
        mouth_scale=round(float(rng.uniform(0.8, 1.3)), 3),
        smile=round(float(rng.uniform(0.0, 0.5)) if rng.random() < 0.6 else 0.0, 3),
        brows=round(float(rng.uniform(0.5, 1.5)), 3),
        seed=int(rng.integers(0, 2**31 - 1)),
    )
    plan = ClipPlan(
        name=f"synth_s{seed}_{k:04d}_{language}",
        language=language,
        portrait=PORTRAITS[int(rng.integers(len(PORTRAITS)))],
        flip=bool(rng.random() < 0.5),
        zoom=round(float(rng.uniform(*ZOOM)), 3),
        shift=(round(float(rng.uniform(-SHIFT, SHIFT)), 3), round(float(rng.uniform(-SHIFT, SHIFT)), 3)),
        motion=motion,
    )
    return plan, rng


def sentence_speech(language: str, rng: np.random.Generator):
    """(text, Speech) of a random sentence whose speech lasts MIN_SECONDS..MAX_SECONDS (as near as a few
    tries get)."""
    from ..audio.tts import synthesize

    words = _words(language)
    n = int(rng.integers(5, 10))
    best = None
    for _ in range(MAX_TRIES):
        text = " ".join(rng.choice(words, size=n))
        text = text[0].upper() + text[1:] + "."
        speech = synthesize(text, voice=language)
        best = (text, speech)
        if speech.duration > MAX_SECONDS:
            n = max(1, n - 2)
        elif speech.duration < MIN_SECONDS:
            n += 2
        else:
            break
    return best


@lru_cache(maxsize=None)
def _portrait_face(name: str) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A bundled portrait and its largest face's landmark box (x0, y0, x1, y1)."""
    from ..assets import portrait
    from ..face.landmarks import detect_all

    image = portrait(name)
    pts = detect_all(image)[0]
    return image, (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))


def effective_zoom(plan: ClipPlan, size: int) -> float:
    """The plan's zoom, lowered where needed so the face stays FACE_MARGIN x the smallest face the engine
    animates (face.landmarks.MIN_FACE_WIDTH) at this output size."""
    from ..face.landmarks import MIN_FACE_WIDTH

    _, (x0, y0, x1, y1) = _portrait_face(plan.portrait)
    largest = (x1 - x0) / max(x1 - x0, y1 - y0) * size / (FACE_MARGIN * MIN_FACE_WIDTH)
    return round(min(plan.zoom, largest), 3)


def portrait_variant(plan: ClipPlan, size: int) -> np.ndarray:
    """The plan's square crop of its portrait (flipped, zoomed, shifted), size x size RGB."""
    image, (x0, y0, x1, y1) = _portrait_face(plan.portrait)
    h, w = image.shape[:2]
    if plan.flip:
        image = image[:, ::-1]
        x0, x1 = w - x1, w - x0
    face = max(x1 - x0, y1 - y0)
    side = int(round(min(effective_zoom(plan, size) * face, w, h)))
    cx = (x0 + x1) / 2 + plan.shift[0] * face
    cy = (y0 + y1) / 2 - 0.06 * (y1 - y0) + plan.shift[1] * face
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    crop = image[top:top + side, left:left + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=interp))


def render_clip(plan: ClipPlan, rng: np.random.Generator, folder: Path, size: int) -> Path:
    """Render NAME.mp4 (warp engine, espeak-ng speech) and write NAME.json with the true phone timings."""
    from ..service import render_to_file
    from ..systems.warp.engine import Animator

    text, speech = sentence_speech(plan.language, rng)
    config = AnimateConfig(motion=plan.motion, render=RenderConfig(fps=FPS, size=size, crop="full"))
    animator = Animator(Portrait(portrait_variant(plan, size), f"{plan.portrait}"), config, warn=False)
    video = render_to_file(animator, speech, folder / f"{plan.name}.mp4")
    meta = {
        "name": plan.name,
        "language": plan.language,
        "text": text,
        "portrait": plan.portrait,
        "flip": plan.flip,
        "zoom": effective_zoom(plan, size),
        "shift": list(plan.shift),
        "size": size,
        "fps": FPS,
        "seconds": round(speech.duration, 4),
        "frames": animator.n_frames(speech),
        "motion": asdict(plan.motion),
        "phones": [{"phone": p.phone, "start": round(p.start, 4), "end": round(p.end, 4)} for p in speech.phones],
    }
    tmp = folder / f".{plan.name}.json.part"
    tmp.write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, folder / f"{plan.name}.json")
    return video


def synth(dataset_dir: str | os.PathLike, clips: int = 20, size: int = 256, seed: int = 0,
          languages: tuple[str, ...] = LANGUAGES, progress: bool = True) -> list[Path]:
    """Render `clips` SynthTalk videos into `dataset_dir` (NAME.mp4 + NAME.json each); returns the mp4 paths.

    Clips already there (same seed, same index) are kept, so an interrupted run continues where it stopped.
    """
    from ..audio.tts import list_voices

    folder = Path(dataset_dir).expanduser()
    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise InputError(f"must be a whole number >= 1, got {clips!r}", "e.g. 20", field="clips")
    if isinstance(size, bool) or not isinstance(size, int) or not 64 <= size <= 2048 or size % 2:
        raise InputError(f"must be an even whole number from 64 to 2048, got {size!r}", "e.g. 256", field="size")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"must be a whole number >= 0, got {seed!r}", "e.g. 0", field="seed")
    languages = tuple(languages)
    known = {v.lower() for v in list_voices()}
    unknown = [lang for lang in languages if lang.lower() not in known]
    if not languages or unknown:
        raise InputError(f"unknown or missing languages: {unknown or 'none given'}",
                         f"use espeak-ng language codes with a word list, e.g. {', '.join(LANGUAGES)}")
    for lang in languages:
        _words(lang)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file", "choose a folder for the clips")
    folder.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    paths = []
    for k in tqdm(range(clips), unit="clip", desc="synth", disable=not progress):
        plan, rng = plan_clip(seed, k, languages)
        video, meta = folder / f"{plan.name}.mp4", folder / f"{plan.name}.json"
        if not (video.is_file() and meta.is_file()):
            render_clip(plan, rng, folder, size)
        paths.append(video)
    return paths
