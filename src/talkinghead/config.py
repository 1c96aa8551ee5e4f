"""Typed configs. Every control lives here once; the CLI exposes each field as --field-name."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

from .errors import InputError

LOOKAHEAD = 0.12  # s, the motion generator never looks further into the audio than this


# One line of help per control, shown by the CLI (--help) and the web app (slider info)
HELP = {
    "head_motion": "head movement: 0 = still, 1 = natural, 2 = lively",
    "blink_rate": "blinks per minute (0 = never)",
    "gaze": "camera (steady) or wander",
    "mouth_scale": "mouth movement: 0 = none, 1 = natural, 2 = exaggerated",
    "smile": "smile held throughout, 0..1",
    "brows": "brow lifts on emphasis, 0 = never .. 2 = expressive",
    "lips_only": "only the mouth region moves",
    "seed": "random seed: all randomness of the render (motion, blinks, gaze; diffusion noise)",
    "fps": "frames per second",
    "size": "output size in pixels (side of the square face crop, or longest side with --crop full)",
    "crop": "face (square crop around the face) or full (keep the whole picture)",
    "face_index": "which face when the picture has several (0 = largest)",
    "max_seconds": "refuse audio longer than this",
}


def _check_range(name: str, value, lo: float, hi: float) -> None:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{flag} must be a number, got {value!r}", f"pass a value between {lo} and {hi}")
    if not (lo <= float(value) <= hi):  # also rejects NaN
        raise InputError(f"{flag} must be between {lo} and {hi}, got {value}", f"pass a value between {lo} and {hi}")


@dataclass
class MotionConfig:
    """The controls users ask for. Defaults give a natural, lively-but-calm speaker."""

    head_motion: float = 1.0  # 0 = still head .. 1 = natural .. 2 = lively
    blink_rate: float = 20.0  # blinks per minute (0 = never)
    gaze: str = "camera"  # "camera" (steady) or "wander"
    mouth_scale: float = 1.0  # 0 = mouth never moves .. 2 = exaggerated
    smile: float = 0.0  # 0 = neutral .. 1 = broad smile held throughout
    brows: float = 1.0  # brow lift on emphasis: 0 = never .. 2 = expressive
    lips_only: bool = False  # only the mouth region moves (no head, blinks, brows or gaze)
    seed: int = 0  # all randomness (head, blinks, gaze) comes from this seed

    def validate(self) -> "MotionConfig":
        _check_range("head_motion", self.head_motion, 0.0, 2.0)
        _check_range("blink_rate", self.blink_rate, 0.0, 60.0)
        _check_range("mouth_scale", self.mouth_scale, 0.0, 2.0)
        _check_range("smile", self.smile, 0.0, 1.0)
        _check_range("brows", self.brows, 0.0, 2.0)
        if self.gaze not in ("camera", "wander"):
            raise InputError(f"--gaze must be 'camera' or 'wander', got {self.gaze!r}", "use --gaze camera or --gaze wander")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"--seed must be a non-negative integer, got {self.seed!r}", "e.g. --seed 0")
        return self


@dataclass
class RenderConfig:
    """Output geometry and timing."""

    fps: float = 25.0
    size: int = 512  # output side (crop="face") or longest side (crop="full"), pixels
    crop: str = "face"  # "face": square crop centred on the face; "full": keep the whole frame
    face_index: int | None = None  # which face when there are several (0 = largest)
    max_seconds: float = 600.0  # refuse longer audio

    def validate(self) -> "RenderConfig":
        _check_range("fps", self.fps, 1.0, 60.0)
        _check_range("size", self.size, 64, 2048)
        if int(self.size) != self.size:
            raise InputError(f"--size must be a whole number of pixels, got {self.size}", "e.g. --size 512")
        self.size = int(self.size)
        if self.crop not in ("face", "full"):
            raise InputError(f"--crop must be 'face' or 'full', got {self.crop!r}", "use --crop face or --crop full")
        if self.face_index is not None and (not isinstance(self.face_index, int) or self.face_index < 0):
            raise InputError(f"--face-index must be a non-negative integer, got {self.face_index!r}", "0 is the largest face")
        _check_range("max_seconds", self.max_seconds, 0.1, 24 * 3600)
        return self


DTYPES = ("fp32", "fp16", "bf16")
SCHEDULERS = ("ddim", "dpm")


@dataclass
class DiffusionConfig:
    """Settings of the diffusion engines; each engine honours the ones its registry entry lists."""

    checkpoint_dir: str | None = None  # the official release folder (pretrained_models/)
    face_embedding: str | None = None  # a 512-d embedding file, or an ArcFace .onnx model to compute it
    steps: int | None = None  # denoising steps (None: the official 40)
    guidance_scale: float | None = None  # classifier-free guidance (None: the official 3.5)
    scheduler: str = "ddim"  # "ddim" (official) or "dpm" (DPM-Solver++, good at 15-25 steps)
    dtype: str = "fp32"  # fp32 | fp16 | bf16 (half precision needs a GPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Hallo's hierarchical audio-driven synthesis: how strongly the audio drives each region (official 1.0)
    pose_weight: float | None = None  # head pose / full-image branch
    face_weight: float | None = None  # facial-expression branch
    lip_weight: float | None = None  # lip-motion branch
    # EchoMimic, SkyReels-A1: landmark-driven instead of audio-driven, from a driving video or a .npy
    # landmark file
    pose_video: str | None = None
    # EchoMimic: average overlapping context windows also without guidance (official: summed there, a bug)
    average_windows: bool = False
    # EchoMimic: context windows per UNet call (official 1; more is faster on a GPU, same numbers up to rounding)
    window_batch: int = 1
    # Hallo3: the text prompt its T5 encoder reads (None: "A person is talking.")
    prompt: str | None = None
    # SkyReels-A2: reference images composed with --image, in order (the last is the background); a string holds
    # paths separated by os.pathsep
    reference: tuple[str, ...] = ()
    # SkyReels-A2: drop only the 1 + 4 (n - 1) frames of the n reference slots from each clip (infer.py always
    # drops 12, right only for 3 references: a bug that keeps reference frames or loses generated ones)
    exact_reference_frames: bool = False
    # Hallo2: restore the rendered frames with its video super-resolution network (`hallo2/net_g.pth`); frames
    # are restored 16 at a time at the network's 512x512
    super_resolution: bool = False
    sr_fidelity: float | None = None  # Hallo2 SR fidelity weight w in [0, 1] (None: official 0.5; 0: codes only)
    sr_keep_last_frame: bool = False  # Hallo2 SR: keep the last frame (official video_sr.py drops it, a bug)

    def validate(self) -> "DiffusionConfig":
        if isinstance(self.reference, str):
            self.reference = tuple(p for p in self.reference.split(os.pathsep) if p)
        self.reference = tuple(self.reference or ())
        for path in self.reference:
            if not os.path.isfile(path):
                raise InputError(f"--reference {path} does not exist", "pass an image file (jpg, png, webp, ...)")
        if isinstance(self.window_batch, bool) or int(self.window_batch) != self.window_batch or \
                not 1 <= self.window_batch <= 64:
            raise InputError(f"--window-batch must be a whole number from 1 to 64, got {self.window_batch}",
                             "e.g. --window-batch 4 on a GPU (1 is the official one window per call)")
        for name in ("pose_weight", "face_weight", "lip_weight"):
            if getattr(self, name) is not None:
                _check_range(name, getattr(self, name), 0.0, 5.0)
        if self.sr_fidelity is not None:
            _check_range("sr_fidelity", self.sr_fidelity, 0.0, 1.0)
        if self.steps is not None and (int(self.steps) != self.steps or not 1 <= self.steps <= 1000):
            raise InputError(f"--steps must be a whole number from 1 to 1000, got {self.steps}", "e.g. --steps 40")
        if self.guidance_scale is not None:
            _check_range("guidance_scale", self.guidance_scale, 0.0, 30.0)
        if self.scheduler not in SCHEDULERS:
            raise InputError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}",
                             "ddim reproduces the official results; dpm needs fewer steps")
        if self.dtype not in DTYPES:
            raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}", "e.g. --dtype fp16")
        return self


@dataclass
class AnimateConfig:
    """Everything one render needs besides the inputs."""

    motion: MotionConfig = field(default_factory=MotionConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def validate(self) -> "AnimateConfig":
        self.motion.validate()
        self.render.validate()
        self.diffusion.validate()
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AnimateConfig":
        unknown = set(d) - {"motion", "render", "diffusion"}
        if unknown:
            raise InputError(f"unknown config section(s): {sorted(unknown)}", "use 'motion', 'render' and 'diffusion'")
        return cls(motion=_from(MotionConfig, d.get("motion", {})), render=_from(RenderConfig, d.get("render", {})),
                   diffusion=_from(DiffusionConfig, d.get("diffusion", {})))


_SECTIONS = (("motion", MotionConfig), ("render", RenderConfig), ("diffusion", DiffusionConfig))


def option_names() -> dict[str, tuple[str, type]]:
    """Every control as its CLI spelling (`head-motion`) -> (section, field type name)."""
    return {f.name.replace("_", "-"): (section, f.type) for section, cls in _SECTIONS for f in fields(cls)}


def config_from_options(options: dict) -> AnimateConfig:
    """An AnimateConfig from controls named like the CLI options (`head-motion`, `lips-only`...),
    values as given by a form or query string (strings are parsed). Unknown names are refused."""
    known = option_names()
    sections: dict[str, dict] = {"motion": {}, "render": {}, "diffusion": {}}
    for name, value in options.items():
        key = name.replace("_", "-")
        if key not in known:
            raise InputError(f"unknown option {name!r}", f"known options: {', '.join(sorted(known))}")
        section, kind = known[key]
        sections[section][key.replace("-", "_")] = _parse(key, value, kind)
    return AnimateConfig.from_dict(sections).validate()


def _parse(flag: str, value, kind: str):
    if not isinstance(value, str):
        return value
    v = value.strip()
    if kind in ("bool", bool):
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off", ""):
            return False
        raise InputError(f"--{flag} must be true or false, got {value!r}", f"e.g. {flag}=true")
    if v == "" and "None" in str(kind):
        return None
    if "int" in str(kind) or "float" in str(kind):
        try:
            num = float(v)
        except ValueError:
            raise InputError(f"--{flag} needs a number, got {value!r}", f"e.g. {flag}=1") from None
        if "int" in str(kind) and "float" not in str(kind):
            if not num.is_integer():
                raise InputError(f"--{flag} needs a whole number, got {value!r}", f"e.g. {flag}=0")
            return int(num)
        return num
    return v


def _from(cls, d: dict):
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise InputError(f"unknown {cls.__name__} field(s): {sorted(unknown)}", f"known fields: {sorted(names)}")
    return cls(**d)


def read_yaml_options(path, hint: str) -> dict:
    """The mapping of options in a YAML config file (training stages, model configs); one InputError for a
    missing file, invalid YAML or a file that is not a mapping. `hint` names the configs to pass instead."""
    from pathlib import Path

    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"config {p} not found", hint)
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise InputError(f"config {p} is not valid YAML: {e}", "fix the file's syntax") from None
    if not isinstance(d, dict):
        raise InputError(f"config {p} must be a mapping of options (key: value lines)", hint)
    return d
