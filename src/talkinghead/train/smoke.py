"""`talkinghead train CONFIG --smoke`: any stage config, two optimiser steps on its system's tiny variant
and a generated dataset, in a temporary run folder, so CI can run every shipped config in seconds.

The dataset is written in the real preprocessed format (train/preprocess.py's shards and index.json) and read
back by the real `TalkingClips`, so the smoke run exercises the same data path as a full run. Its videos are
drawn, not filmed: a face-coloured ellipse on a gradient whose mouth opens with the loudness of an
amplitude-modulated tone, with landmarks, masks, head pose, EMO speed buckets, log-mel audio (the real
`log_mel`) and hand/body keypoints (EMO2) that follow the same motion. Each system's adapter says how its
config shrinks to the tiny variant (`smoke_overrides`).
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from ..types import SAMPLE_RATE
from .preprocess import FORMAT_VERSION, MEL_PER_FRAME, N_MELS, encode_frame, log_mel, write_shard

SMOKE_FPS = 25
SMOKE_SIZE = 32  # px, stored crop side
SMOKE_FRAMES = 24  # frames per generated video
SMOKE_VIDEOS = 2
SMOKE_STEPS = 2
N_LANDMARKS = 478
BODY_KEYPOINTS = 12  # face.body.BODY_POINTS


def mouth_opening(n: int, phase: float) -> np.ndarray:
    """(n,) mouth opening in [0, 1] per frame: a syllable-rate (4 Hz) envelope."""
    t = np.arange(n) / SMOKE_FPS
    return (0.5 + 0.5 * np.sin(2 * math.pi * 4.0 * t + phase)).astype(np.float32)


def speech_for(opening: np.ndarray, phase: float) -> np.ndarray:
    """A 16 kHz tone (pitch glides with the phase) whose amplitude follows the per-frame opening."""
    n = int(len(opening) * SAMPLE_RATE / SMOKE_FPS)
    t = np.arange(n) / SAMPLE_RATE
    env = np.interp(t * SMOKE_FPS, np.arange(len(opening)), opening)
    tone = np.sin(2 * math.pi * (180.0 + 40.0 * phase) * t) + 0.3 * np.sin(2 * math.pi * 720.0 * t)
    return (0.3 * env * tone).astype(np.float32)


def _landmarks(opening: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 478, 3) points spread over the face ellipse; the lower-middle ones (the 'mouth') move with the
    opening, every point drifts with a slow head sway."""
    base = rng.uniform(-1.0, 1.0, (N_LANDMARKS, 2))
    base /= np.maximum(1.0, np.linalg.norm(base, axis=1, keepdims=True))
    mouth = (np.abs(base[:, 0]) < 0.4) & (base[:, 1] > 0.35)
    n = len(opening)
    sway = 0.03 * size * np.sin(np.arange(n) / SMOKE_FPS * 2 * math.pi * 0.5)
    out = np.zeros((n, N_LANDMARKS, 3), np.float32)
    cx, cy, rx, ry = size / 2, size / 2, 0.3 * size, 0.4 * size
    for i in range(n):
        p = base.copy()
        p[mouth, 1] += 0.15 * opening[i] * np.sign(p[mouth, 1] - 0.55)
        out[i, :, 0] = cx + sway[i] + rx * p[:, 0]
        out[i, :, 1] = cy + ry * p[:, 1]
        out[i, :, 2] = 0.1 * size * (1 - (p ** 2).sum(1))
    return out


def draw_frame(opening: float, sway: float, size: int, hue: int) -> np.ndarray:
    """One RGB frame: gradient, face ellipse, eyes and a mouth whose height follows `opening`."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([40 + 80 * x / size, 60 + 60 * y / size, np.full_like(x, hue)], -1).astype(np.uint8)
    c = (int(size / 2 + sway), size // 2)
    cv2.ellipse(img, c, (int(0.3 * size), int(0.4 * size)), 0, 0, 360, (224, 172, 140), -1)
    for dx in (-0.12, 0.12):
        cv2.circle(img, (int(c[0] + dx * size), int(0.42 * size)), max(1, size // 24), (40, 30, 30), -1)
    mouth_h = max(1, int(0.02 * size + 0.08 * size * opening))
    cv2.ellipse(img, (c[0], int(0.7 * size)), (int(0.1 * size), mouth_h), 0, 0, 360, (120, 30, 40), -1)
    return img


def _masks(landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(3, S, S) {0, 1} lip / face / full (outside the face box) and Hallo's (3, 64, 64) uint8 soft masks."""
    pts = landmarks[..., :2].reshape(-1, 2)
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int)
    masks = np.zeros((3, size, size), np.uint8)
    masks[1, max(0, y0):y1, max(0, x0):x1] = 1
    masks[0, int(0.6 * size):int(0.82 * size), int(0.38 * size):int(0.62 * size)] = 1
    masks[2] = 1 - masks[1]
    hallo = np.stack([cv2.resize(m.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA) for m in masks])
    return masks, (hallo * 255).round().astype(np.uint8)


