"""Typed configs. Every control lives here once; the CLI exposes each field as --field-name."""
from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, field, fields

from .errors import InputError

LOOKAHEAD = 0.12  # s, the motion generator never looks further into the audio than this


@dataclass(frozen=True)
class Control:
    """How one config field is offered to users: its help line, range or choices, unit and who may set it.
    The CLI flags, the web app's components, the HTTP API's form and OpenAPI schema, the README's control table
    and validation all read this, so a control is declared once, as a field of a section below."""

    help: str
    range: tuple[float, float | None] | None = None  # inclusive bounds; None as the upper bound: unbounded
    choices: tuple[str, ...] = ()
    unit: str = ""
    step: float | None = None  # a slider's step in the web app (a number without one is a plain number box)
    integer: bool = False  # whole numbers only
    kind: str | None = None  # "path" / "paths" for files named on this machine (default: from the field type)
    client: bool = True  # False: only whoever runs talkinghead sets it (paths, devices), not a remote client


def control(default=MISSING, *, default_factory=MISSING, **meta):
    """A dataclass field that is a user control; `meta` are Control's fields."""
    return field(default=default, default_factory=default_factory, metadata={"control": Control(**meta)})


@dataclass(frozen=True)
class ControlSpec:
    """One control as interfaces see it: config field `name` of `section`, its value kind and declaration."""

    name: str
    section: str
    kind: str  # bool | int | float | str | path | paths
    optional: bool  # None is a valid value (meaning: the engine's own default)
    default: object
    meta: Control

    @property
    def flag(self) -> str:
        """The command-line spelling, also used for form fields and query parameters: `head-motion`."""
        return self.name.replace("_", "-")

    @property
    def label(self) -> str:
        """The words a person reads: `head motion`."""
        return self.name.replace("_", " ")

    def describe(self) -> str:
        """The help line with range, choices, unit and default, as `--help` and the README show it."""
        m, extra = self.meta, []
        if m.choices:
            extra.append(" | ".join(m.choices))
        elif m.range is not None:
            lo, hi = m.range
            extra.append(f"{lo:g}..{hi:g}" if hi is not None else f">= {lo:g}")
        if m.unit:
            extra.append(m.unit)
        if not (self.default is None or self.default is False or self.default == ()):
            extra.append(f"default {self.default}")
        return m.help + (f" ({'; '.join(extra)})" if extra else "")

    def check(self, value):
        """`value` validated (and normalised: whole floats to int for integer controls); InputError otherwise."""
        m = self.meta
        if value is None:
            if self.optional:
                return None
            raise InputError("must be set", self.describe(), field=self.name)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise InputError(f"must be true or false, got {value!r}", "", field=self.name)
            return value
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise InputError(f"must be a number, got {value!r}", self.describe(), field=self.name)
            if (m.integer or self.kind == "int") and not float(value).is_integer():
                raise InputError(f"must be a whole number, got {value!r}", self.describe(), field=self.name)
            if m.range is not None:
                lo, hi = m.range
                if value < lo or (hi is not None and value > hi):
                    span = f"between {lo:g} and {hi:g}" if hi is not None else f"at least {lo:g}"
                    fix = f"pass a number from {lo:g} to {hi:g}" if hi is not None else f"pass {lo:g} or more"
                    raise InputError(f"must be {span}, got {value:g}", fix, field=self.name)
            return int(value) if (m.integer or self.kind == "int") else value
        if m.choices and value not in m.choices:
            raise InputError(f"must be one of {', '.join(m.choices)}, got {value!r}", self.describe(),
                             field=self.name)
        return value


DTYPES = ("fp32", "fp16", "bf16")
SCHEDULERS = ("official", "dpm")


class _Section:
    """Validation shared by the sections: every control field checked against its declaration."""

    def validate(self):
        for spec in section_controls(type(self)):
            setattr(self, spec.name, spec.check(getattr(self, spec.name)))
        return self


@dataclass
class MotionConfig(_Section):
    """The controls users ask for. Defaults give a natural, lively-but-calm speaker."""

    head_motion: float = control(1.0, help="head movement: 0 = still, 1 = natural, 2 = lively", range=(0.0, 2.0),
                                 step=0.05)
    blink_rate: float = control(20.0, help="blinks per minute (0 = never)", range=(0.0, 60.0), unit="per minute",
                                step=1.0)
    gaze: str = control("camera", help="where the eyes look: at the camera (steady) or wandering",
                        choices=("camera", "wander"))
    mouth_scale: float = control(1.0, help="mouth movement: 0 = none, 1 = natural, 2 = exaggerated",
                                 range=(0.0, 2.0), step=0.05)
    smile: float = control(0.0, help="smile held throughout: 0 = neutral .. 1 = broad", range=(0.0, 1.0), step=0.05)
    brows: float = control(1.0, help="brow lifts on emphasis: 0 = never .. 2 = expressive", range=(0.0, 2.0),
                           step=0.05)
    lips_only: bool = control(False, help="only the mouth moves (no head motion, blinks, brows or gaze)")
    seed: int = control(0, help="random seed: all randomness of the render (motion, blinks, gaze; diffusion noise)",
                        range=(0, None), integer=True)


