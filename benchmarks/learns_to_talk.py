"""Does the training stack learn to move a mouth with audio? (CPU or GPU)

    .venv/bin/python benchmarks/learns_to_talk.py --threads 1     # ~45-60 min on 2 busy CPU cores
    .venv/bin/python benchmarks/learns_to_talk.py --quick         # a smoke run of a few minutes

1. SynthTalk: `--clips` warp-engine videos from the bundled portraits and espeak-ng speech in five languages.
2. `preprocess` at `--size` px (face-tracked crops, lip masks, log-mel per frame).
3. Train configs/train/learns_to_talk.yaml (a small EMO-style reference-video net on 16 px crops of the lips,
   v-prediction with min-SNR, EMA) for `--steps` steps; resumes when the run folder has checkpoints.
4. On unseen videos — the dataset's validation videos (split by video id) and `--test-clips` clips rendered
   with another seed — generate each whole video chunk by chunk with the EMA weights from one reference frame
   (each chunk's motion frames are the previous chunk's generated frames when the config has motion frames;
   every chunk starts from the same noise, so only the audio changes between chunks) with
     a) its own audio, and
     b) shuffled audio: another unseen video's audio (the control),
   colour-match the generated crops to the reference and paste them in with a feathered edge, write an mp4
   carrying the video's OWN audio in both cases, and run the eval card's sync measure (talkinghead.eval) on it.
A model that learned to talk tracks (a) clearly better than (b): higher sync confidence and peak correlation.
The real clip's own numbers are printed as the ceiling. Prints a table and writes RUN/report.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "train" / "learns_to_talk.yaml"
OUT_SIZE = 256  # px, side of the evaluated videos (FaceMesh wants more than the 128 px crops)


def prepare(data: Path, clips: int, size: int, seed: int = 0) -> Path:
    """SynthTalk clips and their preprocessed dataset (both resumable)."""
    from talkinghead.train.preprocess import preprocess
    from talkinghead.data.synth import synth

    t0 = time.perf_counter()
    synth(data / "clips", clips=clips, size=size, seed=seed)
    t1 = time.perf_counter()
    report = preprocess(data / "clips", data / "dataset", size=size, workers=2)
    t2 = time.perf_counter()
    print(f"synth {t1 - t0:.0f} s, preprocess {t2 - t1:.0f} s: {len(report.processed)} videos, "
          f"{len(report.skipped)} skipped {report.skipped}", flush=True)
    return data / "dataset"


def match_colour(crops: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(f, 3, s, s) generated crops with each channel's mean and spread set to those of `region` (3, s, s),
    the reference frame under the paste: a 16 px model drifts in colour, the sync measure needs lips."""
    mean, std = crops.mean(dim=(0, 2, 3), keepdim=True), crops.std(dim=(0, 2, 3), keepdim=True)
    return (crops - mean) / (std + 1e-6) * region.std(dim=(1, 2), keepdim=True) + region.mean(dim=(1, 2), keepdim=True)


