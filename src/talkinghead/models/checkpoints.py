"""Checkpoints: official files read from local folders with safe loaders and strict keys, one clear message for
what is missing; and our own models' one save/load path (`ConfiguredModel`: diffusers' save_pretrained /
from_pretrained over a typed config)."""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import CheckpointError, MissingFilesError

MAX_LISTED = 12  # keys shown per category in a mismatch message


def find_file(folder: Path, candidates: list[str]) -> Path | None:
    """The first of `candidates` (relative paths) that exists in `folder`."""
    for rel in candidates:
        if (folder / rel).is_file():
            return folder / rel
    return None


def require_files(folder: Path, needed: dict[str, list[str]], release: str) -> dict[str, Path]:
    """Resolve every entry of `needed` (label -> accepted relative paths) or raise one MissingFilesError
    listing all that are missing, with the names the official release uses."""
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist (expected the {release} release folder)")
    found, missing = {}, []
    for label, candidates in needed.items():
        path = find_file(folder, candidates)
        if path is None:
            missing.append(f"{label}: {' or '.join(candidates)}")
        else:
            found[label] = path
    if missing:
        raise MissingFilesError(folder, missing, release)
    return found


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a .pth/.ckpt/.bin/.pt pickle loaded with weights_only=True (a dict that
    wraps them under `state_dict`, or under `module` as DeepSpeed/SAT checkpoints do, is unwrapped)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad file for the user
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}. Only safetensors and "
                              "weights-only torch pickles are loaded; re-download the file if it is truncated.") from exc
    for wrapper in ("state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat state dict of tensors")
    return state


def key_report(model_state: dict[str, torch.Tensor], file_state: dict[str, torch.Tensor]) -> list[str]:
    """Lines describing missing keys, unexpected keys and shape mismatches (empty when they agree)."""
    missing = sorted(set(model_state) - set(file_state))
    unexpected = sorted(set(file_state) - set(model_state))
    shapes = sorted(k for k in set(model_state) & set(file_state)
                    if tuple(model_state[k].shape) != tuple(file_state[k].shape))
    lines = []
    for title, keys, fmt in (
            ("missing from the file", missing, lambda k: k),
            ("in the file but not in the model", unexpected, lambda k: k),
            ("with a different shape", shapes,
             lambda k: f"{k}: file {list(file_state[k].shape)} vs model {list(model_state[k].shape)}")):
        if keys:
            lines.append(f"{len(keys)} keys {title}:")
            lines += [f"  {fmt(k)}" for k in keys[:MAX_LISTED]]
            if len(keys) > MAX_LISTED:
                lines.append(f"  ... and {len(keys) - MAX_LISTED} more")
    return lines


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Copy `state` into `model` (cast to the model's dtype); any key or shape difference is a CheckpointError."""
    report = key_report(model.state_dict(), state)
    if report:
        raise CheckpointError(f"{source} does not match the model:\n" + "\n".join(report))
    model.load_state_dict(state, strict=True)


def load_vae(weights: Path, config: dict):
    """An AutoencoderKL built from `config` with `weights` loaded strictly (no hub access)."""
    from diffusers import AutoencoderKL

    import inspect

    accepted = set(inspect.signature(AutoencoderKL.__init__).parameters)
    vae = AutoencoderKL(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in accepted})
    load_strict(vae, load_state_dict(weights), weights)
    return vae.eval()


