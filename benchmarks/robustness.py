"""The robustness corpus: hard portraits made from the bundled ones, speech in five languages, and the
eval card over every case.

    python benchmarks/robustness.py            # render every case, full card (sync, mouth, blinks, identity)
    python benchmarks/robustness.py --quick    # sync check only, frames kept in memory (what the test runs)
    python benchmarks/robustness.py --sheet docs/robustness.png   # and a contact sheet of the corpus,
                                                                  # cut from each video's own --preview

Portraits: astronaut (skimage) and Grace Hopper (matplotlib), and variants of them: rotated +-20 deg,
off-centre in a wide frame, grayscale, 80 px and 5000 px images, JPEG quality 15, a gloved hand and a
bare hand of the face's own colour drawn over the cheek (also in deep shadow, and only the fingers of a
hand whose palm is outside the picture: two hands MediaPipe Hands does not find), clear glasses and
sunglasses drawn on, an open mouth (also a wide-open one, and ones with a tongue drawn sticking out:
refused) and a turned head made by our own warp, the astronaut's smile with her own and with drawn
teeth, and skimage's cameraman (a
real, small three-quarter face looking down). Speech: espeak-ng in English (with its phone timings,
so the card can score bilabials and open vowels), French, Italian, Russian and Mandarin (acoustic
mouth, no transcript), plus real read English (LibriVox) aligned by pocketsphinx. Each case either
renders and passes the card's sync check or is refused with an InputError; its `expect` says which.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from talkinghead.assets import portrait as bundled
from talkinghead.audio.features import n_frames  # noqa: F401  (the frame count a clip must have)
from talkinghead.assets import speech_path
from talkinghead.config import AnimateConfig
from talkinghead.errors import InputError
from talkinghead.types import Speech

# ----------------------------------------------------------------------------------- speech

TEXTS = {  # voice -> a short utterance with a pause, open vowels and bilabials
    "en-us": "Bob made a map of the park. Father saw a cat and a bat.",
    "fr": "Papa a mangé la tarte. Ma mère parle à Paris.",
    "it": "La mamma mangia la pasta. Babbo parla piano.",
    "ru": "Мама мыла раму. Папа пил чай с бабушкой.",
    "cmn": "妈妈骂马吗？爸爸在北京吃饭，我们八点半走。",
}
ACOUSTIC = ("fr", "it", "ru", "cmn")  # rendered without phones: the mouth follows the sound alone


def speech(voice: str, phones: bool | None = None) -> Speech:
    """espeak-ng speech for `voice`. English keeps the synthesizer's phone timings (a transcript);
    the other languages drop them, so the mouth follows the acoustics as it would for a user's file."""
    from talkinghead.audio.tts import synthesize

    s = synthesize(TEXTS[voice], voice=voice)
    keep = (voice not in ACOUSTIC) if phones is None else phones
    return s if keep else Speech(s.samples, s.sample_rate, None, None, s.source)


def librivox(name: str = "librivox_0870") -> tuple[Speech, str]:
    from talkinghead.io import load_audio

    wav, text = speech_path(name)
    return load_audio(wav), text


# ----------------------------------------------------------------------------------- portraits

def _face_box(img: np.ndarray) -> tuple[float, float, float, float]:
    from talkinghead.face import detect_all

    p = detect_all(img)[0]
    return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())


def _landmarks(img: np.ndarray) -> np.ndarray:
    from talkinghead.face import detect_all

    return detect_all(img)[0]