def feathered(side: int) -> np.ndarray:
    """(side, side, 1) paste weights: 1 inside, a smooth ramp over the outer eighth."""
    ramp = max(2, side // 8)
    d = np.minimum(np.arange(side), np.arange(side)[::-1])
    w = np.clip((d + 0.5) / ramp, 0, 1)
    return (np.minimum(w[:, None], w[None, :]))[..., None].astype(np.float32)


@torch.no_grad()
def generate(system, ds, k: int, audio: torch.Tensor, steps: int, seed: int) -> np.ndarray:
    """Video number k of the held-out dataset `ds`, generated chunk by chunk with `audio` (n, W, 4, 80) as
    its per-frame audio windows. Returns (n, S, S, 3) uint8: the reference frame with the mouth pasted in."""
    from talkinghead.train.datasets import collate

    items = [i for i, (kk, _) in enumerate(ds._clips) if kk == k]
    first = ds[items[0]]
    n = int(ds.videos[k]["frames"])
    reference = first["reference"]  # (3, S, S) one frame of this video, kept for every chunk
    boxes = system.crop_box(first["masks"][None])
    top, left, side = boxes[0]
    weight = torch.from_numpy(feathered(side)).permute(2, 0, 1)  # (1, side, side)
    f, m = ds.clip_frames, ds.motion_frames
    canvas: list[torch.Tensor] = []  # generated frames so far, (3, S, S) in [-1, 1]
    for i in items:
        item = ds[i]
        start = item["start"]
        item["reference"] = reference
        if m:  # the previous chunk's last generated frames (the reference before the first chunk)
            history = canvas[-m:]
            item["motion_frames"] = torch.stack([reference] * (m - len(history)) + history)
        rows = np.arange(start, start + f) % len(audio)
        item["audio"] = audio[rows]
        for flag in ("drop_audio", "drop_reference", "drop_motion"):
            item[flag] = torch.tensor(False)
        # the same starting noise for every chunk: what changes from chunk to chunk is the audio, not the draw
        crops = system.sample(collate([item]), torch.Generator().manual_seed(seed), steps)[0]  # (f, 3, c, c)
        crops = torch.nn.functional.interpolate(crops, size=(side, side), mode="bicubic", align_corners=False)
        crops = match_colour(crops, reference[:, top:top + side, left:left + side])
        for j in range(f):
            if start + j < len(canvas):
                continue  # the last clip of a video overlaps the one before it
            frame = reference.clone()
            region = frame[:, top:top + side, left:left + side]
            frame[:, top:top + side, left:left + side] = weight * crops[j].clamp(-1, 1) + (1 - weight) * region
            canvas.append(frame)
    video = torch.stack(canvas[:n])
    return ((video.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()


def sync_card(frames: np.ndarray, source: Path, path: Path, fps: float) -> dict:
    """Write `frames` with the audio of `source` and return the eval card's sync group."""
    from talkinghead.eval.card import evaluate
    from talkinghead.io import encode_frames, load_audio

    big = [cv2.resize(f, (OUT_SIZE, OUT_SIZE), interpolation=cv2.INTER_CUBIC) for f in frames]
    encode_frames(big, path, fps, audio=load_audio(source))
    return evaluate(path)["sync"]


def audio_of(ds, k: int) -> torch.Tensor:
    """(n, W, 4, 80) per-frame audio windows of video number k."""
    from talkinghead.train.datasets import _windows

    shard = ds.shard(k)
    return _windows(shard, "mel", 0, shard.n_frames, ds.audio_context)


def evaluate_heldout(trainer, dataset: Path, out: Path, steps: int, split: str | None = "val") -> list[dict]:
    from talkinghead.eval.card import evaluate
    from talkinghead.train.datasets import ConditionDropout, TalkingClips

    cfg = trainer.config
    system = trainer.accelerator.unwrap_model(trainer.system)
    params = [p for p in system.parameters() if p.requires_grad]
    if trainer.ema is not None:
        trainer.ema.copy_to(params)
    system.eval()
    ds = TalkingClips(dataset, clip_frames=cfg.clip_frames, motion_frames=cfg.motion_frames,
                      audio_context=cfg.audio_context, size=cfg.frame_size, dropout=ConditionDropout(0, 0, 0, 0),
                      seed=cfg.seed, split=split)
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    rows = []
    v = len(ds.videos)
    for k, video in enumerate(ds.videos):
        source = Path(video["source"])
        t0 = time.perf_counter()
        own = generate(system, ds, k, audio_of(ds, k), steps, seed=k)
        # the control: another held-out video's audio (or, with one held-out video, its own rolled by half)
        shuffled = audio_of(ds, (k + 1) % v) if v > 1 else audio_of(ds, k).roll(int(video["frames"]) // 2, 0)
        other = generate(system, ds, k, shuffled, steps, seed=k)  # same noise, other audio
        row = {"video": video["id"], "frames": int(video["frames"]),
               "correct": sync_card(own, source, out / "heldout" / f"{video['id']}_correct.mp4", ds.fps),
               "shuffled": sync_card(other, source, out / "heldout" / f"{video['id']}_shuffled.mp4", ds.fps),
               "real": evaluate(source)["sync"], "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"{row['video']}: confidence correct {row['correct']['confidence']} shuffled "
              f"{row['shuffled']['confidence']} real {row['real']['confidence']} ({row['seconds']} s)", flush=True)
    return rows


def mean(values) -> float | None:
    vals = [x for x in values if x is not None]
    return round(float(np.mean(vals)), 3) if vals else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/learns_to_talk", help="folder for the clips and dataset")
    p.add_argument("--out", default="runs/learns_to_talk", help="training run folder")
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--size", type=int, default=128, help="clip and crop side in px")
    p.add_argument("--steps", type=int, default=1000, help="training steps")
    p.add_argument("--sample-steps", type=int, default=20, help="DDIM steps per generated chunk")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default torch's; 1 is much faster when other jobs share the cores)")
    p.add_argument("--test-clips", type=int, default=8,
                   help="extra unseen SynthTalk clips (another seed: new sentences, framings, motion) to evaluate on")
    p.add_argument("--quick", action="store_true", help="8 clips, 60 steps, 4 DDIM steps: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.steps, args.sample_steps, args.test_clips = 8, 60, 4, 2

    from talkinghead.train.trainer import TrainConfig, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    data, out = Path(args.data), Path(args.out)
    t0 = time.perf_counter()
    dataset = prepare(data, args.clips, args.size)
    t1 = time.perf_counter()
    cfg = TrainConfig.from_yaml(CONFIG, {"dataset": str(dataset), "output_dir": str(out), "max_steps": args.steps,
                                         "sample_every": max(50, args.steps // 6),
                                         "checkpoint_every": max(50, args.steps // 6)})
    trainer = Trainer(cfg)
    done = trainer.resume()
    trainer.fit()
    t2 = time.perf_counter()
    loss = [r["loss"] for r in trainer.history]
    print(f"trained {trainer.step} steps ({trainer.step - done} now) in {t2 - t1:.0f} s; loss first 20 "
          f"{np.mean(loss[:20]):.4f}, last 20 {np.mean(loss[-20:]):.4f}; curve {out / 'loss.png'}", flush=True)
    rows = evaluate_heldout(trainer, dataset, out, args.sample_steps)  # the validation videos of the dataset
    if args.test_clips:  # and a test set rendered with another seed, never seen in training
        test = prepare(data / "test", args.test_clips, args.size, seed=1)
        rows += evaluate_heldout(trainer, test, out, args.sample_steps, split=None)
    t3 = time.perf_counter()

    keys = ("confidence", "peak_correlation", "offset_frames")
    summary = {c: {k: mean(r[c][k] for r in rows) for k in keys} for c in ("correct", "shuffled", "real")}
    wins = sum(1 for r in rows if (r["correct"]["confidence"] or 0) > (r["shuffled"]["confidence"] or 0))
    report = {"clips": args.clips, "size": args.size, "steps": trainer.step, "train_seconds": round(t2 - t1, 1),
              "prepare_seconds": round(t1 - t0, 1), "eval_seconds": round(t3 - t2, 1),
              "loss_first20": float(np.mean(loss[:20])), "loss_last20": float(np.mean(loss[-20:])),
              "heldout": rows, "summary": summary, "correct_beats_shuffled": f"{wins}/{len(rows)}"}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print("\n| held-out audio | sync confidence | peak correlation | offset (frames) |")
    print("|---|---|---|---|")
    for c, label in (("correct", "correct (generated)"), ("shuffled", "shuffled (generated)"), ("real", "real clip")):
        s = summary[c]
        print(f"| {label} | {s['confidence']} | {s['peak_correlation']} | {s['offset_frames']} |")
    print(f"\ncorrect beats shuffled on {wins}/{len(rows)} held-out videos; training {t2 - t1:.0f} s "
          f"({trainer.step} steps), data {t1 - t0:.0f} s, evaluation {t3 - t2:.0f} s; {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