@dataclass
class RenderConfig(_Section):
    """Output geometry, timing and encoding."""

    fps: float = control(25.0, help="frames per second", range=(1.0, 60.0), unit="fps", step=1.0)
    size: int = control(512, help="output frame side in pixels: of the square face crop, or the longest side "
                                  "with crop full", range=(64, 2048), integer=True, unit="px", step=16)
    crop: str = control("face", help="face: a square crop around the face; full: the whole picture",
                        choices=("face", "full"))
    face_index: int | None = control(None, help="which face when the picture has several (0 = the largest)",
                                     range=(0, None), integer=True)
    max_seconds: float = control(600.0, help="refuse speech longer than this", range=(0.1, 24 * 3600.0), unit="s")
    lossless: bool = control(False, help="encode the video losslessly (H.264 at quantiser 0): every decoded frame "
                                         "is exactly the rendered one, for measuring and comparing; files are "
                                         "several times larger")
    teeth: str = control("auto", help="upper teeth in the open mouth: auto = the portrait's own where it shows "
                                      "a clear row of them, else drawn; drawn; own = the portrait's wherever it "
                                      "shows some", choices=("auto", "drawn", "own"))


@dataclass
class DiffusionConfig(_Section):
    """Settings of the diffusion engines; each engine honours the ones its registry entry lists."""

    checkpoint_dir: str | None = control(
        None, kind="path", client=False,
        help="weights folder: an official release folder, or one written by `talkinghead train` for systems "
             "without released weights")
    face_embedding: str | None = control(None, kind="path", client=False,
                                         help="512-d identity embedding file, or an ArcFace .onnx model")
    steps: int | None = control(None, help="denoising steps (default: the system's official count)",
                                range=(1, 1000), integer=True)
    guidance_scale: float | None = control(None, help="classifier-free guidance (default: the system's official "
                                                      "scale)", range=(0.0, 30.0))
    scheduler: str = control("official", help="official: the system's own sampler, which reproduces the official "
                                              "results (DDIM for hallo, hallo2 and echomimic; the release's flow UniPC "
                                              "for hallo4 and skyreels-a2); dpm: DPM-Solver++ (on the same sigmas for "
                                              "the flow DiTs), which needs fewer steps",
                             choices=SCHEDULERS)
    dtype: str = control("fp32", help="weights and activations; fp16/bf16 need a GPU", choices=DTYPES)
    device: str = control("auto", help="auto, cpu, cuda or cuda:N", client=False)
    cpu_offload: bool = control(
        False, client=False,
        help="hallo3, hallo4, skyreels-a1, skyreels-a2: keep each big model (text and image encoders, transformer, "
             "VAE) on the CPU and move it to the GPU only for its own forward, one at a time: far less GPU memory, "
             "slower, the same output; needs a GPU")
    vae_tiling: str = control(
        "auto", client=False, choices=("auto", "on", "off"),
        help="hallo3, hallo4, skyreels-a1, skyreels-a2: VAE encode/decode by overlapping tiles (less GPU memory, "
             "output differs slightly at the seams): auto = as the official release (skyreels-a1 tiles, the "
             "others do not), on = tiles of half the frame each way, off = whole frames")
    # Hallo's hierarchical audio-driven synthesis: how strongly the audio drives each region (official 1.0)
    pose_weight: float | None = control(None, range=(0.0, 5.0),
                                        help="hallo/hallo2: how strongly the audio drives head pose (official 1.0)")
    face_weight: float | None = control(None, range=(0.0, 5.0),
                                        help="hallo/hallo2: how strongly the audio drives facial expression "
                                             "(official 1.0)")
    lip_weight: float | None = control(None, range=(0.0, 5.0),
                                       help="hallo/hallo2: how strongly the audio drives the lips (official 1.0)")
    pose_video: str | None = control(
        None, kind="path", client=False,
        help="echomimic: landmark-driven instead of audio-driven, from a driving video (its face landmarks) or a "
             ".npy landmark file (frames, points, 2|3) in output pixels; skyreels-a1: the same sources, their "
             "motion retargeted onto the portrait's landmarks (a .npy holds FaceMesh's 478 points); hallo4 "
             "(required): the driving skeleton video, a DWPose-style rendering (the official --src_video)")
    average_windows: bool = control(
        False, help="echomimic: average overlapping context windows also at guidance scale <= 1 (fixes an "
                    "official bug: without guidance the audio-driven pipeline sums them; off by default to keep "
                    "the official numbers)")
    window_batch: int = control(
        1, range=(1, 64), integer=True,
        help="echomimic: context windows per UNet call (1, as officially; more is faster on a GPU and gives the "
             "same numbers up to float rounding, at more memory)")
    prompt: str | None = control(None, help="hallo3, hallo4, skyreels-a2: the text prompt (default: the official "
                                            "one, e.g. \"A person is talking.\"); hallo2: the expression prompt "
                                            "of a run trained as its text variant (e.g. \"a smiling person\")")
    reference: tuple[str, ...] = control(
        (), kind="paths", client=False,
        help="skyreels-a2: another reference image composed with the portrait (repeat it; in order, the last is "
             "the background, centre-cropped; the others are subjects padded with white, as the official "
             "infer.py)")
    exact_reference_frames: bool = control(
        False, help="skyreels-a2: drop only the 1 + 4 (n - 1) frames of the n reference slots from each clip "
                    "(fixes an official bug: infer.py always drops 12, which keeps reference frames with 4 or more "
                    "references and loses generated ones with 2; off by default to keep the official output)")
    super_resolution: bool = control(
        False, help="hallo2: restore the frames with its video super-resolution network (needs hallo2/net_g.pth "
                    "in the checkpoint folder); 16 frames at a time at 512x512, as the official video_sr.py")
    sr_fidelity: float | None = control(None, range=(0.0, 1.0),
                                        help="hallo2 super-resolution: fidelity weight w from 0 (codebook only) to "
                                             "1 (official 0.5)")
    sr_keep_last_frame: bool = control(
        False, help="hallo2 super-resolution: keep the last frame (fixes an official bug: video_sr.py drops it; "
                    "off by default to keep the official output)")
    whole_clips: bool = control(
        False, help="hallo2: pad speech longer than 60 s to whole clips from its total length, so the video "
                    "covers every audio frame and ends with the speech (fixes an official bug: its padding rule "
                    "drops a last partial clip, making the video shorter than the speech, or adds a silent extra "
                    "clip; off by default to keep the official output)")

    def validate(self) -> "DiffusionConfig":
        if isinstance(self.reference, str):
            self.reference = tuple(p for p in self.reference.split(os.pathsep) if p)
        self.reference = tuple(self.reference or ())
        super().validate()
        for path in self.reference:
            if not os.path.isfile(path):
                raise InputError(f"{path} does not exist", "pass an image file (jpg, png, webp, ...)",
                                 field="reference")
        return self


