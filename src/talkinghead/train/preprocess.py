"""A folder of talking videos -> a training dataset: smoothed face crops, landmarks, Hallo's masks, EMO's head
speed buckets, log-mel (and optional wav2vec2 / whisper) audio features, one shard per video.

    preprocess("videos/", "dataset/", size=512, workers=2, audio_model=None) -> Report

On-disk format (FORMAT_VERSION 1)
---------------------------------
dataset/
  index.json       {"version": 1, "size": S, "fps": 25, "mel_per_frame": 4, "n_mels": 80,
                    "audio_feats": null | {"kind": "wav2vec2"|"whisper", "model": NAME, "layers": L, "dim": D},
                    "videos": [{"id", "source", "frames", "shard", "seconds", "prompt"?}, ...]}   (sorted by id;
                    "prompt": the words of a sidecar text file <video>.txt beside the video, when it has one:
                    what a text-conditioned model, Hallo2's text variant, is trained with; read again on every
                    run, so editing a prompt needs no reprocessing)
  report.json      {"version": 1, "settings": {...}, "skipped": [{"source", "reason", "bytes", "mtime"}, ...]}
  shards/<id>.safetensors   one per video; written to a temporary name, then os.replace'd: a shard that
                   exists is complete. Metadata (str -> str): version, id, source, fps, size, frames,
                   seconds, audio_model ("" or "kind:name"), body ("1" with keypoints). T = frames, S = size. Tensors:
    jpeg          uint8 (N,)      the T face crops, RGB, S x S, as JPEG (quality 95, 4:4:4 chroma), concatenated;
    jpeg_offsets  int64 (T+1,)    frame i is jpeg[jpeg_offsets[i]:jpeg_offsets[i+1]] (see `Shard.frames`).
                                  JPEG, not raw uint8 (T,S,S,3): ~13x smaller (a 512 px frame is ~60 KB,
                                  not 786 KB), random access per frame, decodes in ~1.5 ms at 512 px
                                  (less at 1/2, 1/4, 1/8 scale, which the dataset uses for small sizes).
    landmarks     float16 (T, 478, 3)  FaceMesh x, y, z in pixels of the S x S crop (z on the x scale);
                                  frames without a face hold landmarks interpolated from their neighbours
    has_face      uint8 (T,)      1 where FaceMesh found the face in that frame
    box           float32 (T, 3)  the crop (left, top, side) in pixels of the upright source frame
    masks         uint8 (3, S, S) lip, face, full in {0, 1}: the union over all frames of the outer-lip box
                                  and of the face-oval box (as Hallo's data preprocessing: get_union_lip_mask /
                                  get_union_face_mask, growth 1.0); full = 1 - face, Hallo's pose/background
                                  region. So lip is inside face and full is everything outside face.
    hallo_masks   uint8 (3, 64, 64) Hallo's soft sep masks made from those unions (lip, face - lip,
                                  255 - face; 64 px, 31/51 px Gaussian blur; face/masks.py), 0..255
    pose          float32 (T, 3)  head yaw, pitch, roll in degrees against the video's median face
                                  (face.pose.head_pose), smoothed over POSE_SMOOTH frames; the order of
                                  nn.speed (head_speed takes it as is)
    speed         float32 (T,)    head rotation speed, degrees per frame (nn.speed.head_speed of `pose`)
    speed_bucket  int64 (T,)      nearest EMO speed bucket (nn.speed.SpeedConfig().centers)
    mel           float32 (T, 4, 80) log10 mel power (see `log_mel`): 4 mel frames per video frame
    hands         float32 (T, 2, 21, 3) optional (`body=True`): EMO2's MediaPipe hands (the person's left, right)
                                  in units of the crop box (0..1 inside it; z in crop sides), zeros where missing
    hand_mask     uint8 (T, 2)    1 where that hand was found
    body          float32 (T, 12, 2) the upper-limb and leg keypoints (face.body.BODY_POINTS), crop-box units
    body_mask     uint8 (T, 12)   1 where a keypoint is visible (MediaPipe Pose visibility >= 0.5)
    audio_feats   float16 (T, L, D) optional: wav2vec2 hidden states of layers 1..L at the video frame rate
                                  (Hallo's front end, audio/wav2vec.py), or whisper encoder hidden states
                                  (input + every layer) averaged down from 50 Hz to the video frame rate

Choices
-------
- Frame rate: every video is resampled to `fps` (default 25, as Hallo/EMO train) by taking, for each output
  frame, the nearest source frame (frames are dropped or repeated; no blending).
- Crop: a square of CROP_MARGIN x the landmark box (the warp engine's portrait framing, face.crop_box), so
  training crops look like the portraits given at inference. When the face moves less than STILL_TOLERANCE
  of the crop side over the whole video, one fixed box (the median) is used: the background stays still,
  as it does in a talking-head video. Otherwise the box centre and side follow a centred moving average
  over SMOOTH_SECONDS. The box is kept inside the frame (it slides in, it is never padded).
- Masks: per video, from the union over frames, as Hallo's training data is made (one set per video).
- Mel: 80 slaney mel bins of a 400-sample (25 ms) Hann window at 16 kHz, power, log10 floored at 1e-10.
  Exactly MEL_PER_FRAME windows per video frame, centred at (m + 0.5) * hop with hop = 16000 / (fps * 4)
  samples (160 = 10 ms at 25 fps), so mel frames 4i..4i+3 lie inside video frame i. Samples past the end
  of the audio read as zeros.
- Videos are rejected, with the reason in report.json, when unreadable, without an audio track, shorter
  than MIN_SECONDS or `min_frames`, without a face in more than MAX_MISSING of the frames, or with a second
  face of comparable size in more than MAX_CROWDED of them.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

from ..errors import InputError
from ..types import SAMPLE_RATE, FaceAnalysis

FORMAT_VERSION = 1
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
DEFAULT_FPS = 25  # frames per second of every dataset video (Hallo and EMO train at 25)
MIN_SECONDS = 1.0  # s, shorter videos are rejected
MIN_FRAMES = 25  # default least number of frames (after resampling to fps)
MAX_MISSING = 0.2  # reject when more than this share of the frames has no face
SECOND_FACE_AREA = 0.5  # a second face with at least this share of the main face's box area is a second person
MAX_CROWDED = 0.2  # reject when more than this share of the frames shows a second person
CROP_MARGIN = 2.1  # crop side / landmark box side (face.landmarks.crop_box's framing)
HEADROOM = 0.06  # crop centre raised by this share of the landmark box height (landmarks stop mid-forehead)
STILL_TOLERANCE = 0.05  # share of the crop side: below this much face motion, one fixed box per video
SMOOTH_SECONDS = 1.0  # s, centred moving average of a moving crop box
POSE_SMOOTH = 5  # frames, centred moving average of the head pose (FaceMesh jitter reads as motion)
MASK_EXPAND = 1.0  # growth of the per-frame lip and face boxes before the union (Hallo's data preprocessing)
MEL_PER_FRAME = 4  # mel frames per video frame
N_MELS = 80
MEL_WINDOW = 400  # samples (25 ms at 16 kHz), also the FFT size
LOG_FLOOR = 1e-10  # power floor before log10
JPEG_QUALITY = 95
AUDIO_CHUNK_SECONDS = 30.0  # s, wav2vec2 / whisper run on pieces of at most this long (memory, whisper's window)
WHISPER_RATE = 50  # Hz, whisper encoder frames per second
INDEX_WRITE_SECONDS = 10.0  # s, least time between rewrites of index.json while running

_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]


@dataclass
class Report:
    """What `preprocess` did: the dataset's video ids, and the videos left out with the reason."""

    processed: list[str] = field(default_factory=list)  # ids now in the dataset (new and reused)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source path, reason)
    reused: list[str] = field(default_factory=list)  # ids whose complete shard was kept (resume)


