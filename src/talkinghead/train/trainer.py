"""`talkinghead train configs/train/<system>_<stage>.yaml`: one accelerate-based trainer.

Mixed precision, gradient accumulation and checkpointing, EMA (diffusers' EMAModel), checkpoints whose net
(and its EMA weights) are folders `save_pretrained` writes (models/checkpoints.py names the step folder's files),
and exact resume: the data order is a seeded permutation per epoch, every dataset item is
deterministic per index, and every step's noise comes from a generator seeded by (seed, step), so a run
resumed from a checkpoint continues bit-identically. Sample grids and the loss curve are written as
PNG while training.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..config import read_yaml_options
from ..errors import InputError
from .adapters import adapter_class
from .base import SystemConfig

MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class TrainConfig:
    """One training stage. YAML files under configs/train/ map onto it (unknown keys are refused)."""

    dataset: str = ""  # a folder written by `talkinghead preprocess` (or `synth` + `preprocess`)
    output_dir: str = "runs/train"
    system: SystemConfig = field(default_factory=SystemConfig)
    stage: str = "1"  # a label; what it means is the `train`/`freeze` patterns below
    train: list[str] = field(default_factory=lambda: ["*"])  # parameter-name patterns that train
    freeze: list[str] = field(default_factory=list)  # ... minus these
    init_from: str | None = None  # a checkpoint folder of a previous stage to start from
    clip_frames: int = 4
    motion_frames: int = 2
    audio_context: int = 2  # video frames of audio on each side of a frame
    frame_size: int | None = None  # resize dataset frames on the fly (None: as preprocessed)
    dropout: dict = field(default_factory=lambda: {"audio": 0.05, "reference": 0.05, "motion": 0.05, "all_": 0.05})
    augment_motion_frames: bool = False  # Hallo2's patch drop + Gaussian noise on motion frames
    batch_size: int = 2
    grad_accum: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    max_steps: int = 1000
    mixed_precision: str = "no"  # no | fp16 (GPU) | bf16
    gradient_checkpointing: bool = False
    ema_decay: float | None = 0.999
    seed: int = 0
    fixed_noise: bool = False  # the same noise and timestep every step: overfitting one batch, a sanity check
    overfit_batches: int = 0  # > 0: cycle over only this many batches
    log_every: int = 10
    sample_every: int = 200
    sample_steps: int = 20
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    progress: bool = True

    def validate(self) -> "TrainConfig":
        if not self.dataset:
            raise InputError("the config names no dataset", "set dataset: to a folder made by `talkinghead preprocess`")
        if self.mixed_precision not in MIXED_PRECISION:
            raise InputError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}",
                             "use no, fp16 (GPU) or bf16")
        if self.mixed_precision == "fp16" and not torch.cuda.is_available():
            raise InputError("mixed_precision fp16 needs a GPU", "use bf16 or no on a CPU")
        for name in ("batch_size", "grad_accum", "max_steps", "clip_frames", "log_every", "sample_every",
                     "checkpoint_every", "keep_checkpoints"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"{name} must be a whole number >= 1, got {v!r}", f"e.g. {name}: 1")
        adapter_class(self.system.name).check_config(self)  # the system's own rules (clip lengths, options)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown training option(s): {sorted(unknown)}", f"known: {sorted(known)}")
        d = dict(d)
        sys_known = {f.name for f in fields(SystemConfig)}
        sys = d.pop("system", {}) or {}
        if isinstance(sys, str):  # `system: hallo3` is short for `system: {name: hallo3}`
            sys = {"name": sys}
        if not isinstance(sys, dict):
            raise InputError(f"system must be a name or a mapping, got {sys!r}", "e.g. system: {name: emo}")
        bad = set(sys) - sys_known
        if bad:
            raise InputError(f"unknown system option(s): {sorted(bad)}", f"known: {sorted(sys_known)}")
        return cls(system=SystemConfig(**sys), **d)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict | None = None) -> "TrainConfig":
        d = read_yaml_options(path, "pass one of configs/train/*.yaml or your own copy")
        d.update(overrides or {})
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ data order


def batch_indices(step: int, micro: int, config: TrainConfig, n: int) -> list[int]:
    """Dataset indices of one micro-batch: a seeded permutation per epoch, read in order. A pure
    function of (step, micro), so a resumed run sees exactly the batches it would have seen."""
    per_step = config.batch_size * config.grad_accum
    start = step * per_step + micro * config.batch_size
    if config.overfit_batches:
        start %= min(n, config.overfit_batches * config.batch_size)
    out = []
    for pos in range(start, start + config.batch_size):
        epoch, i = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
        out.append(int(perm[i]))
    return out


def step_generator(config: TrainConfig, step: int, micro: int) -> torch.Generator:
    """The noise/timestep generator of one micro-step (the same every step with fixed_noise)."""
    key = 0 if config.fixed_noise else step * 1009 + micro
    return torch.Generator().manual_seed(config.seed * 7919 + key)


# ------------------------------------------------------------------ the trainer


def _fresh_accelerator_state() -> None:
    """accelerate keeps one process-wide state and refuses a second Accelerator with another mixed precision
    ("restart your runtime"); a trainer owns the process while it runs, so it starts from a clean state."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


