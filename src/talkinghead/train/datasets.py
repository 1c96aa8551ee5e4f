"""Training clips from a preprocessed dataset (train/preprocess.py): target frames, the motion frames before
them (Hallo2's augmentation optional), a reference frame, audio windows, masks, head pose and EMO speed
buckets, with condition-dropout flags drawn as Hallo and Loopy train classifier-free guidance.

Item of `TalkingClips` (S = `size`, F = clip_frames, M = motion_frames, W = 2 * audio_context + 1):
    frames          float32 (F, 3, S, S) in [-1, 1]   the target frames start .. start + F - 1
    motion_frames   float32 (M, 3, S, S) in [-1, 1]   frames start - M .. start - 1 (the first frame repeated
                                                      before a video's start), augmented when `augment` is set
    reference       float32 (3, S, S) in [-1, 1]      another frame of the video, at least F frames from the
                                                      clip when the video is long enough (else the farthest)
    audio           float32 (F, W, mel_per_frame, 80) log-mel of each target frame and its +-audio_context
                                                      neighbours, zeros outside the video
    audio_feats     float32 (F, W, L, D)              the same from wav2vec2 / whisper (only when every shard
                                                      has them: index.json "audio_feats")
    masks           float32 (3, S, S) in {0, 1}       lip, face, full (full = outside the face box)
    hallo_masks     float32 (3, 64, 64) in [0, 1]     Hallo's soft lip, face, full masks (face/masks.py sizes)
    landmarks       float32 (F, 478, 3)               FaceMesh points of the target frames, pixels of S x S
    pose            float32 (F, 3)                    head yaw, pitch, roll in degrees (nn.speed's order)
    speed           float32 (F,)                      head rotation speed, degrees per frame
    speed_bucket    int64 (F,)                        EMO's speed bucket
    hands, hand_mask, body, body_mask                 EMO2's hand and body keypoints in [0, 1] and their
                                                      masks (only when the shards have them)
    drop_audio, drop_reference, drop_motion   bool ()  condition dropout flags. The dataset never zeroes the
                                                      tensors: the model (or the trainer's system) applies them
    prompt          str                               the video's text prompt (index.json "prompt", from a
                                                      sidecar <video>.txt at preprocessing), "" without one
    video_id str, start int, reference_index int

Every random choice of item i (reference frame, dropout flags, augmentation) comes from a generator seeded by
(seed, epoch, i): the same index always gives the same tensors, which exact resume needs. `set_epoch` changes
the draws between epochs and keeps them reproducible.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..errors import InputError
from .preprocess import FORMAT_VERSION, Shard

VAL_FRACTION = 0.1  # share of the videos held out for validation
BODY_KEYS = ("hands", "hand_mask", "body", "body_mask")  # EMO2 keypoint arrays of a shard (optional)


@dataclass
class ConditionDropout:
    """Per-item probabilities of dropping each condition (classifier-free guidance training); `all_` drops
    audio, reference and motion frames together (Hallo, Loopy)."""

    audio: float = 0.05
    reference: float = 0.05
    motion: float = 0.05
    all_: float = 0.05

    def __post_init__(self) -> None:
        for f in fields(self):
            p = getattr(self, f.name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise ValueError(f"dropout probability {f.name} must be in [0, 1], got {p!r}")

    def draw(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The three flags of one item (always four draws from `generator`, whatever the probabilities)."""
        u = torch.rand(4, generator=generator)
        every = bool(u[0] < self.all_)
        return {
            "drop_audio": torch.tensor(every or bool(u[1] < self.audio)),
            "drop_reference": torch.tensor(every or bool(u[2] < self.reference)),
            "drop_motion": torch.tensor(every or bool(u[3] < self.motion)),
        }


def video_hash(video_id: str) -> float:
    """A video's place in [0, 1), from its id alone (so a video keeps its split when others are added)."""
    seq = np.random.SeedSequence(list(video_id.encode("utf-8")) or [0])
    return int(seq.generate_state(1, np.uint64)[0]) / 2.0**64