def rotated(img: np.ndarray, degrees: float) -> np.ndarray:
    x0, y0, x1, y1 = _face_box(img)
    m = cv2.getRotationMatrix2D(((x0 + x1) / 2, (y0 + y1) / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def off_centre(img: np.ndarray) -> np.ndarray:
    """The portrait at 3/4 size against the right edge of a wide (4:1), plain frame, cut below the chin."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (w * 3 // 4, h * 3 // 4), interpolation=cv2.INTER_AREA)
    canvas = np.full((h // 2, w * 2, 3), (196, 204, 188), np.uint8)
    canvas[:, canvas.shape[1] - small.shape[1]:] = small[:h // 2]
    return canvas


def grayscale(img: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def resized(img: np.ndarray, side: int, face_fill: float | None = None) -> np.ndarray:
    """Longest side `side` px; with `face_fill`, first cropped so the face spans that share of the width."""
    if face_fill is not None:
        x0, y0, x1, y1 = _face_box(img)
        half = (x1 - x0) / face_fill / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        a, b = int(max(cx - half, 0)), int(max(cy - half, 0))
        img = img[b:int(cy + half), a:int(cx + half)]
    h, w = img.shape[:2]
    s = side / max(h, w)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def hand(img: np.ndarray) -> np.ndarray:
    """A gloved hand (red wool) drawn over the image-left cheek beside the mouth: palm, four fingers,
    creases and an outline, leaving the lips visible."""
    p = _landmarks(img)
    out = img.copy()
    iod = float(np.linalg.norm(p[468, :2] - p[473, :2]))
    corner = p[61, :2]
    palm_c = corner + np.array([-0.5, 0.25]) * iod
    tone = (172, 38, 46)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(mask, tuple(np.round(palm_c).astype(int)), (int(0.45 * iod), int(0.6 * iod)), 25, 0, 360, 255, -1)
    tips = []
    for k in range(4):  # fingers reach up across the cheek, towards the eye
        base = palm_c + np.array([-0.35 + 0.2 * k, -0.35]) * iod
        tip = base + np.array([0.12 + 0.04 * k, -0.75 + 0.1 * abs(k - 1.5)]) * iod
        tips.append((base, tip))
        cv2.line(mask, tuple(np.round(base).astype(int)), tuple(np.round(tip).astype(int)), 255,
                 max(2, int(0.16 * iod)))
    shade = np.zeros_like(out)
    shade[:] = tone
    yy = np.linspace(0.9, 1.1, img.shape[0], dtype=np.float32)[:, None, None]
    shade = np.clip(shade * yy, 0, 255).astype(np.uint8)
    soft = cv2.GaussianBlur(mask, (0, 0), 1.0).astype(np.float32)[..., None] / 255
    out = (out * (1 - soft) + shade * soft).astype(np.uint8)
    edges = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    out[edges > 0] = (out[edges > 0] * 0.55).astype(np.uint8)
    for base, tip in tips[1:]:  # creases between the fingers
        mid = (base + tip) / 2
        cv2.line(out, tuple(np.round(mid).astype(int)), tuple(np.round(mid + (tip - base) * 0.1).astype(int)),
                 (90, 20, 24), 1, cv2.LINE_AA)
    return out


def bare_hand(img: np.ndarray) -> np.ndarray:
    """A bare hand of the portrait's own skin colour laid on the image-left cheek beside the mouth:
    palm, four fingers reaching up towards the eye and a thumb towards the mouth, rounded by shading,
    with finger gaps, knuckle creases, nails and a little skin grain. There is no photo of a real hand
    among the packages; MediaPipe Hands finds this one (and not a hand on the plain portraits)."""
    p = _landmarks(img)
    iod = float(np.linalg.norm(p[468, :2] - p[473, :2]))
    return _skin_hand(img, p, p[61, :2] + np.array([-0.55, 0.35]) * iod, -20.0)


def fingers_from_edge(img: np.ndarray) -> np.ndarray:
    """Only the fingers of a hand whose palm is outside the picture: the portrait cut off at the left a
    little beside the jaw, and four skin-coloured fingers entering from that edge across the cheek towards
    the mouth corner (a hand resting on the face, seen past the frame). No palm, no thumb: MediaPipe
    Hands, which starts from a palm detector, does not find it."""
    p = _landmarks(img)
    iod = float(np.linalg.norm(p[468, :2] - p[473, :2]))
    corner = p[61, :2]
    palm_c = corner + np.array([-1.3, -0.05]) * iod
    out = _skin_hand(img, p, palm_c, 80.0, palm=False, thumb=False, lengths=(0.85, 0.95, 0.9, 0.8))
    return np.ascontiguousarray(out[:, int(round(palm_c[0] + 0.3 * iod)):])


def hand_in_shadow(img: np.ndarray) -> np.ndarray:
    """The bare hand of `bare_hand` in deep shadow (or of a darker-skinned person): the same shape at 45% of
    the face's skin lightness, so it is neither the face's colour nor far from its hue. MediaPipe Hands
    does not find it."""
    p = _landmarks(img)
    iod = float(np.linalg.norm(p[468, :2] - p[473, :2]))
    return _skin_hand(img, p, p[61, :2] + np.array([-0.55, 0.35]) * iod, -20.0, tone=0.45)


def beard(img: np.ndarray, seed: int = 0) -> np.ndarray:
    """A dark beard drawn below the nose, off the lips: a soft dark shade and many short hair strands,
    mostly hanging down (a case for the hand cues: hair is full of parallel dark lines, but not fingers)."""
    from talkinghead.face import regions as R

    p = _landmarks(img)
    iod = float(np.linalg.norm(p[468, :2] - p[473, :2]))
    area = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(area, [np.round(p[list(R.FACE_OVAL), :2]).astype(np.int32)], 255)
    area[: int(p[2, 1] + 0.05 * iod)] = 0  # below the nose
    lips = np.concatenate([p[list(R.LIPS_OUTER_UPPER), :2], p[list(R.LIPS_OUTER_LOWER[::-1]), :2]])
    cv2.fillPoly(area, [np.round(lips).astype(np.int32)], 0)
    rng = np.random.default_rng(seed)
    ys, xs = np.nonzero(area)
    hair = np.zeros(img.shape[:2], np.float32)
    for i in rng.choice(len(xs), size=min(len(xs), int(0.6 * iod * iod)), replace=False):
        a, length = np.radians(90 + rng.normal(0, 20)), rng.uniform(0.03, 0.09) * iod
        q = np.array([xs[i], ys[i]], float)
        cv2.line(hair, tuple(np.round(q).astype(int)), tuple(np.round(q + length * np.array([np.cos(a), np.sin(a)])).astype(int)),
                 1.0, 1, cv2.LINE_AA)
    inside = area > 0
    alpha = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 0.05 * iod) * 0.35
    alpha = np.clip(alpha + 0.6 * np.clip(cv2.GaussianBlur(hair, (0, 0), 0.5), 0, 1) * inside, 0, 0.9)[..., None]
    out = img * (1 - alpha) + np.array([50, 38, 30], np.float32) * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def _skin_hand(img: np.ndarray, p: np.ndarray, palm_c: np.ndarray, degrees: float, palm: bool = True,
               thumb: bool = True, lengths=(0.75, 0.85, 0.8, 0.62), tone: float = 1.0) -> np.ndarray:
    """A hand of the portrait's skin colour (times `tone`) drawn at `palm_c`, its fingers pointing `degrees`
    from straight up (clockwise); shaded, with finger gaps, knuckle creases, nails and grain."""
    iod = float(np.linalg.norm(p[468, :2] - p[473, :2]))
    patches = [img[int(y) - 3:int(y) + 4, int(x) - 3:int(x) + 4].reshape(-1, 3) for x, y in p[[50, 205, 280, 425], :2]]
    skin = np.median(np.concatenate(patches), axis=0).astype(np.float32) * tone
    turn = np.radians(degrees)
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    at = lambda v: tuple(np.round(v).astype(int))  # noqa: E731
    mask = np.zeros(img.shape[:2], np.uint8)
    if palm:
        cv2.ellipse(mask, at(palm_c), (int(0.42 * iod), int(0.5 * iod)), -5, 0, 360, 255, -1, cv2.LINE_AA)
    fingers = []
    for k, length in enumerate(lengths):  # index .. little finger
        base = palm_c + rot @ (np.array([-0.3 + 0.2 * k, -0.38]) * iod)
        tip = base + rot @ (np.array([0.05 * (k - 1.5), -length]) * iod)
        fingers.append((base, tip))
        cv2.line(mask, at(base), at(tip), 255, max(2, int(0.17 * iod)), cv2.LINE_AA)
    if thumb:
        t = palm_c + rot @ (np.array([0.35, 0.05]) * iod)
        cv2.line(mask, at(t), at(t + rot @ (np.array([0.35, -0.35]) * iod)), 255, max(2, int(0.19 * iod)), cv2.LINE_AA)
    # rounded: darker towards the outline, grain from seeded noise
    depth = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 3)
    shade = (0.72 + 0.33 * np.sqrt(np.clip(depth / (0.08 * iod), 0, 1)))[..., None] * skin * [1.02, 0.97, 0.95]
    grain = cv2.GaussianBlur(np.random.default_rng(0).normal(0, 6, img.shape[:2]).astype(np.float32), (0, 0), 1.0)
    alpha = cv2.GaussianBlur(mask, (0, 0), 0.8).astype(np.float32)[..., None] / 255
    out = img * (1 - alpha) + (shade + grain[..., None]) * alpha
    colour = lambda f, add=0.0: tuple(float(v) for v in np.minimum(skin * f + add, 255))  # noqa: E731
    for (b1, t1), (b2, t2) in zip(fingers[:-1], fingers[1:]):  # the gaps between the fingers
        root = (b1 + b2) / 2
        cv2.line(out, at(root), at(root + ((t1 + t2) / 2 - root) * 0.9), colour(0.45), max(1, int(0.02 * iod)),
                 cv2.LINE_AA)
    for base, tip in fingers:
        along = (tip - base) / np.linalg.norm(tip - base)
        across = np.array([-along[1], along[0]]) * 0.05 * iod
        for f in (0.35, 0.65):  # knuckle creases
            q = base + (tip - base) * f
            cv2.line(out, at(q - across), at(q + across), colour(0.7), 1, cv2.LINE_AA)
        cv2.ellipse(out, at(base + (tip - base) * 0.88), (max(1, int(0.05 * iod)), max(1, int(0.07 * iod))), -20,
                    0, 360, colour(1.15, 20), -1, cv2.LINE_AA)  # nail
    return np.clip(out, 0, 255).astype(np.uint8)


def glasses(img: np.ndarray, dark: bool = False) -> np.ndarray:
    """Round glasses drawn over both eyes: rims, bridge and temples; dark lenses for sunglasses."""
    p = _landmarks(img)
    out = img.copy()
    iod = float(np.linalg.norm(p[468, :2] - p[473, :2]))
    thick = max(2, int(round(0.05 * iod)))
    axes = (int(0.42 * iod), int(0.3 * iod))
    centres = []
    for iris, outer in ((468, 33), (473, 263)):
        c = p[iris, :2] + np.array([0.0, 0.04 * iod])
        centres.append(c)
        ci = tuple(np.round(c).astype(int))
        if dark:
            lens = out.copy()
            cv2.ellipse(lens, ci, axes, 0, 0, 360, (22, 24, 30), -1, cv2.LINE_AA)
            out = cv2.addWeighted(out, 0.12, lens, 0.88, 0)
        cv2.ellipse(out, ci, axes, 0, 0, 360, (30, 26, 24), thick, cv2.LINE_AA)
        side = p[outer, :2] + np.sign(p[outer, 0] - c[0]) * np.array([0.35 * iod, 0.0])
        cv2.line(out, tuple(np.round(c + np.sign(side[0] - c[0]) * np.array([axes[0], 0])).astype(int)),
                 tuple(np.round(side).astype(int)), (30, 26, 24), thick, cv2.LINE_AA)
    a, b = centres
    mid = (a + b) / 2 - np.array([0.0, 0.08 * iod])
    cv2.line(out, tuple(np.round(a + [axes[0], 0]).astype(int)), tuple(np.round(mid).astype(int)), (30, 26, 24), thick, cv2.LINE_AA)
    cv2.line(out, tuple(np.round(mid).astype(int)), tuple(np.round(b - [axes[0], 0]).astype(int)), (30, 26, 24), thick, cv2.LINE_AA)
    return out


def tongue_out(img: np.ndarray, jaw: float = 0.7) -> np.ndarray:
    """An open mouth (our own warp) with a tongue drawn sticking out over the lower lip."""
    out = warped(img, jaw=jaw)
    p = _landmarks(out)
    iod = float(np.linalg.norm(p[468, :2] - p[473, :2]))
    top = p[14, :2]  # lower inner lip, centre
    centre = top + np.array([0.0, 0.12 * iod])
    axes = (int(0.2 * iod), int(0.17 * iod))
    tongue = out.copy()
    cv2.ellipse(tongue, tuple(np.round(centre).astype(int)), axes, 0, 0, 360, (196, 92, 104), -1, cv2.LINE_AA)
    cv2.line(tongue, tuple(np.round(top).astype(int)), tuple(np.round(centre + [0, 0.1 * iod]).astype(int)),
             (160, 64, 78), max(1, int(0.02 * iod)), cv2.LINE_AA)
    return cv2.addWeighted(out, 0.1, tongue, 0.9, 0)


def warped(img: np.ndarray, size: int = 512, **motion) -> np.ndarray:
    """The portrait with one expression/pose applied by our own warp (e.g. jaw=0.9: an open mouth)."""
    from talkinghead.face import prepare
    from talkinghead.render import WarpRenderer
    from talkinghead.types import MotionFrame, Portrait

    por, face = prepare(Portrait(img, "warp"), size)
    r = WarpRenderer(por, face)
    r.mouth.teeth = None  # the drawn interior throughout: the case stays the same whatever teeth the portrait shows
    return r.render(MotionFrame(**motion))


def cameraman() -> np.ndarray:
    """skimage's cameraman: a real three-quarter face looking down into a camera, grayscale, 54 px wide."""
    import skimage.data

    return np.repeat(skimage.data.camera()[..., None], 3, axis=2)


@dataclass
class Case:
    name: str
    voice: str  # espeak-ng voice of its speech
    expect: str  # "render": renders and passes the sync check; "refuse": an InputError with a clear message
    build: object  # () -> RGB image
    teeth: str = "auto"  # the teeth control it renders with


def cases() -> list[Case]:
    a = lambda: bundled("astronaut")  # noqa: E731
    g = lambda: bundled("grace_hopper")  # noqa: E731
    return [
        Case("astronaut", "en-us", "render", a),
        Case("grace_hopper", "cmn", "render", g),
        Case("rotated_+20", "fr", "render", lambda: rotated(a(), 20)),
        Case("rotated_-20", "cmn", "render", lambda: rotated(g(), -20)),
        Case("off_centre", "it", "render", lambda: off_centre(a())),
        Case("grayscale", "ru", "render", lambda: grayscale(g())),
        Case("tiny_80px", "en-us", "render", lambda: resized(a(), 80, face_fill=0.6)),
        Case("tiny_face_in_80px", "fr", "refuse", lambda: resized(a(), 80)),
        Case("huge_5000px", "it", "render", lambda: resized(g(), 5000)),
        Case("jpeg_q15", "cmn", "render", lambda: jpeg(a(), 15)),
        Case("gloved_hand", "en-us", "render", lambda: hand(a())),
        Case("bare_hand", "it", "render", lambda: bare_hand(a())),
        Case("bare_hand_grace", "en-us", "render", lambda: bare_hand(g())),
        Case("bare_hand_grayscale", "ru", "render", lambda: grayscale(bare_hand(g()))),
        Case("fingers_from_edge", "fr", "render", lambda: fingers_from_edge(g())),  # MediaPipe Hands misses these two
        Case("hand_in_shadow", "cmn", "render", lambda: hand_in_shadow(g())),
        Case("glasses", "ru", "render", lambda: glasses(g())),
        Case("sunglasses", "cmn", "render", lambda: glasses(a(), dark=True)),
        Case("open_mouth", "en-us", "render", lambda: warped(a(), jaw=0.9)),
        Case("wide_open_mouth", "fr", "refuse", lambda: warped(a(), jaw=2.4)),
        Case("tongue_out", "cmn", "refuse", lambda: tongue_out(a())),
        Case("tongue_out_grace", "en-us", "refuse", lambda: tongue_out(g(), jaw=0.45)),
        Case("own_teeth", "fr", "render", a, teeth="own"),  # the astronaut's smile shows her upper teeth
        Case("drawn_teeth", "en-us", "render", a, teeth="drawn"),
        Case("turned_20_looking_down", "cmn", "render", lambda: warped(g(), yaw=20, pitch=10)),
        Case("cameraman", "en-us", "render", cameraman),
    ]


# ----------------------------------------------------------------------------------- running

def config(size: int, teeth: str = "auto") -> AnimateConfig:
    c = AnimateConfig()
    c.render.size = size
    c.render.teeth = teeth
    return c.validate()


def render_frames(image: np.ndarray, sp: Speech, size: int, teeth: str = "auto") -> list[np.ndarray]:
    """Every frame of the clip, in memory (raises InputError when the portrait is refused)."""
    from talkinghead.systems.warp.engine import Animator
    from talkinghead.types import Portrait

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anim = Animator(Portrait(image, "corpus"), config(size, teeth), warn=False)
        return list(anim.frames(sp))


def sync_check(frames: list[np.ndarray], sp: Speech, fps: float = 25.0) -> dict:
    """The eval card's sync group on frames in memory (the same aperture and sync code the card runs)."""
    from talkinghead.eval.sync import aperture_series, sync_metrics

    values, reasons, _ = sync_metrics(aperture_series(frames), sp.samples, fps)
    return {**values, "missing": reasons}


def full_card(image: np.ndarray, sp: Speech, size: int, tmp: Path, name: str, text: str | None = None,
              preview: Path | None = None, teeth: str = "auto") -> dict:
    """Render to mp4 through the public API and score it with the whole eval card."""
    from talkinghead.api import animate
    from talkinghead.eval.card import evaluate

    out = tmp / f"{name}.mp4"
    ref = tmp / f"{name}.png"
    cv2.imwrite(str(ref), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        animate(image, sp, out, text=text, config=config(size, teeth), preview=preview)
        return evaluate(out, audio=sp if text is None else None, ref=str(ref), text=text)


def _f(v, fmt="{:.2f}") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "pass" if v else "FAIL"
    return fmt.format(v)


HEADER = ("| case | voice | result | offset (fr) | confidence | sync | open vowels | bilabials | blinks/min | identity |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def row(name: str, voice: str, result: str, card: dict | None) -> str:
    if card is None:
        return f"| {name} | {voice} | {result} | — | — | — | — | — | — | — |"
    s, m = card["sync"], card.get("mouth", {})
    st, idn = card.get("stability", {}), card.get("identity", {})
    ident = idn.get("distance_mean", idn.get("mean_distance"))
    if ident is None:
        ident = next((v for k, v in idn.items() if "dist" in k and isinstance(v, float)), None)
    return (f"| {name} | {voice} | {result} | {_f(s.get('offset_frames'), '{:+d}')} | {_f(s.get('confidence'))} | "
            f"{_f(s.get('passed'))} | {_f(m.get('open_vowel_rate'))} | {_f(m.get('bilabial_closure'))} | "
            f"{_f(st.get('blinks_per_min'), '{:.0f}')} | {_f(ident)} |")


def run(quick: bool, size: int, only: list[str] | None = None, sheet: Path | None = None) -> list[str]:
    rows = [HEADER]
    thumbs = []
    voices: dict[str, Speech] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for case in cases():
            if only and case.name not in only:
                continue
            sp = voices.setdefault(case.voice, speech(case.voice))
            t0 = time.perf_counter()
            try:
                image = case.build()
                if quick:
                    frames = render_frames(image, sp, size, case.teeth)
                    card = {"sync": sync_check(frames, sp)}
                else:
                    preview = tmp / f"{case.name}.preview.png" if sheet is not None else None
                    card = full_card(image, sp, size, tmp, case.name, preview=preview, teeth=case.teeth)
                    if preview is not None:
                        thumbs.append((f"{case.name} ({case.voice})", preview_frame(preview)))
                result = "rendered"
            except InputError as e:
                card, result = None, f"refused: {e.message}"
                if sheet is not None:
                    thumbs.append((f"{case.name}: refused", cv2.resize(image, (PREVIEW_THUMB, PREVIEW_THUMB),
                                                                         interpolation=cv2.INTER_AREA)))
            if case.expect == "render" and card is not None and not card["sync"].get("passed"):
                result += " (sync FAIL)"
            elif case.expect != ("render" if card is not None else "refuse"):
                result += f" (expected {case.expect})"
            rows.append(row(case.name, case.voice, result, card) + f" {time.perf_counter() - t0:.1f} s")
            print(rows[-1], flush=True)
        if not quick and not only or (only and "librivox" in only):
            for who in ("astronaut", "grace_hopper"):
                for name in ("librivox_0870", "librivox_0880"):
                    sp, text = librivox(name)
                    card = full_card(bundled(who), sp, size, tmp, f"{who}_{name}", text=text)
                    rows.append(row(f"{who} + {name} (aligned)", "en", "rendered", card))
                    print(rows[-1], flush=True)
    if sheet is not None and thumbs:
        write_sheet(thumbs, sheet)
    return rows


def hand_cues(sizes=(192, 256, 512)) -> list[str]:
    """Which hand cue fires on which portrait: MediaPipe Hands (a hand reaching the face) and the finger lines
    (face.hands.finger_lines), on every rendered case of the corpus, bearded variants and the astronaut's
    fingers from the edge, at each output size. Cases named for a hand should be found by one cue at every
    size; the others by none."""
    from talkinghead.face import prepare
    from talkinghead.face.hands import DENSE, detect_hands, finger_lines, finger_score, hand_region
    from talkinghead.face import regions as R
    from talkinghead.types import Portrait

    builds = {c.name: c.build for c in cases() if c.expect == "render" and c.name not in ("own_teeth", "drawn_teeth")}
    builds["beard"] = lambda: beard(bundled("astronaut"))
    builds["beard_grace"] = lambda: beard(bundled("grace_hopper"))
    builds["beard_grayscale"] = lambda: grayscale(beard(bundled("grace_hopper")))
    builds["fingers_from_edge_astronaut"] = lambda: fingers_from_edge(bundled("astronaut"))
    rows = ["| portrait | hand drawn | MediaPipe Hands (per size) | finger lines (per size) | line score (per size) |",
            "|---|---|---|---|---|"]
    print("\n".join(rows), flush=True)
    tally = {True: [0, 0, 0, 0], False: [0, 0, 0, 0]}  # hand drawn -> [runs, MediaPipe, lines, either]
    for name, build in builds.items():
        img = build()
        drawn = "hand" in name or "fingers" in name
        mp, fl, sc = [], [], []
        for size in sizes:
            por, face = prepare(Portrait(img, name), size)
            oval = np.zeros(por.image.shape[:2], np.uint8)
            o = face.landmarks[list(R.FACE_OVAL), :2]
            c = o.mean(axis=0)
            cv2.fillPoly(oval, [np.round(c + 1.6 * (o - c)).astype(np.int32)], 255)
            near = any((hand_region(h, oval.shape) & oval).any() for h in detect_hands(por.image))
            lines = bool(finger_lines(por.image, face.landmarks).any())
            mp.append("yes" if near else "no")
            fl.append("yes" if lines else "no")
            sc.append(f"{finger_score(por.image, face.landmarks):.3f}")
            t = tally[drawn]
            t[0], t[1], t[2], t[3] = t[0] + 1, t[1] + near, t[2] + lines, t[3] + (near or lines)
        rows.append(f"| {name} | {'yes' if drawn else 'no'} | {' / '.join(mp)} | {' / '.join(fl)} | {' / '.join(sc)} |")
        print(rows[-1], flush=True)
    h, b = tally[True], tally[False]
    rows.append(f"sizes {sizes}, lines fire over {DENSE}. With a hand: {h[0]} runs, MediaPipe finds {h[1]}, the lines "
                f"{h[2]}, one or the other {h[3]}. Without: {b[0]} runs, MediaPipe fires on {b[1]}, the lines on {b[2]}.")
    return rows


PREVIEW_THUMB = 256  # px, the side of each frame on a --preview contact sheet (api.write_contact_sheet)
PREVIEW_PICK = 5  # which of the preview's frames (0..11, evenly spaced over the clip) goes on the corpus sheet


def preview_frame(path: Path, pick: int = PREVIEW_PICK) -> np.ndarray:
    """One frame cut out of a --preview contact sheet (4 columns of PREVIEW_THUMB px thumbnails)."""
    from talkinghead.service import PREVIEW_COLUMNS

    grid = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    r, c = divmod(pick, PREVIEW_COLUMNS)
    return grid[r * PREVIEW_THUMB:(r + 1) * PREVIEW_THUMB, c * PREVIEW_THUMB:(c + 1) * PREVIEW_THUMB]


def write_sheet(thumbs: list[tuple[str, np.ndarray]], path: Path, side: int = 170, columns: int = 5) -> None:
    rows = -(-len(thumbs) // columns)
    grid = np.full((rows * (side + 18), columns * side, 3), 255, np.uint8)
    for i, (name, f) in enumerate(thumbs):
        r, c = divmod(i, columns)
        t = cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA)
        y = r * (side + 18)
        grid[y:y + side, c * side:(c + 1) * side] = t
        cv2.putText(grid, name, (c * side + 3, y + side + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    save_small_png(grid, path)


def save_small_png(rgb: np.ndarray, path: Path) -> None:
    """A 256-colour PNG (a few hundred KB for the whole corpus, small enough for the README)."""
    from PIL import Image

    Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="sync check only, frames in memory")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--only", nargs="*", help="case names (and/or 'librivox')")
    ap.add_argument("--sheet", type=Path, help="write a PNG contact sheet: one frame per case from its --preview")
    ap.add_argument("--hands", action="store_true", help="only report which hand cue fires on which portrait")
    args = ap.parse_args(argv)
    if args.hands:
        print(hand_cues()[-1])
        return 0
    t = time.perf_counter()
    rows = run(args.quick, args.size, args.only, args.sheet)
    print("\n" + "\n".join(rows))
    print(f"\n{len(rows) - 1} cases in {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