def _body(opening: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """EMO2 keypoints in [0, 1] of the frame: two 21-point hands that wave with the speech, and the 12 body
    points (upper limbs, then legs), with masks of the points shown (legs are out of a portrait's frame)."""
    n = len(opening)
    hand_shape = rng.uniform(-0.05, 0.05, (21, 3)).astype(np.float32)
    hands = np.zeros((n, 2, 21, 3), np.float32)
    for side, x in enumerate((0.3, 0.7)):
        hands[:, side] = hand_shape + np.array([x, 0.85, 0.0], np.float32)
        hands[:, side, :, 1] -= 0.1 * opening[:, None]
    body = np.tile(np.array([[0.35, 0.8], [0.65, 0.8], [0.3, 0.9], [0.7, 0.9], [0.3, 0.95], [0.7, 0.95],
                             [0.4, 1.2], [0.6, 1.2], [0.4, 1.5], [0.6, 1.5], [0.4, 1.8], [0.6, 1.8]], np.float32),
                   (n, 1, 1))
    body[:, 4:6, 1] -= 0.1 * opening[:, None]  # wrists follow the hands
    body_mask = np.zeros((n, BODY_KEYPOINTS), np.uint8)
    body_mask[:, :6] = 1
    hand_mask = np.ones((n, 2), np.uint8)
    hand_mask[: n // 4, 1] = 0  # the right hand enters late: a missing-hand stretch
    return {"hands": hands, "hand_mask": hand_mask, "body": body, "body_mask": body_mask}


def write_smoke_dataset(folder: str | Path, videos: int = SMOKE_VIDEOS, frames: int = SMOKE_FRAMES,
                        size: int = SMOKE_SIZE, seed: int = 0) -> Path:
    """A preprocessed dataset of `videos` generated videos in `folder` (index.json + shards/)."""
    import torch

    from ..nn.speed import SpeedConfig, head_speed, speed_bucket_index

    folder = Path(folder)
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    entries = []
    for v in range(videos):
        rng = np.random.default_rng([seed, v])
        phase = v * 1.3
        opening = mouth_opening(frames, phase)
        lm = _landmarks(opening, size, rng)
        sway = lm[:, :, 0].mean(1) - size / 2
        masks, hallo = _masks(lm, size)
        t = np.arange(frames) / SMOKE_FPS
        pose = np.stack([6 * np.sin(2 * math.pi * 0.5 * t), 3 * np.sin(2 * math.pi * 0.3 * t + phase),
                         2 * np.sin(2 * math.pi * 0.2 * t)], 1).astype(np.float32)
        speed = head_speed(torch.from_numpy(pose))
        bucket = speed_bucket_index(speed, SpeedConfig().centers)
        arrays = {"landmarks": lm.astype(np.float16), "has_face": np.ones(frames, np.uint8),
                  "box": np.tile(np.array([0, 0, size], np.float32), (frames, 1)), "masks": masks,
                  "hallo_masks": hallo, "pose": pose, "speed": speed.numpy().astype(np.float32),
                  "speed_bucket": bucket.numpy().astype(np.int64),
                  "mel": log_mel(speech_for(opening, phase), frames, SMOKE_FPS), **_body(opening, rng)}
        vid = f"smoke{v:02d}"
        jpeg = folder / "shards" / f".{vid}.jpeg.part"
        offsets = [0]
        with open(jpeg, "wb") as out:
            for i in range(frames):
                frame = draw_frame(opening[i], sway[i], size, 90 + 60 * v)
                offsets.append(offsets[-1] + out.write(encode_frame(frame)))
        arrays["jpeg_offsets"] = np.asarray(offsets, np.int64)
        meta = {"version": str(FORMAT_VERSION), "id": vid, "source": "generated", "fps": str(SMOKE_FPS),
                "size": str(size), "frames": str(frames), "seconds": f"{frames / SMOKE_FPS:.3f}",
                "audio_model": "", "audio_dims": ""}
        write_shard(folder / "shards" / f"{vid}.safetensors", arrays, jpeg, meta)
        jpeg.unlink()
        entries.append({"id": vid, "source": "generated", "frames": frames, "shard": f"shards/{vid}.safetensors",
                        "seconds": round(frames / SMOKE_FPS, 3)})
    index = {"version": FORMAT_VERSION, "size": size, "fps": SMOKE_FPS, "mel_per_frame": MEL_PER_FRAME,
             "n_mels": N_MELS, "audio_feats": None, "videos": entries}
    (folder / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    return folder


def smoke_config(config, folder: str | Path):
    """`config` (a TrainConfig) shrunk for a smoke run in `folder`: its system's tiny variant (the model-size
    overrides of `system.model` dropped), a generated dataset, two steps, fp32, no init_from, small clips; a
    sample grid and a checkpoint at the last step. The stage's train/freeze patterns and options stay."""
    from .adapters import adapter_class

    folder = Path(folder)
    dataset = write_smoke_dataset(folder / "dataset")
    cfg = replace(config, dataset=str(dataset), output_dir=str(folder / "run"), init_from=None,
                  mixed_precision="no", max_steps=SMOKE_STEPS, batch_size=1, grad_accum=1, frame_size=None,
                  clip_frames=min(config.clip_frames, 2), motion_frames=min(config.motion_frames, 2),
                  audio_context=min(config.audio_context, 1), log_every=1, sample_every=SMOKE_STEPS,
                  sample_steps=2, checkpoint_every=SMOKE_STEPS, progress=False,
                  system=replace(config.system, size="tiny", vae=None, model={}))  # the tiny variant's sizes
    return adapter_class(cfg.system.name).smoke_overrides(cfg)


def smoke_train(config, folder: str | Path | None = None):
    """Run `config` as a smoke test (see `smoke_config`) in `folder` (default: a new temporary folder that
    is removed afterwards). Returns the finished Trainer."""
    import shutil
    import tempfile

    from .trainer import train

    own = folder is None
    folder = Path(tempfile.mkdtemp(prefix="talkinghead-smoke-") if own else folder)
    try:
        return train(smoke_config(config, folder), resume=False)
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


__all__ = ["SMOKE_STEPS", "smoke_config", "smoke_train", "write_smoke_dataset"]
