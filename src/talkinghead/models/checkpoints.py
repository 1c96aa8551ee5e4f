"""Reading official checkpoint files: local folders only, safe loaders only, strict keys, one clear message."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError

MAX_LISTED = 12  # keys shown per category in a mismatch message


def find_file(folder: Path, candidates: list[str]) -> Path | None:
    """The first of `candidates` (relative paths) that exists in `folder`."""
    for rel in candidates:
        if (folder / rel).is_file():
            return folder / rel
    return None


def require_files(folder: Path, needed: dict[str, list[str]], release: str) -> dict[str, Path]:
    """Resolve every entry of `needed` (label -> accepted relative paths) or raise one CheckpointError
    listing all that are missing, with the names the official release uses."""
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist (expected the {release} release folder)")
    found, missing = {}, []
    for label, candidates in needed.items():
        path = find_file(folder, candidates)
        if path is None:
            missing.append(f"  {label}: {' or '.join(candidates)}")
        else:
            found[label] = path
    if missing:
        raise CheckpointError(f"{folder} is missing files of the {release} release:\n" + "\n".join(missing))
    return found


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a .pth/.ckpt/.bin pickle loaded with weights_only=True."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad file for the user
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}. Only safetensors and "
                              "weights-only torch pickles are loaded; re-download the file if it is truncated.") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
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


def load_vae_folder(folder: Path):
    """A diffusers VAE folder as distributed (sd-vae-ft-mse: config.json + diffusion_pytorch_model.*)."""
    import json

    files = require_files(folder, {
        "VAE config": ["config.json"],
        "VAE weights": ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"],
    }, "sd-vae-ft-mse")
    return load_vae(files["VAE weights"], json.loads(files["VAE config"].read_text()))


# ------------------------------------------------------------------ our own weights: one way to save and load
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def save_pretrained(model: nn.Module, folder: str | Path, config=None) -> Path:
    """`config.json` (the model's typed config, `model.config` unless given) + `model.safetensors` (every
    parameter and persistent buffer) in `folder`: the layout `load_pretrained` reads."""
    import json
    from dataclasses import asdict, is_dataclass

    from safetensors.torch import save_file

    config = model.config if config is None else config
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = config.to_dict() if hasattr(config, "to_dict") else asdict(config) if is_dataclass(config) else dict(config)
    (folder / CONFIG_FILE).write_text(json.dumps(data, indent=1))
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    return folder


def load_pretrained(cls, config_cls, folder: str | Path, name: str):
    """`cls(config_cls.from_dict(config.json))` with the folder's weights loaded strictly; the files missing
    are named in one error."""
    import json

    files = require_files(Path(folder), {"config": [CONFIG_FILE], "weights": [WEIGHTS_FILE]}, name)
    model = cls(config_cls.from_dict(json.loads(files["config"].read_text())))
    load_strict(model, load_state_dict(files["weights"]), files["weights"])
    return model.eval()
