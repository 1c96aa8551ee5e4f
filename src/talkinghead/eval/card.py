"""The metrics card: one pass over a talking-head video, every group of metrics, a stable JSON schema.

    card = evaluate("talk.mp4", audio=None, ref="portrait.png", text="the words spoken")
    print(format_table(card))

Schema `talkinghead.eval/1` (documented metric by metric in the README, "Evaluation"):
top level {schema, video, container, sync, mouth, identity, stability}; each group is a flat dict
of metrics plus `missing`: {metric: reason} for every metric that is None. Nothing is ever
estimated or filled in: a metric that cannot be computed is None with its reason.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from ..errors import InputError, UnreadableMediaError, UnsupportedFormatError
from ..face.landmarks import N_LANDMARKS, detect_all
from ..face.regions import mouth_aperture
from ..io import load_audio, probe
from ..types import SAMPLE_RATE, Speech
from . import mouth as M
from . import stability as S
from .sync import sync_metrics

SCHEMA = "talkinghead.eval/1"
GROUPS = ("container", "sync", "mouth", "identity", "stability")
SAMPLED_FRAMES = 25  # evenly spaced frames kept for identity, background and sharpness
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


@dataclass
class Scan:
    """What one decoding pass over the video keeps."""

    fps: float
    landmarks: np.ndarray  # (n, 478, 3) pixels, NaN rows where no face was found
    aperture: np.ndarray  # (n,) inner-lip opening / inter-ocular distance
    sampled: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> RGB frame
    sharpness: list[float] = field(default_factory=list)  # mouth sharpness of the sampled frames


@dataclass
class Series:
    """Per-frame series behind the sync numbers (for --plot)."""

    fps: float
    aperture: np.ndarray
    envelope: np.ndarray | None = None
    lags: np.ndarray | None = None
    correlation: np.ndarray | None = None
    landmarks: np.ndarray | None = None  # (n, 478, 3)
    sampled: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> RGB (identity, FID/KID)

    @property
    def frames(self) -> list[np.ndarray]:
        return list(self.sampled.values())


def scan(path: Path, n_frames: int, keep: int = SAMPLED_FRAMES) -> Scan:
    """Decode every frame once: FaceMesh landmarks and mouth aperture per frame; `keep` evenly spaced
    frames (and their mouth sharpness) for the metrics that compare images."""
    picks = set(np.linspace(0, max(n_frames - 1, 0), min(keep, max(n_frames, 1))).round().astype(int).tolist())
    lms, aps, sampled, sharp = [], [], {}, []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        for i, frame in enumerate(container.decode(stream)):
            rgb = frame.to_ndarray(format="rgb24")
            faces = detect_all(rgb)
            pts = faces[0] if faces else np.full((N_LANDMARKS, 3), np.nan, np.float32)
            lms.append(pts)
            aps.append(mouth_aperture(pts) if faces else np.nan)
            if i in picks:
                sampled[i] = rgb
                if faces:
                    s = M.sharpness(rgb, pts)
                    if s is not None:
                        sharp.append(s)
    landmarks = np.stack(lms) if lms else np.zeros((0, N_LANDMARKS, 3), np.float32)
    return Scan(float(rate), landmarks, np.array(aps, np.float64), sampled, sharp)


def _group(values: dict, reasons: dict) -> dict:
    """A card group: the values, then `missing` with a reason for every None value."""
    missing = {k: reasons.get(k, "could not be computed") for k, v in values.items() if v is None}
    return {**values, "missing": missing}


def _container(info: dict) -> dict:
    has_audio = info["audio_codec"] is not None
    values = {
        "fps": info["fps"], "frames": info["n_frames"], "width": info["width"], "height": info["height"],
        "video_codec": info["video_codec"], "audio_codec": info["audio_codec"],
        "video_duration_s": info["video_duration"], "audio_duration_s": info["audio_duration"],
        # signed: positive = the audio track runs longer than the video
        "av_mismatch_ms": (1000.0 * (info["audio_duration"] - info["video_duration"])
                           if has_audio and info["video_duration"] is not None else None),
    }
    no_audio = "the file has no audio track"
    return _group(values, {"audio_codec": no_audio, "audio_duration_s": no_audio, "av_mismatch_ms": no_audio})


def _speech(video: Path, audio, info: dict) -> tuple[Speech | None, str | None]:
    """The speech to judge the video against: --audio when given, else the video's own track."""
    if audio is not None:
        return (audio if isinstance(audio, Speech) else load_audio(audio, max_seconds=None)), None
    if info["audio_codec"] is None:
        return None, "the video has no audio track and no audio was given"
    return load_audio(video, max_seconds=None), None