class _Reject(Exception):
    """A video that cannot go into the dataset; the message is the reason."""


# ------------------------------------------------------------------------------------------------ shards


class Shard:
    """Read access to one shard: metadata, whole arrays or slices of them, and decoded frames.

    The file is memory-mapped (safetensors), so reading a clip touches only that clip's bytes.
    """

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open

        self.path = Path(path)
        self._file = safe_open(str(self.path), framework="np")
        self.meta = dict(self._file.metadata() or {})
        self.keys = set(self._file.keys())
        self.n_frames = int(self.meta["frames"])
        self.size = int(self.meta["size"])
        self.fps = float(self.meta["fps"])
        self._offsets = self._file.get_tensor("jpeg_offsets")

    def array(self, key: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Tensor `key`, or its rows start:stop (first axis)."""
        if start is None and stop is None:
            return self._file.get_tensor(key)
        return self._file.get_slice(key)[start:stop]

    def jpeg(self, i: int) -> np.ndarray:
        """The JPEG bytes of frame i, uint8 (n,)."""
        return self._file.get_slice("jpeg")[int(self._offsets[i]):int(self._offsets[i + 1])]

    def frames(self, indices, size: int | None = None) -> np.ndarray:
        """(n, s, s, 3) uint8 RGB frames at `indices`, resized to `size` (default: the shard's size)."""
        size = size or self.size
        out = np.empty((len(indices), size, size, 3), np.uint8)
        cache: dict[int, np.ndarray] = {}
        for k, i in enumerate(indices):
            i = int(i)
            if i not in cache:
                cache[i] = decode_frame(self.jpeg(i), self.size, size)
            out[k] = cache[i]
        return out

    def load(self) -> dict[str, np.ndarray]:
        """Every tensor, with the frames decoded as "frames" (T, S, S, 3) uint8 (small videos, tests)."""
        data = {k: self._file.get_tensor(k) for k in self.keys if k not in ("jpeg", "jpeg_offsets")}
        data["frames"] = self.frames(range(self.n_frames))
        return data


def decode_frame(jpeg: np.ndarray, stored: int, size: int) -> np.ndarray:
    """JPEG bytes of a `stored` x `stored` frame -> (size, size, 3) uint8 RGB. Shrinking by 2, 4 or 8 and
    more decodes at that reduced scale first (libjpeg's DCT scaling: several times faster)."""
    flag = cv2.IMREAD_COLOR
    for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                            (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if stored >= factor * size:
            flag = reduced
            break
    bgr = cv2.imdecode(np.asarray(jpeg, np.uint8), flag)
    if bgr is None:
        raise ValueError("corrupt JPEG frame in shard")
    if bgr.shape[0] != size:
        interp = cv2.INTER_AREA if bgr.shape[0] > size else cv2.INTER_CUBIC
        bgr = cv2.resize(bgr, (size, size), interpolation=interp)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_frame(rgb: np.ndarray) -> bytes:
    """(s, s, 3) uint8 RGB -> JPEG bytes (JPEG_QUALITY, 4:4:4)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _JPEG_PARAMS)
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


# ------------------------------------------------------------------------------------------------- audio


_mel_basis: np.ndarray | None = None


def log_mel(samples: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """16 kHz mono float32 -> (n_frames, MEL_PER_FRAME, N_MELS) float32 log10 mel power, frame-aligned.

    Mel frame m (of n_frames * MEL_PER_FRAME) is a MEL_WINDOW-sample Hann window centred at sample
    round((m + 0.5) * hop), hop = SAMPLE_RATE / (fps * MEL_PER_FRAME); samples outside the audio are zeros.
    Use this same function at inference so the model sees the features it was trained on.
    """
    global _mel_basis
    if _mel_basis is None:
        from transformers.audio_utils import mel_filter_bank

        _mel_basis = mel_filter_bank(num_frequency_bins=MEL_WINDOW // 2 + 1, num_mel_filters=N_MELS,
                                     min_frequency=0.0, max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE,
                                     norm="slaney", mel_scale="slaney").astype(np.float32)  # (201, 80)
    samples = np.asarray(samples, np.float32).reshape(-1)
    hop = SAMPLE_RATE / (fps * MEL_PER_FRAME)
    n = n_frames * MEL_PER_FRAME
    centres = np.floor((np.arange(n) + 0.5) * hop + 0.5).astype(np.int64)
    window = np.hanning(MEL_WINDOW + 1)[:-1].astype(np.float32)  # periodic Hann
    out = np.empty((n, N_MELS), np.float32)
    for lo in range(0, n, 8192):  # bounded memory for long audio
        idx = centres[lo:lo + 8192, None] - MEL_WINDOW // 2 + np.arange(MEL_WINDOW)  # (k, 400)
        valid = (idx >= 0) & (idx < len(samples))
        frames = np.where(valid, samples[np.clip(idx, 0, max(len(samples) - 1, 0))] if len(samples) else 0.0, 0.0)
        power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (k, 201)
        out[lo:lo + 8192] = np.log10(np.maximum(power.astype(np.float32) @ _mel_basis, LOG_FLOOR))
    return out.reshape(n_frames, MEL_PER_FRAME, N_MELS)


def audio_model_kind(folder: str | os.PathLike) -> str:
    """"wav2vec2" or "whisper", from the model_type in the folder's config.json; InputError otherwise."""
    p = Path(folder).expanduser()
    hint = "pass a local folder holding a wav2vec2 or whisper model (config.json + weights), e.g. wav2vec2-base-960h"
    if not p.is_dir():
        raise InputError(f"{p} is not a folder", hint, field="audio_model")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise InputError(f"{p} has no config.json", hint, field="audio_model")
    try:
        kind = json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as e:
        raise InputError(f"{cfg} cannot be read: {e}", hint, field="audio_model") from None
    if kind not in ("wav2vec2", "whisper"):
        raise InputError(f"{p} is a {kind!r} model, not wav2vec2 or whisper", hint, field="audio_model")
    return kind


class AudioEncoder:
    """wav2vec2 (Hallo's front end) or whisper encoder hidden states at the video frame rate, from a local folder."""

    def __init__(self, folder: str | os.PathLike):
        import torch

        self.folder = Path(folder).expanduser()
        self.kind = audio_model_kind(self.folder)
        self.name = self.folder.resolve().name
        with torch.no_grad():
            if self.kind == "wav2vec2":
                from ..audio.wav2vec import load_wav2vec

                self.model, self.extractor = load_wav2vec(self.folder)
            else:
                from transformers import WhisperFeatureExtractor, WhisperModel

                self.extractor = WhisperFeatureExtractor.from_pretrained(str(self.folder), local_files_only=True)
                self.model = WhisperModel.from_pretrained(str(self.folder), local_files_only=True).encoder.eval()

    @property
    def signature(self) -> str:
        """"kind:name", stored in each shard to tell whether its features came from this model."""
        return f"{self.kind}:{self.name}"

    def __call__(self, samples: np.ndarray, n_frames: int, fps: int) -> np.ndarray:
        """(n_frames, L, D) float16 features of 16 kHz audio, frame-aligned like `log_mel` (zeros past the end)."""
        per_frame = SAMPLE_RATE / fps
        total = int(round(n_frames * per_frame))
        x = np.zeros(total, np.float32)
        x[:min(total, len(samples))] = samples[:total]
        chunk_frames = max(1, int(AUDIO_CHUNK_SECONDS * fps))
        parts = []
        for f0 in range(0, n_frames, chunk_frames):
            f1 = min(n_frames, f0 + chunk_frames)
            piece = x[int(round(f0 * per_frame)):int(round(f1 * per_frame))]
            parts.append(self._encode(piece, f1 - f0, fps))
        return np.concatenate(parts).astype(np.float16)

    def _encode(self, piece: np.ndarray, n_frames: int, fps: int) -> np.ndarray:
        """(n_frames, L, D) float32 for one piece of at most AUDIO_CHUNK_SECONDS."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            if self.kind == "wav2vec2":
                from ..audio.wav2vec import hallo_audio_embeddings

                emb, _ = hallo_audio_embeddings(self.model, self.extractor, piece, fps=fps, clip_length=0)
                emb = emb.float().numpy()  # (t, L, D), t = ceil(len / 640) = n_frames
            else:
                feats = self.extractor(piece, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
                out = self.model(feats.to(next(self.model.parameters()).dtype), output_hidden_states=True)
                states = torch.stack(out.hidden_states, dim=1)[0]  # (L+1, 1500, D)
                used = max(1, math.ceil(len(piece) * WHISPER_RATE / SAMPLE_RATE))
                states = states[:, :used]  # (L+1, used, D)
                l1, t, d = states.shape
                pooled = F.adaptive_avg_pool1d(states.permute(0, 2, 1).reshape(1, l1 * d, t), n_frames)
                emb = pooled.reshape(l1, d, n_frames).permute(2, 0, 1).float().numpy()  # (n_frames, L+1, D)
        if len(emb) < n_frames:  # rounding at a piece's end
            emb = np.concatenate([emb, np.repeat(emb[-1:], n_frames - len(emb), axis=0)])
        return emb[:n_frames]


# ------------------------------------------------------------------------------------------------ video


def _upright(frame: av.VideoFrame) -> np.ndarray:
    """RGB uint8 of a decoded frame, turned as the display matrix says (phone videos)."""
    rgb = frame.to_ndarray(format="rgb24")
    try:
        turns = int(round((frame.rotation or 0) / 90)) % 4
    except (AttributeError, ValueError, TypeError):
        turns = 0
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _open_video(path: Path):
    """(container, first video stream); _Reject when ffmpeg cannot open the file or it has no video."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise _Reject(f"unreadable: ffmpeg cannot open it ({type(e).__name__})") from None
    if not container.streams.video:
        container.close()
        raise _Reject("unreadable: no video stream")
    return container, container.streams.video[0]


def _video_frames(path: Path, fps: float):
    """Yield the upright RGB frames of the first video stream resampled to `fps` (nearest source frame)."""
    container, stream = _open_video(path)
    try:
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or fps)
        out = 0
        try:
            for k, frame in enumerate(container.decode(stream)):
                if math.floor(out * rate / fps + 0.5) != k:
                    continue
                rgb = _upright(frame)
                while math.floor(out * rate / fps + 0.5) == k:  # repeated when the source is slower
                    yield rgb
                    out += 1
        except av.FFmpegError as e:
            raise _Reject(f"unreadable: decoding failed after {out} frames ({e})") from None
    finally:
        container.close()


def _probe(path: Path, fps: float) -> tuple[bool, int | None]:
    """(has an audio track, estimated frame count at `fps` or None)."""
    container, stream = _open_video(path)
    try:
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        estimate = None
        if stream.frames and rate:
            estimate = int(stream.frames * fps / rate)
        elif container.duration:
            estimate = int(container.duration / av.time_base * fps)
        return bool(container.streams.audio), estimate
    finally:
        container.close()


def _area(p: np.ndarray) -> float:
    return float(np.ptp(p[:, 0]) * np.ptp(p[:, 1]))


def _detect(path: Path, fps: float, estimate: int | None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Pass 1: FaceMesh on every frame. Returns landmarks (T, 478, 3) float32 in source pixels (NaN without a
    face), has_face (T,) bool and the (width, height) of the frames. Rejects crowded or faceless videos,
    stopping early once the verdict is certain (from the container's frame count, with a 10% margin)."""
    from ..face.landmarks import N_LANDMARKS, detect_all

    rows, missing, crowded, shape = [], 0, 0, None
    limit = None if not estimate else 1.1 * estimate
    for rgb in _video_frames(path, fps):
        shape = rgb.shape
        faces = detect_all(rgb)
        if not faces:
            missing += 1
            rows.append(np.full((N_LANDMARKS, 3), np.nan, np.float32))
        else:
            if len(faces) > 1 and _area(faces[1]) >= SECOND_FACE_AREA * _area(faces[0]):
                crowded += 1
            rows.append(faces[0])
        if limit is not None and missing > MAX_MISSING * limit:
            raise _Reject(f"no face in more than {MAX_MISSING:.0%} of the frames")
        if limit is not None and crowded > MAX_CROWDED * limit:
            raise _Reject(f"several people: a second face in more than {MAX_CROWDED:.0%} of the frames")
    if shape is None:
        raise _Reject("unreadable: no video frames decoded")
    n = len(rows)
    if missing > MAX_MISSING * n:
        raise _Reject(f"no face in {missing / n:.0%} of the frames (at most {MAX_MISSING:.0%} allowed)")
    if crowded > MAX_CROWDED * n:
        raise _Reject(f"several people: a second face in {crowded / n:.0%} of the frames")
    landmarks = np.stack(rows)
    return landmarks, np.isfinite(landmarks[:, 0, 0]), (shape[1], shape[0])


def _fill_missing(landmarks: np.ndarray, has_face: np.ndarray) -> np.ndarray:
    """Landmarks of faceless frames interpolated linearly in time (held at the ends)."""
    if has_face.all():
        return landmarks
    t = np.arange(len(landmarks))
    known = np.flatnonzero(has_face)
    flat = landmarks.reshape(len(landmarks), -1)
    filled = np.empty_like(flat)
    for c in range(flat.shape[1]):
        filled[:, c] = np.interp(t, known, flat[known, c])
    return filled.reshape(landmarks.shape)


def crop_boxes(landmarks: np.ndarray, frame_size: tuple[int, int], fps: float) -> np.ndarray:
    """(T, 478, 3) landmarks -> (T, 3) int square crops (left, top, side) inside the frame, smoothed in time.

    Still faces get one fixed box (the median); moving ones a centred moving average over SMOOTH_SECONDS.
    """
    from scipy.ndimage import uniform_filter1d

    w, h = frame_size
    lo, hi = landmarks[:, :, :2].min(axis=1), landmarks[:, :, :2].max(axis=1)  # (T, 2)
    span = hi - lo
    side = CROP_MARGIN * span.max(axis=1)
    cx = (lo[:, 0] + hi[:, 0]) / 2
    cy = (lo[:, 1] + hi[:, 1]) / 2 - HEADROOM * span[:, 1]
    track = np.stack([cx, cy, side], axis=1).astype(np.float64)  # (T, 3)
    median = np.median(track, axis=0)
    if np.abs(track - median).max() < STILL_TOLERANCE * median[2]:
        track[:] = median
    else:
        window = max(1, int(round(SMOOTH_SECONDS * fps)) | 1)
        track = uniform_filter1d(track, size=window, axis=0, mode="nearest")
    side = np.minimum(np.round(track[:, 2]), min(w, h)).astype(np.int64)
    left = np.clip(np.round(track[:, 0] - side / 2), 0, w - side).astype(np.int64)
    top = np.clip(np.round(track[:, 1] - side / 2), 0, h - side).astype(np.int64)
    return np.stack([left, top, side], axis=1)


def _crop(rgb: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The square `box` of an RGB frame resized to size x size."""
    left, top, side = (int(v) for v in box)
    crop = rgb[top:top + side, left:left + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


BODY_KEYS = ("hands", "hand_mask", "body", "body_mask")


def _body_in_crop(rgb: np.ndarray, box: np.ndarray) -> dict[str, np.ndarray]:
    """EMO2's end effectors of one full frame in units of the crop `box` (0..1 inside it; hands and limbs
    often reach outside a face crop): hands (2, 21, 3) with z in crop sides, hand_mask (2,), body (12, 2),
    body_mask (12,) uint8; missing points are zeros with a 0 mask."""
    from ..face.body import analyze_body

    left, top, side = (float(v) for v in box)
    k = analyze_body(rgb)
    hands = np.nan_to_num(k.hands.astype(np.float32))
    hands[..., 0], hands[..., 1], hands[..., 2] = (hands[..., 0] - left) / side, (hands[..., 1] - top) / side, \
        hands[..., 2] / side
    body = np.nan_to_num(k.body.astype(np.float32))
    body[:, 0], body[:, 1] = (body[:, 0] - left) / side, (body[:, 1] - top) / side
    hand_mask, body_mask = k.hand_mask.astype(np.uint8), k.body_mask.astype(np.uint8)
    return {"hands": hands * hand_mask[:, None, None], "hand_mask": hand_mask,
            "body": body * body_mask[:, None], "body_mask": body_mask}


def _to_crop(landmarks: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Source-pixel landmarks (T, 478, 3) -> pixels of each frame's size x size crop."""
    scale = (size / boxes[:, 2]).astype(np.float32)[:, None, None]
    shift = np.zeros((len(boxes), 1, 3), np.float32)
    shift[:, 0, :2] = boxes[:, :2]
    return (landmarks - shift) * scale


def union_masks(landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, 478, 3) crop landmarks -> (masks (3, S, S) uint8 {0,1}: lip, face, full; hallo (3, 64, 64) uint8).

    lip / face: the union over frames of the outer-lip and face-oval boxes (face.masks, growth MASK_EXPAND);
    full = 1 - face. hallo: Hallo's blurred sep masks of those unions (lip, face - lip, 255 - face).
    """
    from ..face.masks import FACE_BLUR, LIP_BLUR, _blurred, face_box, lip_box

    lip = np.zeros((size, size), np.uint8)
    face = np.zeros((size, size), np.uint8)
    lip_boxes, face_boxes = set(), set()
    for pts in landmarks:
        fa = FaceAnalysis(landmarks=pts.astype(np.float32), box=(0.0, 0.0, 0.0, 0.0), image_size=(size, size))
        lip_boxes.add(lip_box(fa, size, MASK_EXPAND))
        face_boxes.add(face_box(fa, size, MASK_EXPAND))
    for mask, boxes in ((lip, lip_boxes), (face, face_boxes)):
        for x0, y0, x1, y1 in boxes:
            mask[y0:y1, x0:x1] = 1
    face_soft = _blurred(face * 255, FACE_BLUR)
    lip_soft = _blurred(lip * 255, LIP_BLUR)
    full_soft = ((1.0 - face_soft / 255.0) * 255).astype(np.uint8)  # truncation, as upstream
    hallo = np.stack([lip_soft, cv2.subtract(face_soft, lip_soft), full_soft])
    return np.stack([lip, face, 1 - face]), hallo


def head_motion(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, 478, 3) landmarks -> pose (T, 3) yaw, pitch, roll degrees (smoothed), speed (T,) degrees per
    frame, EMO speed bucket (T,) int64."""
    import torch
    from scipy.ndimage import uniform_filter1d

    from ..face.pose import head_pose
    from ..nn.speed import SpeedConfig, head_speed, speed_bucket_index

    pose = head_pose(landmarks)[:, [1, 0, 2]]  # pitch, yaw, roll -> yaw, pitch, roll
    pose = uniform_filter1d(np.nan_to_num(pose), size=min(POSE_SMOOTH, len(pose)), axis=0, mode="nearest")
    speed = head_speed(torch.from_numpy(pose.astype(np.float32)))
    bucket = speed_bucket_index(speed, SpeedConfig().centers)
    return pose.astype(np.float32), speed.numpy().astype(np.float32), bucket.numpy().astype(np.int64)


@dataclass
class Settings:
    """What a shard depends on; a shard made with other settings is made again."""

    size: int = 512
    fps: int = DEFAULT_FPS
    min_frames: int = MIN_FRAMES
    audio_model: str | None = None  # local wav2vec2 / whisper folder
    body: bool = False  # also store EMO2's hand and body keypoints (MediaPipe Hands + Pose per frame)


def process_video(path: Path, shard: Path, video_id: str, settings: Settings,
                  encoder: AudioEncoder | None = None) -> dict:
    """Turn one video into `shard` (atomically). Returns its index entry; raises _Reject with the reason.

    Memory stays flat with the video's length: pass 1 keeps only landmarks, pass 2 streams the JPEG crops
    to a temporary file that becomes the end of the shard.
    """
    from ..io import load_audio

    has_audio, estimate = _probe(path, settings.fps)
    if not has_audio:
        raise _Reject("no audio track")
    if estimate is not None and estimate < _least_frames(settings) // 2:
        raise _Reject(_too_short(estimate, settings))
    landmarks, has_face, frame_size = _detect(path, settings.fps, estimate)
    n = len(landmarks)
    if n < _least_frames(settings):
        raise _Reject(_too_short(n, settings))
    try:
        speech = load_audio(path, max_seconds=None)
    except InputError as e:
        raise _Reject(f"unreadable audio: {e.message}") from None

    landmarks = _fill_missing(landmarks, has_face)
    boxes = crop_boxes(landmarks, frame_size, settings.fps)
    size = settings.size
    crop_landmarks = _to_crop(landmarks, boxes, size)
    masks, hallo = union_masks(crop_landmarks, size)
    pose, speed, bucket = head_motion(landmarks)
    arrays = {
        "landmarks": crop_landmarks.astype(np.float16),
        "has_face": has_face.astype(np.uint8),
        "box": boxes.astype(np.float32),
        "masks": masks,
        "hallo_masks": hallo,
        "pose": pose,
        "speed": speed,
        "speed_bucket": bucket,
        "mel": log_mel(speech.samples, n, settings.fps),
    }
    if encoder is not None:
        arrays["audio_feats"] = encoder(speech.samples, n, settings.fps)
    seconds = n / settings.fps
    meta = {"version": str(FORMAT_VERSION), "id": video_id, "source": str(path), "fps": str(settings.fps),
            "size": str(size), "frames": str(n), "seconds": f"{seconds:.3f}",
            "audio_model": encoder.signature if encoder is not None else "", "body": "1" if settings.body else "",
            "audio_dims": ",".join(str(d) for d in arrays["audio_feats"].shape[1:]) if encoder is not None else ""}
    shard.parent.mkdir(parents=True, exist_ok=True)
    tmp = shard.with_name(f".{shard.name}.{os.getpid()}.part")
    jpeg_tmp = shard.with_name(f".{shard.name}.{os.getpid()}.jpeg.part")
    try:
        offsets = [0]
        keypoints = []
        with open(jpeg_tmp, "wb") as out:
            for i, rgb in enumerate(_video_frames(path, settings.fps)):
                if i < n:
                    offsets.append(offsets[-1] + out.write(encode_frame(_crop(rgb, boxes[i], size))))
                    if settings.body:
                        keypoints.append(_body_in_crop(rgb, boxes[i]))
        if len(offsets) != n + 1:
            raise _Reject(f"unreadable: the second decoding gave {len(offsets) - 1} frames, the first {n}")
        arrays["jpeg_offsets"] = np.asarray(offsets, np.int64)
        if settings.body:
            for key in BODY_KEYS:
                arrays[key] = np.stack([k[key] for k in keypoints])
        write_shard(tmp, arrays, jpeg_tmp, meta)
        os.replace(tmp, shard)
    finally:
        for t in (tmp, jpeg_tmp):
            if t.exists():
                t.unlink()
    return {"id": video_id, "source": str(path), "frames": n, "shard": f"shards/{shard.name}",
            "seconds": round(seconds, 3), "_audio": meta["audio_model"], "_audio_dims": meta["audio_dims"]}


_ST_DTYPES = {np.dtype(np.uint8): "U8", np.dtype(np.int64): "I64", np.dtype(np.float32): "F32",
              np.dtype(np.float16): "F16"}


def write_shard(path: Path, arrays: dict[str, np.ndarray], jpeg_file: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file: `arrays`, then the bytes of `jpeg_file` as the uint8 tensor "jpeg", copied in
    blocks (the JPEG data is never all in memory). Tensors are laid out widest dtype first, so each starts
    aligned to its item size with no gaps, as the format requires."""
    import shutil
    import struct

    items = sorted(((k, np.ascontiguousarray(v)) for k, v in arrays.items()), key=lambda kv: -kv[1].dtype.itemsize)
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, a in items:
        header[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    size = jpeg_file.stat().st_size
    header["jpeg"] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, a in items:
            f.write(a.data)
        with open(jpeg_file, "rb") as j:
            shutil.copyfileobj(j, f, 1 << 20)


def _least_frames(settings: Settings) -> int:
    return max(settings.min_frames, math.ceil(MIN_SECONDS * settings.fps))


def _too_short(n: int, settings: Settings) -> str:
    return (f"too short: {n / settings.fps:.2f} s ({n} frames at {settings.fps} fps); at least "
            f"{max(MIN_SECONDS, settings.min_frames / settings.fps):g} s ({_least_frames(settings)} frames) needed")


# ---------------------------------------------------------------------------------------------- workers


_worker_encoder: AudioEncoder | None = None


def _init_worker(audio_model: str | None, threads: int) -> None:
    """Pool initializer: quiet, few threads per process, the audio model loaded once."""
    global _worker_encoder
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(threads)
    _worker_encoder = AudioEncoder(audio_model) if audio_model else None


def _run(task: tuple) -> tuple[str, dict | None, str | None]:
    """One video in a worker: (source, index entry or None, reason or None)."""
    path, shard, video_id, settings = task
    return _attempt(Path(path), Path(shard), video_id, settings, _worker_encoder)


def _attempt(path: Path, shard: Path, video_id: str, settings: Settings,
             encoder: AudioEncoder | None) -> tuple[str, dict | None, str | None]:
    """process_video with every failure turned into a reason (one bad file never stops the run)."""
    try:
        return str(path), process_video(path, shard, video_id, settings, encoder), None
    except _Reject as e:
        return str(path), None, str(e)
    except Exception as e:  # noqa: BLE001 - reported per video, with the traceback on stderr
        traceback.print_exc(file=sys.stderr)
        return str(path), None, f"failed: {type(e).__name__}: {e}"


# -------------------------------------------------------------------------------------------- the folder


def find_videos(videos_dir: Path, exclude: Path | None = None) -> list[Path]:
    """Video files under `videos_dir` (recursively, sorted; hidden files and `exclude` left out)."""
    found = []
    for p in sorted(videos_dir.rglob("*")):
        rel = p.relative_to(videos_dir)
        if any(part.startswith(".") for part in rel.parts) or p.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        if exclude is not None and exclude in p.parents:
            continue
        if p.is_file():
            found.append(p)
    return found


def video_ids(paths: list[Path], root: Path) -> list[str]:
    """A stable, file-name-safe id per video: its path under `root` without the suffix ("/" -> "__"),
    made unique with the suffix (then a number) when two files differ only in that."""
    ids, used = [], set()
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", "__".join(p.relative_to(root).with_suffix("").parts)) or "video"
        vid = base
        if vid in used:
            vid = f"{base}_{p.suffix.lstrip('.').lower()}"
        k = 2
        while vid in used:
            vid = f"{base}_{k}"
            k += 1
        used.add(vid)
        ids.append(vid)
    return ids


def sidecar_prompt(video: Path) -> str | None:
    """A video's text prompt: the words of `<video stem>.txt` beside it (UTF-8, whitespace collapsed), None when
    there is no such file or it holds no words."""
    path = video.with_suffix(".txt")
    if not path.is_file():
        return None
    try:
        words = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return None
    return words or None


def _check_args(videos_dir: Path, dataset_dir: Path, size, workers, fps, min_frames) -> None:
    if not videos_dir.exists():
        raise InputError(f"video folder {videos_dir} does not exist", "check the path (and its spelling)")
    if not videos_dir.is_dir():
        raise InputError(f"{videos_dir} is not a folder", "pass the folder that holds your videos")
    if dataset_dir.exists() and not dataset_dir.is_dir():
        raise InputError(f"dataset path {dataset_dir} is a file", "choose a folder for the dataset")
    if isinstance(size, bool) or not isinstance(size, int) or not 64 <= size <= 2048:
        raise InputError(f"must be a whole number from 64 to 2048, got {size!r}", "e.g. 512", field="size")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"must be a whole number >= 1, got {workers!r}", "e.g. 2", field="workers")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps != int(fps) or not 1 <= fps <= 120:
        raise InputError(f"must be a whole number of frames per second from 1 to 120, got {fps!r}", "e.g. 25",
                         field="fps")
    if isinstance(min_frames, bool) or not isinstance(min_frames, int) or min_frames < 1:
        raise InputError(f"must be a whole number >= 1, got {min_frames!r}", "e.g. 25", field="min_frames")


def _write_json(path: Path, data) -> None:
    """Write JSON atomically (temporary file + os.replace)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _reusable(shard: Path, settings: Settings, signature: str | None) -> dict | None:
    """The index entry of a complete shard made with these settings (any audio features when no
    --audio-model is given, the same model's otherwise), else None."""
    if not shard.is_file():
        return None
    try:
        meta = Shard(shard).meta
    except Exception:  # noqa: BLE001 - unreadable: make it again
        return None
    if (meta.get("version") != str(FORMAT_VERSION) or meta.get("size") != str(settings.size)
            or meta.get("fps") != str(settings.fps)):
        return None
    if signature is not None and meta.get("audio_model") != signature:
        return None
    if settings.body and meta.get("body") != "1":  # keypoints asked for and missing: make it again
        return None
    return {"id": meta["id"], "source": meta["source"], "frames": int(meta["frames"]),
            "shard": f"shards/{shard.name}", "seconds": float(meta["seconds"]), "_audio": meta.get("audio_model", ""),
            "_audio_dims": meta.get("audio_dims", "")}


def _file_key(path: Path) -> dict:
    st = path.stat()
    return {"bytes": st.st_size, "mtime": round(st.st_mtime, 3)}


def preprocess(videos_dir: str | os.PathLike, dataset_dir: str | os.PathLike, size: int = 512, workers: int = 2,
               audio_model: str | os.PathLike | None = None, fps: int | None = None, min_frames: int = MIN_FRAMES,
               progress: bool = True, body: bool = False) -> Report:
    """Preprocess every video under `videos_dir` into `dataset_dir` (format: this module's docstring).

    Resumable: a video whose shard is complete and made with the same settings is not processed again, nor
    is a rejected video that has not changed since (report.json). One bad video is reported, never fatal.
    Raises InputError for a missing or empty folder, bad settings, or a dataset made with another size/fps.
    """
    videos_dir, dataset_dir = Path(videos_dir).expanduser(), Path(dataset_dir).expanduser()
    fps = DEFAULT_FPS if fps is None else fps
    _check_args(videos_dir, dataset_dir, size, workers, fps, min_frames)
    settings = Settings(size=size, fps=int(fps), min_frames=min_frames,
                        audio_model=str(Path(audio_model).expanduser()) if audio_model else None, body=bool(body))
    paths = find_videos(videos_dir, exclude=dataset_dir.resolve() if dataset_dir.exists() else None)
    if not paths:
        raise InputError(f"no videos in {videos_dir} (looked for {', '.join(VIDEO_SUFFIXES)})",
                         "put your talking videos in that folder (subfolders are searched too), or point to "
                         "the folder that holds them")
    encoder, signature = None, None
    if settings.audio_model:
        encoder = AudioEncoder(settings.audio_model)  # fails here, once, on a bad folder
        signature = encoder.signature
    index_path, report_path = dataset_dir / "index.json", dataset_dir / "report.json"
    old = _read_json(index_path)
    if old and (old.get("size") != size or old.get("fps") != settings.fps):
        raise InputError(f"is {size} at {settings.fps} fps, but the dataset {dataset_dir} was made with size "
                         f"{old.get('size')} at {old.get('fps')} fps",
                         f"rerun with size {old.get('size')}, or choose a new dataset folder", field="size")
    (dataset_dir / "shards").mkdir(parents=True, exist_ok=True)
    for stale in (dataset_dir / "shards").glob(".*.part"):  # left by an interrupted run (one run per dataset)
        stale.unlink(missing_ok=True)
    old_report = _read_json(report_path) or {}
    report_settings = {k: v for k, v in asdict(settings).items() if k != "audio_model"}
    known_bad = {}
    if old_report.get("settings") == report_settings:
        known_bad = {e["source"]: e for e in old_report.get("skipped", [])}

    entries: dict[str, dict] = {}
    skipped: list[dict] = []
    report = Report()
    tasks = []
    prompts: dict[str, str] = {}
    for path, vid in zip(paths, video_ids(paths, videos_dir)):
        prompt = sidecar_prompt(path)
        if prompt is not None:
            prompts[vid] = prompt
        shard = dataset_dir / "shards" / f"{vid}.safetensors"
        entry = _reusable(shard, settings, signature)
        bad = known_bad.get(str(path))
        if entry is not None:
            entries[vid] = entry
            report.reused.append(vid)
        elif bad is not None and {k: bad.get(k) for k in ("bytes", "mtime")} == _file_key(path):
            skipped.append(bad)
        else:
            tasks.append((str(path), str(shard), vid, settings))

    state = {"last": 0.0}

    def save(final: bool = False) -> None:
        if not final and time.monotonic() - state["last"] < INDEX_WRITE_SECONDS:
            return
        state["last"] = time.monotonic()
        _write_json(index_path, _index(entries, settings, prompts))
        _write_json(report_path, {"version": FORMAT_VERSION, "settings": report_settings,
                                  "skipped": sorted(skipped, key=lambda e: e["source"])})

    def collect(result: tuple[str, dict | None, str | None]) -> None:
        source, entry, reason = result
        if entry is not None:
            entries[entry["id"]] = entry
        else:
            skipped.append({"source": source, "reason": reason, **_file_key(Path(source))})
        save()

    from tqdm import tqdm

    bar = tqdm(total=len(tasks), unit="video", desc="preprocess", file=sys.stderr, disable=not progress or not tasks)
    if workers == 1 or len(tasks) <= 1:
        for path, shard, vid, s in tasks:
            collect(_attempt(Path(path), Path(shard), vid, s, encoder))
            bar.update(1)
    elif tasks:
        encoder = None  # each worker loads its own
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker,
                      initargs=(settings.audio_model, threads)) as pool:
            for result in pool.imap_unordered(_run, tasks):
                collect(result)
                bar.update(1)
    bar.close()
    save(final=True)
    report.processed = sorted(entries)
    report.skipped = [(e["source"], e["reason"]) for e in sorted(skipped, key=lambda e: e["source"])]
    return report


def _index(entries: dict[str, dict], settings: Settings, prompts: dict[str, str] | None = None) -> dict:
    """index.json: settings, the audio features every shard has (or null) and the videos, sorted by id, with
    their prompts (`prompts`: video id -> text) where they have one."""
    prompts = prompts or {}
    kinds = {(e["_audio"], e["_audio_dims"]) for e in entries.values()}
    audio_feats = None
    if len(kinds) == 1:
        signature, dims = kinds.pop()
        if signature:
            kind, _, name = signature.partition(":")
            layers, dim = (int(d) for d in dims.split(","))
            audio_feats = {"kind": kind, "model": name, "layers": layers, "dim": dim}
    return {"version": FORMAT_VERSION, "size": settings.size, "fps": settings.fps, "mel_per_frame": MEL_PER_FRAME,
            "n_mels": N_MELS, "audio_feats": audio_feats,
            "videos": [{**{k: v for k, v in entries[i].items() if not k.startswith("_")},
                        **({"prompt": prompts[i]} if i in prompts else {})} for i in sorted(entries)]}