VAE_FILES = {"VAE config": ["config.json"],
             "VAE weights": ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"]}


def load_vae_folder(folder: Path):
    """A diffusers VAE folder as distributed (sd-vae-ft-mse: config.json + diffusion_pytorch_model.*)."""
    import json

    files = require_files(folder, VAE_FILES, "sd-vae-ft-mse")
    return load_vae(files["VAE weights"], json.loads(files["VAE config"].read_text()))


# ------------------------------------------------------------------ our own weights: one way to save and load
CONFIG_FILE, WEIGHTS_FILE = "config.json", "diffusion_pytorch_model.safetensors"  # diffusers' names


def config_to_dict(config) -> dict:
    """A typed config dataclass as plain data (nested dataclasses included): what config.json holds."""
    return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


def config_from_dict(cls, data: dict):
    """The typed config `cls` from `config_to_dict`'s data: the class's own `from_dict` where it has one, else
    field by field (unknown keys dropped), nested dataclasses and tuples restored from the type hints."""
    if hasattr(cls, "from_dict"):
        return cls.from_dict(data)
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _typed(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


def _typed(hint, value):
    if value is None:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _typed(options[0], value) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return config_from_dict(hint, value)
    if (hint is tuple or typing.get_origin(hint) is tuple) and isinstance(value, list):
        return tuple(value)
    return value


class ConfiguredModel(ModelMixin, ConfigMixin):
    """A model whose sizes are one typed config dataclass (`config_class`), as diffusers models are.

    `Model(config)` or `Model(**fields)`; `model.config` is the typed config, and diffusers' ConfigMixin keeps
    its fields as the model's registered config, so `save_pretrained(folder)` writes config.json +
    diffusion_pytorch_model.safetensors and `from_pretrained(folder)` (local folders only) rebuilds the
    model from them with every key loaded. A folder missing either file is one CheckpointError naming both.
    """

    config_class: type | None = None
    # load by copying into the parameters the constructor made (diffusers would otherwise adopt the file's
    # tensors, whose memory alignment can change the last bits of CPU matmuls: a reloaded model must
    # reproduce the saved one exactly)
    _supports_param_buffer_assignment = False

    def __init__(self, config=None, **fields):
        super().__init__()
        if config is None:
            config = config_from_dict(self.config_class, fields) if fields else self.config_class()
        elif fields:
            raise TypeError(f"{type(self).__name__} takes a config or its fields, not both")
        self._typed_config = config
        self.register_to_config(**config_to_dict(config))

    @property
    def config(self):
        return self._typed_config

    def __getattr__(self, name: str):
        # submodules only: diffusers' fallback would answer a submodule named like a config field (EMO's
        # `speed`, `face_locator`) with the config value
        return nn.Module.__getattr__(self, name)

    @staticmethod
    def _get_init_keys(input_class):
        """The config's field names: what diffusers' `from_config` passes to the constructor."""
        spec = getattr(input_class, "config_class", None)
        if spec is not None and dataclasses.is_dataclass(spec):
            return {"self", *(f.name for f in dataclasses.fields(spec))}
        return ConfigMixin._get_init_keys(input_class)

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs):
        """The model saved by `save_pretrained` in the local `folder` (never a hub id), every key loaded."""
        folder = Path(folder)
        written = f"written by {cls.__name__}.save_pretrained"
        if not folder.is_dir():
            raise CheckpointError(f"{folder} does not exist (expected a folder {written})")
        missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
        if missing:
            raise CheckpointError(f"{folder} is missing {' and '.join(missing)} (the files {written})")
        kwargs.setdefault("local_files_only", True)
        kwargs.setdefault("low_cpu_mem_usage", False)  # build on the CPU, then load: every key is checked
        try:
            model, info = super().from_pretrained(str(folder), output_loading_info=True, **kwargs)
        except (OSError, ValueError, RuntimeError, TypeError) as exc:  # unreadable file, sizes that do not fit
            raise CheckpointError(f"cannot load {cls.__name__} from {folder}: {type(exc).__name__}: {exc}") from exc
        titles = {"missing_keys": "missing from the file", "unexpected_keys": "in the file but not in the model",
                  "mismatched_keys": "with a different shape"}
        problems = [f"{len(info[k])} keys {title}: {', '.join(sorted(map(str, info[k]))[:MAX_LISTED])}"
                    for k, title in titles.items() if info.get(k)]
        if problems:
            raise CheckpointError(f"{folder / WEIGHTS_FILE} does not match {cls.__name__}:\n" + "\n".join(problems))
        return model.eval()


# ------------------------------------------------------------------ training checkpoints
# A step folder of `talkinghead train` (OUT/checkpoints/step-NNNNNN/) holds the trained net as its own
# `save_pretrained` writes it, so `NetClass.from_pretrained(step / "model")` rebuilds it alone; the EMA weights
# as a second such folder (as diffusers' training scripts keep `unet_ema`); the stage config, which rebuilds
# the whole training adapter around the net; and the optimiser and trainer state a resume needs.
MODEL_FOLDER = "model"  # the net, as trained
EMA_FOLDER = "model_ema"  # the net with its EMA weights (runs with ema_decay)
TRAIN_CONFIG = "train_config.json"  # the stage config (train.trainer.TrainConfig)
OPTIMIZER_STATE, TRAINER_STATE = "optimizer.pt", "trainer.json"
SHARD_INDEX = WEIGHTS_FILE + ".index.json"  # diffusers' name when save_pretrained shards a large net


def pretrained_missing(folder: str | Path) -> list[str]:
    """The files of a `save_pretrained` folder that `folder` lacks (config.json, and the weights or their index
    and every shard it names), as paths relative to `folder`'s parent."""
    folder = Path(folder)
    missing = [] if (folder / CONFIG_FILE).is_file() else [CONFIG_FILE]
    index = folder / SHARD_INDEX
    if index.is_file():
        import json

        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        missing += [name for name in shards if not (folder / name).is_file()]
    elif not (folder / WEIGHTS_FILE).is_file():
        missing.append(WEIGHTS_FILE)
    return [f"{folder.name}/{name}" for name in missing]


def step_missing(folder: str | Path, resume: bool = False) -> list[str]:
    """The files a step folder lacks to render (train config, net) or, with `resume`, to continue training."""
    folder = Path(folder)
    missing = [] if (folder / TRAIN_CONFIG).is_file() else [TRAIN_CONFIG]
    missing += pretrained_missing(folder / MODEL_FOLDER)
    if (folder / EMA_FOLDER).is_dir():
        missing += pretrained_missing(folder / EMA_FOLDER)
    if resume:
        missing += [name for name in (OPTIMIZER_STATE, TRAINER_STATE) if not (folder / name).is_file()]
    return missing


def require_step(folder: str | Path, resume: bool = False) -> Path:
    """`folder` when it is a complete step folder, else one CheckpointError naming every missing file."""
    folder = Path(folder)
    missing = step_missing(folder, resume)
    if missing:
        raise CheckpointError(f"checkpoint {folder} is missing {', '.join(missing)} (the files `talkinghead train` "
                              "writes in each checkpoints/step-NNNNNN folder)")
    return folder


def pretrained_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a `save_pretrained` folder (one weights file, or the shards its index names)."""
    folder = Path(folder)
    missing = pretrained_missing(folder)
    if missing:
        raise CheckpointError(f"{folder} is missing {' and '.join(missing)} (the files save_pretrained writes)")
    index = folder / SHARD_INDEX
    if not index.is_file():
        return load_state_dict(folder / WEIGHTS_FILE)
    import json

    state: dict[str, torch.Tensor] = {}
    for name in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        state.update(load_state_dict(folder / name))
    return state


def load_pretrained_into(model: ModelMixin, folder: str | Path, strict: bool = True) -> list[str]:
    """Load a folder that `save_pretrained` wrote into `model`, built already (a training adapter builds its net
    with the stage's sizes). strict: the folder's config.json must describe `model` and every key and shape must
    agree, else a CheckpointError; otherwise keys the model has and the folder lacks are left as they are and
    returned (a stage that adds modules to the previous stage's net), while keys the model lacks or shapes that
    differ are still a CheckpointError."""
    import json

    folder = Path(folder)
    state = pretrained_state(folder)
    if strict:
        saved = {k: v for k, v in json.loads((folder / CONFIG_FILE).read_text()).items() if not k.startswith("_")}
        ours = {k: v for k, v in json.loads(model.to_json_string()).items() if not k.startswith("_")}
        if saved != ours:
            changed = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
            raise CheckpointError(f"{folder / CONFIG_FILE} describes another {type(model).__name__} than the one "
                                  f"built for it (fields {', '.join(changed[:MAX_LISTED])} differ)")
        load_strict(model, state, folder / WEIGHTS_FILE)
        return []
    ours = model.state_dict()
    report = key_report({k: v for k, v in ours.items() if k in state}, state)
    if report:
        raise CheckpointError(f"{folder} does not fit this model:\n" + "\n".join(report))
    missing, _ = model.load_state_dict(state, strict=False)
    return list(missing)