def _reference(ref):
    """(RGB image, landmarks or None) of the reference portrait, or (None, None)."""
    if ref is None:
        return None, None
    from ..io import as_portrait

    image = as_portrait(ref, field="ref").image
    faces = detect_all(image)
    return image, (faces[0] if faces else None)


def evaluate(video, audio=None, ref=None, text: str | None = None) -> dict:
    """The metrics card of one video (see the module docstring for the schema)."""
    return evaluate_with_series(video, audio, ref, text)[0]


def evaluate_with_series(video, audio=None, ref=None, text: str | None = None) -> tuple[dict, Series]:
    """The card and the per-frame series behind it."""
    from ..service import read_transcript

    path = Path(video)
    info = probe(path)
    if not info["video_codec"]:
        raise UnsupportedFormatError(f"{path} has no video frames", "pass a video file (mp4, mov, mkv, webm)",
                                     field="video")
    if not info["n_frames"]:
        raise UnreadableMediaError(f"{path} has no video frames that decode", "pass a complete video file",
                                   field="video")
    if info["n_frames"] < 2:
        raise UnsupportedFormatError(f"{path} is a single image, not a video", "pass a video file (mp4, mov, mkv, webm)",
                                     field="video")
    transcript = read_transcript(text)
    speech, no_speech = _speech(path, audio, info)
    ref_image, ref_pts = _reference(ref)
    sc = scan(path, info["n_frames"])
    fps = sc.fps
    series = Series(fps, sc.aperture, landmarks=sc.landmarks, sampled=sc.sampled)
    card: dict = {"schema": SCHEMA, "video": str(path), "container": _container(info)}

    # sync
    if speech is None:
        keys = ("offset_frames", "offset_ms", "peak_correlation", "confidence", "passed")
        card["sync"] = _group(dict.fromkeys(keys), dict.fromkeys(keys, no_speech))
    else:
        values, reasons, corr = sync_metrics(sc.aperture, speech.samples, fps)
        card["sync"] = _group(values, reasons)
        if corr is not None:
            from ..audio.features import n_frames
            from .sync import audio_envelope

            series.envelope = audio_envelope(speech.samples, fps, n_frames(speech.duration, fps))
            series.lags = np.arange(len(corr)) - len(corr) // 2
            series.correlation = corr

    # mouth
    mouth_values, mouth_reasons = {}, {}
    if speech is None:
        keys = ("speech_frames", "silence_frames", "articulation", "articulates", "silence_motion",
                "articulation_ratio")
        mouth_values.update(dict.fromkeys(keys))
        mouth_reasons.update(dict.fromkeys(keys, no_speech))
        phones = None
    else:
        v, r = M.motion_metrics(sc.aperture, speech.samples, fps)
        mouth_values.update(v)
        mouth_reasons.update(r)
        phones = speech.phones
        if transcript and not phones:
            from ..audio.phonemes import align

            phones = align(Speech(speech.samples, SAMPLE_RATE, transcript), transcript)
    v, r = M.phone_metrics(sc.aperture, phones, fps)
    if transcript and not phones and speech is not None:
        r = dict.fromkeys(r, "the transcript could not be aligned with the audio")
    elif speech is None and transcript:
        r = dict.fromkeys(r, no_speech)
    mouth_values.update(v)
    mouth_reasons.update(r)
    mouth_values["sharpness"] = float(np.median(sc.sharpness)) if sc.sharpness else None
    mouth_reasons["sharpness"] = "no face found in the sampled frames"
    ref_sharp = M.sharpness(ref_image, ref_pts) if ref_pts is not None else None
    mouth_values["sharpness_vs_ref"] = (mouth_values["sharpness"] / ref_sharp
                                        if ref_sharp and mouth_values["sharpness"] is not None else None)
    mouth_reasons["sharpness_vs_ref"] = ("needs the reference portrait (ref), the one the video was made from" if ref_image is None
                                         else "no face (or mouth) found in the reference or the video")
    card["mouth"] = _group(mouth_values, mouth_reasons)

    # identity
    card["identity"] = _identity(list(sc.sampled.values()), ref_image)

    # stability
    lm = sc.landmarks
    face_frames = int(np.isfinite(lm[:, 0, 0]).sum())
    st = {"face_frames": face_frames, "face_rate": face_frames / max(len(lm), 1), "jitter": S.jitter(lm)}
    reasons = {"jitter": "under 3 consecutive frames with a face"}
    pose = S.pose_metrics(lm, fps)
    st.update(pose)
    reasons.update(dict.fromkeys(pose, "under 3 frames with a face"))
    blink = S.blink_metrics(lm, fps)
    st.update(blink)
    reasons.update(dict.fromkeys(blink, "under 1 s of video with a face"))
    bg, bg_reasons = S.background_metrics(sc.sampled, lm, ref_image, ref_pts)
    st.update(bg)
    reasons.update(bg_reasons)
    card["stability"] = _group(st, reasons)
    return card, series