class Trainer:
    """Build the dataset, system, optimiser and EMA from a TrainConfig; `fit()` trains to max_steps."""

    def __init__(self, config: TrainConfig):
        from accelerate import Accelerator

        self.config = config.validate()
        self.out = Path(config.output_dir)
        _fresh_accelerator_state()
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=1,
                                       cpu=not torch.cuda.is_available())
        adapter = adapter_class(config.system.name)
        adapter.options(config)  # unknown or bad system.options fail before anything is built
        self.dataset = adapter.make_dataset(config)
        if len(self.dataset) == 0:
            raise InputError(f"dataset {config.dataset} has no training clips",
                             "preprocess more (or longer) videos, or lower clip_frames")
        torch.manual_seed(config.seed)  # model initialisation
        self.system = adapter.from_train_config(config, self.dataset)
        if config.init_from:
            self._load_weights(Path(config.init_from))
            self.system.on_weights_loaded()
        self.trainable = self.system.select_trainable(config.train, config.freeze)
        if config.gradient_checkpointing:
            for m in self.system.net.modules():
                if hasattr(m, "enable_gradient_checkpointing") and m is not self.system.net:
                    m.enable_gradient_checkpointing()
        params = [p for p in self.system.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.ema = None
        if config.ema_decay:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(params, decay=config.ema_decay)
        self.system, self.optimizer = self.accelerator.prepare(self.system, self.optimizer)
        self.step = 0
        self.history: list[dict] = []

    # ---------------------------------------------------------- checkpoints

    def _load_weights(self, folder: Path) -> None:
        """init_from: the net of a previous stage's step folder (or of the newest step of its run folder). Modules
        this stage adds keep their initialisation; keys or shapes this net does not have are refused."""
        from ..errors import CheckpointError
        from ..models.checkpoints import MODEL_FOLDER, load_pretrained_into, require_step

        step = folder
        if not (folder / MODEL_FOLDER).is_dir():  # a run folder: its newest step
            steps = sorted((folder / "checkpoints").glob("step-??????"))
            step = steps[-1] if steps else folder
        try:
            load_pretrained_into(self.system.net, require_step(step) / MODEL_FOLDER, strict=False)
        except CheckpointError as e:
            raise InputError(f"init_from {folder}: {e}", "point it at a checkpoint folder of the same system "
                             "and sizes (OUT/checkpoints/step-NNNNNN)") from None

    def _trainable_names(self) -> list[str]:
        """The net's names of the parameters the optimiser and the EMA hold, in their order."""
        names = {id(p): n for n, p in self.accelerator.unwrap_model(self.system).net.named_parameters()}
        params = [p for p in self.system.parameters() if p.requires_grad]
        outside = [p for p in params if id(p) not in names]
        if outside:  # the EMA is saved as weights of the net: a trainable parameter elsewhere could not be
            raise InputError(f"{len(outside)} trainable parameters are not in the system's net",
                             "train only parameters of the net (see the stage's train/freeze patterns)")
        return [names[id(p)] for p in params]

    def save(self) -> Path:
        """checkpoints/step-NNNNNN/: the net (model/) and its EMA weights (model_ema/) as save_pretrained writes
        them, the stage config, the optimiser and trainer state. Written beside and renamed into place, so a
        step folder is complete or absent."""
        from ..models.checkpoints import EMA_FOLDER, MODEL_FOLDER, OPTIMIZER_STATE, TRAIN_CONFIG, TRAINER_STATE

        d = self.out / "checkpoints" / f"step-{self.step:06d}"
        tmp = d.with_name(d.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        net = self.accelerator.unwrap_model(self.system).net
        net.save_pretrained(tmp / MODEL_FOLDER)
        state = {"step": self.step, "history": self.history}
        if self.ema is not None:
            params = [p for p in self.system.parameters() if p.requires_grad]
            self._trainable_names()  # refuses trainable parameters outside the net, which model_ema/ could not hold
            self.ema.store(params)
            self.ema.copy_to(params)
            try:
                net.save_pretrained(tmp / EMA_FOLDER)
            finally:
                self.ema.restore(params)
            state["ema"] = {k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"}
        torch.save(self.optimizer.state_dict(), tmp / OPTIMIZER_STATE)
        (tmp / TRAINER_STATE).write_text(json.dumps(state))
        (tmp / TRAIN_CONFIG).write_text(json.dumps(self.config.to_dict(), indent=2))
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)
        self._prune()
        return d

    def _prune(self) -> None:
        done = sorted((self.out / "checkpoints").glob("step-??????"))
        for old in done[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def latest_checkpoint(self) -> Path | None:
        done = sorted((self.out / "checkpoints").glob("step-??????"))
        return done[-1] if done else None

    def resume(self, folder: Path | None = None) -> int:
        """Restore net, optimiser, EMA and step from `folder` (default: the latest checkpoint); a folder missing
        a file is one CheckpointError naming each."""
        from ..models.checkpoints import (EMA_FOLDER, MODEL_FOLDER, OPTIMIZER_STATE, TRAINER_STATE,
                                          load_pretrained_into, pretrained_state, require_step)

        folder = folder or self.latest_checkpoint()
        if folder is None:
            return 0
        require_step(folder, resume=True)
        load_pretrained_into(self.accelerator.unwrap_model(self.system).net, folder / MODEL_FOLDER)
        self.optimizer.load_state_dict(torch.load(folder / OPTIMIZER_STATE, weights_only=True))
        t = json.loads((folder / TRAINER_STATE).read_text())
        if self.ema is not None and "ema" in t:
            shadow = pretrained_state(folder / EMA_FOLDER)
            params = [p for p in self.system.parameters() if p.requires_grad]
            self.ema.load_state_dict({**t["ema"], "shadow_params": [
                shadow[n].to(p.device, p.dtype) for n, p in zip(self._trainable_names(), params)]})
        self.step, self.history = t["step"], t["history"]
        return self.step

    # ---------------------------------------------------------- training

    def batch(self, indices: list[int]) -> dict:
        from torch.utils.data import default_collate

        items = [self.dataset[i] for i in indices]
        batch = default_collate(items)
        dev = self.accelerator.device
        return {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def train_step(self) -> dict:
        """One optimiser step over grad_accum micro-batches."""
        cfg = self.config
        self.system.train()
        logs = []
        for micro in range(cfg.grad_accum):
            batch = self.batch(batch_indices(self.step, micro, cfg, len(self.dataset)))
            with self.accelerator.autocast():
                loss, log = self.accelerator.unwrap_model(self.system).loss(batch, step_generator(cfg, self.step, micro))
            self.accelerator.backward(loss / cfg.grad_accum)
            logs.append(log)
        if cfg.max_grad_norm:
            self.accelerator.clip_grad_norm_([p for p in self.system.parameters() if p.requires_grad], cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step([p for p in self.system.parameters() if p.requires_grad])
        self.step += 1
        row = {"step": self.step, **{k: float(np.mean([l[k] for l in logs])) for k in logs[0]}}
        self.history.append(row)
        return row

    def fit(self) -> list[dict]:
        """Train to max_steps (continuing from self.step), with logs, sample grids, curves, checkpoints."""
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        from ..models.checkpoints import TRAIN_CONFIG

        (self.out / TRAIN_CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2))
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", desc="train", dynamic_ncols=True)
        with (self.out / "log.jsonl").open("a") as log:
            while self.step < cfg.max_steps:
                row = self.train_step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                if self.step % cfg.sample_every == 0 or self.step == cfg.max_steps:
                    self.write_samples()
                    self.write_curve()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                    self.save()
        if bar is not None:
            bar.close()
        return self.history

    # ---------------------------------------------------------- pictures

    @torch.no_grad()
    def write_samples(self, n: int = 2) -> Path | None:
        """samples/step-NNNNNN.png: per clip, a row of reference | ground truth frames | generated frames
        (with the EMA weights when EMA is on)."""
        import cv2

        system = self.accelerator.unwrap_model(self.system)
        if not hasattr(system, "sample"):  # systems that do not generate frames (autoencoders, motion) have no grid
            return None
        params = [p for p in system.parameters() if p.requires_grad]
        if self.ema is not None:
            self.ema.store(params)
            self.ema.copy_to(params)
        try:
            system.eval()
            idx = list(range(min(n, len(self.dataset))))
            batch = self.batch(idx)
            for k in ("drop_audio", "drop_reference", "drop_motion"):
                batch[k] = torch.zeros_like(batch[k])
            fake = system.sample(batch, torch.Generator().manual_seed(self.config.seed), self.config.sample_steps)
            ref, real = system.target_crops(batch)
        finally:
            if self.ema is not None:
                self.ema.restore(params)
        rows = [torch.cat([ref[i][None], real[i], fake[i].to(real)], 0) for i in range(len(idx))]
        grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # (3, rows*s, cols*s)
        img = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        scale = max(1, 128 // img.shape[0] * 2)
        img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        path = self.out / "samples" / f"step-{self.step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        return path

    def write_curve(self) -> Path:
        """loss.png: the training loss per step and its running mean."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r["step"] for r in self.history]
        loss = np.array([r["loss"] for r in self.history])
        fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
        ax.plot(steps, loss, alpha=0.35, label="loss")
        w = max(1, len(loss) // 20)
        if len(loss) >= w:
            ax.plot(steps[w - 1:], np.convolve(loss, np.ones(w) / w, mode="valid"), label=f"mean of {w}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        path = self.out / "loss.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path


def train(config: TrainConfig, resume: bool = True) -> Trainer:
    """Build a trainer, resume from the latest checkpoint in output_dir when asked, and fit."""
    trainer = Trainer(config)
    if resume:
        trainer.resume()
    trainer.fit()
    return trainer


__all__ = ["TrainConfig", "Trainer", "batch_indices", "step_generator", "train"]