def split_videos(ids: list[str], val_fraction: float = VAL_FRACTION) -> tuple[list[str], list[str]]:
    """(train ids, val ids): a video is held out when its hash is below `val_fraction`. With two or more
    videos and val_fraction > 0, at least one is held out and at least one is kept for training."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    h = {i: video_hash(i) for i in ids}
    val = {i for i in ids if h[i] < val_fraction}
    if len(ids) >= 2 and val_fraction > 0:
        if not val:
            val = {min(ids, key=h.get)}
        if len(val) == len(ids):
            val.discard(max(ids, key=h.get))
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def read_index(dataset_dir: str | os.PathLike) -> dict:
    """index.json of a preprocessed dataset; InputError when it is missing or from another format version."""
    path = Path(dataset_dir).expanduser() / "index.json"
    if not path.is_file():
        raise InputError(f"{path.parent} is not a preprocessed dataset (no index.json)",
                         f"run `talkinghead preprocess VIDEOS/ -o {path.parent}` first")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}", "run `talkinghead preprocess` again") from None
    if index.get("version") != FORMAT_VERSION:
        raise InputError(f"{path} has format version {index.get('version')}, this talkinghead reads {FORMAT_VERSION}",
                         "preprocess the videos again into a new folder")
    return index


def _pixels(frames: np.ndarray) -> torch.Tensor:
    """(n, s, s, 3) uint8 -> (n, 3, s, s) float32 in [-1, 1]."""
    # contiguous (b, c, h, w): a permuted view reaches convolutions as channels-last strides, whose backward
    # without a weight gradient crashes the CPU kernels of this torch (a stage that freezes the first convs)
    return (torch.from_numpy(frames).float() / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def _windows(shard: Shard, key: str, start: int, n: int, radius: int) -> torch.Tensor:
    """Rows start-radius .. start+n-1+radius of a per-frame array as (n, 2r+1, ...) float32, zeros outside."""
    total = shard.n_frames
    lo, hi = max(0, start - radius), min(total, start + n + radius)
    rows = shard.array(key, lo, hi).astype(np.float32)  # (hi - lo, ...)
    padded = np.zeros((n + 2 * radius, *rows.shape[1:]), np.float32)
    padded[lo - (start - radius):hi - (start - radius)] = rows
    pick = np.arange(n)[:, None] + np.arange(2 * radius + 1)[None]  # (n, 2r+1)
    return torch.from_numpy(padded[pick])


class TalkingClips(Dataset):
    """Clips of `clip_frames` frames, every `stride` frames (default: clip_frames, plus the last full clip) of
    every video of the split, in the order of the video ids. See the module docstring for the items."""

    def __init__(self, dataset_dir: str | os.PathLike, clip_frames: int = 8, motion_frames: int = 2,
                 audio_context: int = 2, size: int | None = None, dropout: ConditionDropout | None = None,
                 augment=None, seed: int = 0, split: str | None = None, val_fraction: float = VAL_FRACTION,
                 stride: int | None = None):
        self.root = Path(dataset_dir).expanduser()
        index = read_index(self.root)
        for name, value, least in (("clip_frames", clip_frames, 1), ("motion_frames", motion_frames, 0),
                                   ("audio_context", audio_context, 0), ("stride", stride or 1, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
        if split not in (None, "train", "val"):
            raise ValueError(f"split must be None, 'train' or 'val', got {split!r}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
            raise ValueError(f"size must be a whole number >= 8 or None, got {size!r}")
        self.clip_frames, self.motion_frames, self.audio_context = clip_frames, motion_frames, audio_context
        self.stored_size = int(index["size"])
        self.size = size or self.stored_size
        self.fps = float(index["fps"])
        self.mel_per_frame = int(index["mel_per_frame"])
        self.audio_feats = index.get("audio_feats")  # None or {"kind", "model", "layers", "dim"}
        self.dropout = dropout if dropout is not None else ConditionDropout()
        self.seed, self.epoch = int(seed), 0
        self.augment = None
        if augment is not None:
            from ..nn.motion_frame_augment import MotionFrameAugment

            self.augment = MotionFrameAugment(augment).train()
        videos = {v["id"]: v for v in index["videos"]}
        ids = sorted(videos)
        if split is not None:
            train, val = split_videos(ids, val_fraction)
            ids = train if split == "train" else val
        self.videos = [videos[i] for i in ids]
        step = stride or clip_frames
        self._clips: list[tuple[int, int]] = []  # (video number, start)
        for k, v in enumerate(self.videos):
            last = int(v["frames"]) - clip_frames
            if last < 0:
                continue
            starts = list(range(0, last + 1, step))
            if starts[-1] != last:
                starts.append(last)
            self._clips += [(k, s) for s in starts]
        self._shards: dict[int, Shard] = {}

    def __len__(self) -> int:
        return len(self._clips)

    def __getstate__(self) -> dict:  # DataLoader workers open their own shard files
        state = self.__dict__.copy()
        state["_shards"] = {}
        return state

    def keep_clips(self, keep) -> int:
        """Drop the clips for which `keep(shard, start, clip_frames)` is false (e.g. EMO2's clips without
        enough hand frames); returns how many remain. Item indices then count the kept clips only."""
        self._clips = [(k, s) for k, s in self._clips if keep(self.shard(k), s, self.clip_frames)]
        return len(self._clips)

    def set_epoch(self, epoch: int) -> None:
        """Draw other references, dropout flags and augmentations (still reproducible) in this epoch."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """The generator of item `index` in the current epoch."""
        seq = np.random.SeedSequence([self.seed, self.epoch, int(index)])
        return torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0]))

    def shard(self, k: int) -> Shard:
        """Video number k's shard, opened once per process."""
        if k not in self._shards:
            self._shards[k] = Shard(self.root / self.videos[k]["shard"])
        return self._shards[k]

    def reference_index(self, n_frames: int, start: int, generator: torch.Generator) -> int:
        """A frame at least clip_frames away from the clip (uniform among those), or the farthest one."""
        f = self.clip_frames
        before = max(0, start - f + 1)  # frames 0 .. start - f
        after_start = start + 2 * f - 1
        after = max(0, n_frames - after_start)  # frames start + 2f - 1 .. n - 1
        pick = int(torch.randint(0, max(1, before + after), (1,), generator=generator))
        if before + after == 0:
            return 0 if start >= n_frames - start - f else n_frames - 1
        return pick if pick < before else after_start + pick - before

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self._clips):
            raise IndexError(f"clip {index} out of range (0..{len(self._clips) - 1})")
        k, start = self._clips[index]
        shard, video = self.shard(k), self.videos[k]
        f, m, s = self.clip_frames, self.motion_frames, self.size
        g = self.generator(index)
        ref = self.reference_index(shard.n_frames, start, g)
        flags = self.dropout.draw(g)
        motion_idx = [max(0, start - m + j) for j in range(m)]
        pixels = _pixels(shard.frames([*range(start, start + f), *motion_idx, ref], s))  # (f + m + 1, 3, s, s)
        frames, motion, reference = pixels[:f], pixels[f:f + m], pixels[-1]
        if self.augment is not None and m:
            motion = self.augment(motion[None], generator=g)[0]
        item = {
            "frames": frames,
            "motion_frames": motion,
            "reference": reference,
            "audio": _windows(shard, "mel", start, f, self.audio_context),
        }
        if self.audio_feats is not None:
            item["audio_feats"] = _windows(shard, "audio_feats", start, f, self.audio_context)
        landmarks = shard.array("landmarks", start, start + f).astype(np.float32) * (s / shard.size)
        item.update({
            "masks": self._masks(shard, s),
            "hallo_masks": torch.from_numpy(shard.array("hallo_masks").astype(np.float32) / 255.0),
            "landmarks": torch.from_numpy(landmarks),
            "pose": torch.from_numpy(shard.array("pose", start, start + f).astype(np.float32)),
            "speed": torch.from_numpy(shard.array("speed", start, start + f).astype(np.float32)),
            "speed_bucket": torch.from_numpy(shard.array("speed_bucket", start, start + f).astype(np.int64)),
            **self._body(shard, start, f),
            **flags,
            "prompt": video.get("prompt", ""),
            "video_id": video["id"],
            "start": start,
            "reference_index": ref,
        })
        return item

    @staticmethod
    def _body(shard: Shard, start: int, n: int) -> dict[str, torch.Tensor]:
        """EMO2's end effectors of the target frames when the shard has them (preprocess --body): `hands`
        (F, 2, 21, 3) and `body` (F, 12, 2) in [0, 1] of the crop, `hand_mask` (F, 2) and `body_mask` (F, 12)
        float {0, 1} (points found)."""
        if "hands" not in shard.keys:
            return {}
        out = {}
        for key in BODY_KEYS:
            out[key] = torch.from_numpy(shard.array(key, start, start + n).astype(np.float32))
        return out

    @staticmethod
    def _masks(shard: Shard, size: int) -> torch.Tensor:
        """(3, size, size) float32 {0, 1}: the shard's masks, area-resized and thresholded at one half."""
        masks = shard.array("masks")  # (3, S, S) uint8 {0, 1}
        if size != shard.size:
            masks = np.stack([cv2.resize(c.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5
                              for c in masks])
        return torch.from_numpy(masks.astype(np.float32))


def collate(items: list[dict]) -> dict:
    """Batch items: tensors stacked on a new first axis, ints as a tensor, strings as a list (default_collate)."""
    return default_collate(items)