def _identity(frames: list[np.ndarray], ref_image: np.ndarray | None) -> dict:
    from .identity import identity_metrics

    values = identity_metrics(frames, ref_image)
    reason = values.pop("reason", None)
    return _group(values, {k: reason for k in values} if reason else {})


# ---------------------------------------------------------------- folders

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def _matching(ref: Path | None, video: Path) -> Path | None:
    """--ref for one video of a folder: the file itself, or the image in a --ref folder with the
    video's name (talk1.mp4 <- talk1.png)."""
    if ref is None or ref.is_file():
        return ref
    for p in sorted(ref.iterdir()):
        if p.stem == video.stem and p.suffix.lower() in IMAGE_SUFFIXES:
            return p
    return None


def real_frames(source: Path, per_video: int = SAMPLED_FRAMES) -> list[np.ndarray]:
    """RGB frames of real footage for FID/KID: images, and evenly spaced frames of videos, in a folder
    (or one video file)."""
    from ..io import load_image

    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file())
    out = []
    for p in files:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(load_image(p, field="real").image)
        elif p.suffix.lower() in VIDEO_SUFFIXES:
            n = probe(p)["n_frames"] or 0
            picks = set(np.linspace(0, max(n - 1, 0), min(per_video, n)).round().astype(int).tolist())
            with av.open(str(p)) as c:
                out += [f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i in picks]
    return out