# The sections of AnimateConfig, in the order interfaces show them (read at call time, so a control added to a
# section anywhere shows up in every interface).
SECTIONS: dict[str, type] = {"motion": MotionConfig, "render": RenderConfig, "diffusion": DiffusionConfig}


def section_controls(cls) -> list[ControlSpec]:
    """The controls of one section class, in declaration order."""
    out = []
    section = next((k for k, v in SECTIONS.items() if v is cls), cls.__name__)
    for f in fields(cls):
        meta = f.metadata.get("control")
        if meta is None:
            continue
        kind_text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        optional = "None" in kind_text
        kind = meta.kind or next((k for k in ("bool", "int", "float", "tuple", "str") if k in kind_text), "str")
        kind = "paths" if kind == "tuple" else kind
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        out.append(ControlSpec(f.name, section, kind, optional, default, meta))
    return out


def controls() -> list[ControlSpec]:
    """Every control of every section, in the order interfaces show them."""
    return [spec for cls in SECTIONS.values() for spec in section_controls(cls)]


def markdown_controls() -> str:
    """The README's control table (a test keeps it current)."""
    rows = ["| option | section | what it does |", "|---|---|---|"]
    for spec in controls():
        text = spec.describe().replace("|", "\\|")
        rows.append(f"| `--{spec.flag}` | {spec.section} | {text} |")
    return "\n".join(rows)


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
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise InputError(f"unknown config section(s): {sorted(unknown)}", f"use {', '.join(SECTIONS)}")
        return cls(**{name: _from(SECTIONS[name], d.get(name, {})) for name in SECTIONS})


def option_names() -> dict[str, ControlSpec]:
    """Every control by its option spelling (`head-motion`)."""
    return {spec.flag: spec for spec in controls()}


def config_from_options(options: dict) -> AnimateConfig:
    """An AnimateConfig from controls named like the CLI options (`head-motion`, `lips-only`...), values as
    given by a form, a query string or argparse (strings are parsed). Unknown names are refused."""
    known = option_names()
    sections: dict[str, dict] = {name: {} for name in SECTIONS}
    for name, value in options.items():
        key = name.replace("_", "-")
        if key not in known:
            raise InputError(f"unknown option {name!r}", f"known options: {', '.join(sorted(known))}")
        spec = known[key]
        sections[spec.section][spec.name] = parse_value(spec, value)
    return AnimateConfig.from_dict(sections).validate()


def parse_value(spec: ControlSpec, value):
    """A control's value from text (a form field, a query parameter, a command-line word); other values are
    returned as they are, for `validate` to check."""
    if spec.kind == "paths" and isinstance(value, str):
        return tuple(p for p in value.split(os.pathsep) if p)
    if not isinstance(value, str):
        return value
    v = value.strip()
    if spec.kind == "bool":
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off", ""):
            return False
        raise InputError(f"must be true or false, got {value!r}", "e.g. true", field=spec.name)
    if v == "" and spec.optional:
        return None
    if spec.kind in ("int", "float"):
        try:
            num = float(v)
        except ValueError:
            raise InputError(f"needs a number, got {value!r}", spec.describe(), field=spec.name) from None
        if spec.kind == "int" or spec.meta.integer:
            if not num.is_integer():
                raise InputError(f"needs a whole number, got {value!r}", spec.describe(), field=spec.name)
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