def evaluate_folder(folder, ref=None, real=None) -> dict:
    """Cards of every video in `folder` (a same-named .txt beside a video is its transcript), their
    means, and FID/KID of all sampled frames against `real` footage (or the --ref images)."""
    from .distribution import distribution_metrics

    folder = Path(folder)
    videos = _videos(folder)
    if not videos:
        raise InputError(f"{folder} holds no videos", f"put {', '.join(VIDEO_SUFFIXES)} files there", field="video")
    ref = Path(ref) if ref is not None else None
    if ref is not None and not ref.exists():
        raise InputError(f"{ref} does not exist", "pass a portrait image, or a folder of them named like the videos",
                         field="ref")
    cards, generated, refs = [], [], []
    for v in videos:
        r = _matching(ref, v)
        text = v.with_suffix(".txt")
        card, series = evaluate_with_series(v, ref=r, text=str(text) if text.is_file() else None)
        cards.append(card)
        generated += series.frames
        if r is not None:
            refs.append(r)
    if real is not None:
        real_path = Path(real)
        if not real_path.exists():
            raise InputError(f"{real_path} does not exist", "pass a folder of real frames or videos", field="real")
        reals = real_frames(real_path)
    else:
        from ..io import load_image

        reals = [load_image(p, field="ref").image for p in dict.fromkeys(refs)]
    dist = distribution_metrics(generated, reals)
    reason = dist.pop("reason", None)
    if reason and real is None:
        reason += " (give real: a folder of real frames or videos)"
    return {"schema": SCHEMA, "folder": str(folder), "videos": cards, "summary": summarize(cards),
            "distribution": _group(dist, {k: reason for k in dist} if reason else {})}


def summarize(cards: list[dict]) -> dict:
    """Per group, the mean of every numeric metric over the cards that have it (pass rates for
    verdicts), with how many cards contributed."""
    out: dict = {}
    for g in GROUPS:
        keys = [k for k in cards[0].get(g, {}) if k != "missing"]
        group = {}
        for k in keys:
            vals = [c[g][k] for c in cards if isinstance(c[g].get(k), (int, float))]
            group[k] = float(np.mean(vals)) if vals else None
        group["cards"] = len(cards)
        out[g] = group
    return out


# ---------------------------------------------------------------- output


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "pass" if v else "FAIL"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


def format_table(card: dict) -> str:
    """A readable Markdown table of one card; None values show their reason."""
    lines = [f"### {Path(card['video']).name}", "", "| group | metric | value |", "|---|---|---|"]
    for g in GROUPS:
        group = card.get(g)
        if not group:
            continue
        for k, v in group.items():
            if k == "missing":
                continue
            cell = _fmt(v) if v is not None else f"— ({group['missing'].get(k, '')})"
            lines.append(f"| {g} | {k} | {cell} |")
    return "\n".join(lines)


def write_json(card: dict, path: str | os.PathLike) -> Path:
    """Write the card as JSON, atomically."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.part")
    tmp.write_text(json.dumps(card, indent=2, default=_json_default) + "\n")
    os.replace(tmp, p)
    return p


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def plot(series: Series, card: dict, path: str | os.PathLike) -> Path:
    """PNG: mouth aperture vs the audio envelope over time, and correlation against lag."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = Path(path)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), constrained_layout=True)
    t = np.arange(len(series.aperture)) / series.fps
    top.plot(t, series.aperture, color="tab:red", label="mouth aperture (IOD)")
    top.set_xlabel("time (s)")
    top.set_ylabel("aperture / inter-ocular distance")
    if series.envelope is not None:
        twin = top.twinx()
        te = np.arange(len(series.envelope)) / series.fps
        twin.plot(te, series.envelope, color="tab:blue", alpha=0.6, label="audio envelope (dB)")
        twin.set_ylabel("audio level above floor (dB)")
    top.set_title(Path(card["video"]).name)
    top.legend(loc="upper left")
    if series.correlation is not None:
        bottom.plot(series.lags, series.correlation, marker="o")
        off = card["sync"]["offset_frames"]
        if off is not None:
            bottom.axvline(off, color="tab:red", ls="--", label=f"offset {off:+d} frames (+ = video lags)")
            bottom.legend()
        bottom.set_xlabel("lag (frames): mouth at t + lag vs audio at t")
        bottom.set_ylabel("correlation")
    else:
        bottom.text(0.5, 0.5, "no correlation: " + (card["sync"]["missing"].get("confidence") or
                                                    card["sync"]["missing"].get("offset_frames", "")),
                    ha="center", va="center", transform=bottom.transAxes)
    tmp = p.with_name(f".{p.stem}.part{p.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, p)
    return p
