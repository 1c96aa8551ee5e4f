"""The system registry: the warp engine and every seed system, each described once.

A `System` entry says what a system is (name, paper, family, model classes), where its code lives and what it
needs: the engine that renders with it, the verifier that compares it with the official code, the trainer adapter
and stage configs, the weights it runs from (an official release folder, or what `talkinghead train` wrote) and the
front ends it loads from local folders. The CLI's `--engine` and `verify` choices, the web UI's engine list and the
HTTP API's engine field all read this table, so a system added here appears everywhere at once.

Code is named by dotted path ("package.module:attr") and imported only when used: reading the registry imports no
model, no torch and nothing above this package.

Each system's code lives in its own folder, systems/<name>/ (model.py, pipeline.py and/or engine.py, release.py
where official weights exist, verify.py, train.py: what that system adds). What several systems share lives below
them (models/checkpoints.py and unet3d.py, pipelines/reference_net.py, nn/, sampling.py, train/) or, where it builds
on system code, beside them here: unet_adapter.py (the reference-net UNet trainer), reference_training.py,
trained.py (engines over a `talkinghead train` checkpoint), skyreels_common.py (what SkyReels-A1 and A2 share).

Contract for the code an entry points at:
- `engine`: a factory `make(portrait, config: AnimateConfig, warn: bool = True)` returning an animator with
  `fps`, `frame_size`, `n_frames(speech)` and `frames(speech) -> Iterator[np.ndarray]` (RGB uint8), as the warp
  `Animator` and `HalloAnimator` have; `api.render_to_file` drives any of them.
- `release`: `load_release(folder, ...)` in systems/<name>/release.py, which holds everything about the official
  folder (its file list, the key conversion to our names) and loads it strictly from local files.
- `verifier`: `verify(fixture_dir: Path) -> list[verify.Check]`, reading every size, seed and setting from the
  fixture's own files.
- `proven`: the capabilities ("render", "train", "verify") that tests/systems/ proves by running them, so
  `talkinghead systems` never says more than the tests show. "render" (test_registry.py) runs the real CLI with
  the arguments the `tiny_checkpoints` builder of tests/systems/conftest.py returns for the system (a tiny weights
  folder written the way users get one); "verify" (test_verify_all.py) runs `talkinghead verify NAME` on
  shared/fixtures/<fixture> and on a copy with one release weight changed; "train" runs
  `talkinghead train --config F --smoke` for each of its stage configs.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

CAPABILITIES = ("render", "train", "verify")
# Controls by group, as AnimateConfig field names (CLI: --field-name)
RENDER = ("fps", "size", "crop", "face_index", "max_seconds")
ENCODING = ("lossless",)  # applied by the render service to every engine's frames
MOTION = ("head_motion", "blink_rate", "gaze", "mouth_scale", "smile", "brows", "lips_only", "seed")
SAMPLING = ("checkpoint_dir", "steps", "guidance_scale", "scheduler", "dtype", "device")
DIFFUSION = RENDER + ("seed",) + SAMPLING  # what every diffusion engine honours
TRAINED = RENDER + ("seed", "checkpoint_dir", "steps")  # engines over a `talkinghead train` checkpoint (CPU, fp32)
DIT_MEMORY = ("cpu_offload", "vae_tiling")  # the DiT engines' GPU memory options (pipelines/memory.py)


@dataclass(frozen=True)
class System:
    """One system: what it is, where its parts live, what it needs and what is proven to work."""

    name: str  # `--engine NAME`, `verify NAME`
    title: str
    paper: str  # the paper that introduced it (title, year)
    family: str  # "warp" | "unet" | "dit" | "autoregressive"
    models: tuple[str, ...] = ()  # model classes, "module:Class"
    engine: str | None = None  # "module:factory" (see the module docstring)
    verifier: str | None = None  # "module:function"
    fixture: str | None = None  # reference-data folder name (under shared/fixtures) the verifier reads
    trainer: str | None = None  # the `system:` name a training stage config uses
    stage_configs: tuple[str, ...] = ()  # configs/train/<file>.yaml
    weights: str = "own"  # "none" (warp) | "official" (a release folder) | "own" (a `talkinghead train` folder)
    release: str | None = None  # "module:function" loading the official release folder
    release_files: tuple[str, ...] = ()  # what an official release folder must hold (relative paths)
    front_ends: tuple[str, ...] = ()  # "wav2vec2", "whisper", "t5", "umt5", "clip", "siglip": loaded from local folders
    controls: tuple[str, ...] = DIFFUSION  # the AnimateConfig fields (any section) its engine honours; others are refused
    proven: frozenset[str] = field(default_factory=frozenset)  # capabilities backed by tests/systems/
    needs_gpu_for: str = ""  # what cannot run usefully on a CPU (e.g. "official-size sampling")

    def can(self, capability: str) -> bool:
        return capability in self.proven

    def missing(self) -> list[str]:
        """What stands between this system and each capability it does not have here and now."""
        gaps = []
        if not self.can("render"):
            gaps.append("render: " + ("no engine built yet" if self.engine is None else "engine not yet proven by a test"))
        if not self.can("train") and self.weights != "none":
            gaps.append("train: " + ("no trainer adapter yet" if self.trainer is None else "stage configs not yet proven"))
        if self.weights == "official" and not self.can("verify"):
            gaps.append("verify: " + ("no verifier yet" if self.verifier is None else "verifier not yet proven"))
        if self.release_files:
            gaps.append("official weights: a local release folder (--checkpoint-dir) with " + ", ".join(self.release_files))
        elif self.weights == "own":
            gaps.append("weights: none released; pass --checkpoint-dir a folder written by `talkinghead train`")
        if self.front_ends:
            gaps.append("front ends from local folders: " + ", ".join(self.front_ends))
        if self.needs_gpu_for:
            gaps.append("a GPU for " + self.needs_gpu_for)
        return gaps

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "paper": self.paper, "family": self.family,
                "weights": self.weights, "engine": self.engine, "release": self.release, "verifier": self.verifier,
                "trainer": self.trainer,
                "stage_configs": list(self.stage_configs), "release_files": list(self.release_files),
                "front_ends": list(self.front_ends), "controls": list(self.controls),
                **{c: self.can(c) for c in CAPABILITIES}, "missing": self.missing()}


def resolve(path: str):
    """The object a "package.module:attr" path names (relative modules are under talkinghead)."""
    module, _, attr = path.partition(":")
    if module.startswith("."):
        module = "talkinghead" + module
    return getattr(importlib.import_module(module), attr)


_P = frozenset
SYSTEMS: dict[str, System] = {s.name: s for s in (
    System("warp", "Warp (CPU)", "talkinghead's mesh-warp engine: landmarks -> audio-driven motion -> warp", "warp",
           engine=".systems.warp.engine:Animator", weights="none", controls=RENDER + MOTION + ("teeth",),
           proven=_P({"render"})),
    System("emo", "EMO", "EMO: Emote Portrait Alive (2024)", "unet",
           models=(".systems.emo.model:EMONet",), engine=".systems.emo.engine:EMOAnimator", trainer="emo",
           stage_configs=("emo_stage1.yaml", "emo_stage2.yaml", "emo_stage3.yaml"), controls=TRAINED,
           proven=_P({"render", "train"}), needs_gpu_for="paper-size training and sampling"),
    System("hallo", "Hallo", "Hallo: Hierarchical Audio-Driven Visual Synthesis for Portrait Image Animation (2024)",
           "unet", models=(".systems.hallo.model:HalloNet",), engine=".systems.hallo.engine:HalloAnimator",
           verifier=".systems.hallo.verify:verify_hallo", fixture="hallo", trainer="hallo",
           stage_configs=("hallo_stage1.yaml", "hallo_stage2.yaml"), weights="official",
           release=".systems.hallo.release:load_release",
           release_files=("hallo/net.pth", "sd-vae-ft-mse/", "wav2vec/wav2vec2-base-960h/"), front_ends=("wav2vec2",),
           controls=DIFFUSION + ("face_embedding", "pose_weight", "face_weight", "lip_weight"),
           proven=_P({"render", "train", "verify"}), needs_gpu_for="official-size sampling (40 steps at 512 px)"),
    System("hallo2", "Hallo2", "Hallo2: Long-Duration and High-Resolution Audio-Driven Portrait Image Animation (2024)",
           "unet", models=(".systems.hallo.model:HalloNet", ".nn.vq_super_resolution:VQVideoSuperResolution"),
           engine=".systems.hallo2.engine:hallo2_animator",  # the official release, or a `talkinghead train` run
           verifier=".systems.hallo2.verify:verify_hallo2", fixture="hallo2",
           trainer="hallo2", stage_configs=("hallo2_stage1.yaml", "hallo2_stage2.yaml", "hallo2_text.yaml"),
           weights="official", release=".systems.hallo.release:load_release",
           release_files=("hallo2/net.pth", "sd-vae-ft-mse/", "wav2vec/wav2vec2-base-960h/"),
           front_ends=("wav2vec2", "t5"),  # T5: the text variant's prompt encoder
           controls=DIFFUSION + ("face_embedding", "pose_weight", "face_weight", "lip_weight", "super_resolution",
                                 "sr_fidelity", "sr_keep_last_frame", "whole_clips", "prompt"),
           proven=_P({"render", "train", "verify"}), needs_gpu_for="official-size sampling and super-resolution"),
    System("echomimic", "EchoMimic", "EchoMimic: Lifelike Audio-Driven Portrait Animations through Editable Landmark "
           "Conditions (2024)", "unet", models=(".systems.echomimic.model:EchoMimicNet",), fixture="echomimic",
           engine=".systems.echomimic.engine:EchoMimicAnimator",
           verifier=".systems.echomimic.verify:verify_echomimic",
           trainer="echomimic", stage_configs=("echomimic_stage1.yaml", "echomimic_stage2.yaml"), weights="official",
           release=".systems.echomimic.release:load_release",
           release_files=("denoising_unet.pth", "reference_unet.pth", "motion_module.pth", "face_locator.pth",
                          "audio_processor/whisper_tiny.pt", "sd-vae-ft-mse/"),
           front_ends=("whisper",), controls=DIFFUSION + ("pose_video", "average_windows", "window_batch"),
           proven=_P({"render", "train", "verify"}),
           needs_gpu_for="official-size sampling (30 steps at 512 px)"),
    System("emo2", "EMO2", "EMO2: End-Effector Guided Audio-Driven Avatar Video Generation (2025)", "unet",
           models=(".systems.emo2.model:EMO2Stage1Net", ".systems.emo2.model:EMO2Stage2Net"), trainer="emo2",
           engine=".systems.emo2.engine:EMO2Animator", controls=TRAINED, proven=_P({"render", "train"}),
           stage_configs=("emo2_stage1.yaml", "emo2_stage2.yaml"), needs_gpu_for="paper-size training and sampling"),
    System("loopy", "Loopy", "Loopy: Taming Audio-Driven Portrait Avatar with Long-Term Motion Dependency (2024)",
           "unet", models=(".systems.loopy.model:LoopyNet",), engine=".systems.loopy.engine:LoopyAnimator",
           trainer="loopy",
           stage_configs=("loopy_stage1.yaml", "loopy_stage2.yaml"), controls=TRAINED, proven=_P({"render", "train"}),
           needs_gpu_for="paper-size training and sampling"),
    System("hallo3", "Hallo3", "Hallo3: Highly Dynamic and Realistic Portrait Image Animation with Video Diffusion "
           "Transformer (2024)", "dit", models=(".systems.hallo3.model:Hallo3Model",),
           verifier=".systems.hallo3.verify:verify_hallo3", fixture="hallo3",
           trainer="hallo3", stage_configs=("hallo3_stage1.yaml", "hallo3_stage2.yaml"), weights="official",
           engine=".systems.hallo3.engine:Hallo3Animator", release=".systems.hallo3.release:load_release",
           release_files=("hallo3/latest", "hallo3/<latest>/mp_rank_00_model_states.pt",
                          "cogvideox-5b-i2v-sat/vae/3d-vae.pt", "t5-v1_1-xxl/", "wav2vec/wav2vec2-base-960h/"),
           front_ends=("wav2vec2", "t5"), proven=_P({"render", "train", "verify"}),
           controls=("fps", "face_index", "max_seconds", "seed", "checkpoint_dir", "face_embedding", "steps",
                     "guidance_scale", "dtype", "device", "prompt") + DIT_MEMORY,
           needs_gpu_for="official-size sampling (CogVideoX-5B)"),
    System("hallo4", "Hallo4", "Hallo4: High-Fidelity Dynamic Portrait Animation via Direct Preference Optimization "
           "(2025)", "dit", models=(".systems.hallo4.model:Hallo4WanModel",),
           engine=".systems.hallo4.engine:hallo4_animator",  # the official release, or a `talkinghead train` run
           verifier=".systems.hallo4.verify:verify_hallo4", fixture="hallo4",
           trainer="hallo4", stage_configs=("hallo4_sft.yaml", "hallo4_dpo.yaml"), weights="official", front_ends=("wav2vec2", "umt5"),
           release=".systems.hallo4.release:load_release",
           release_files=("hallo4/model_weight.ckpt", "Wan2.1_Encoders/config.json", "Wan2.1_Encoders/Wan2.1_VAE.pth",
                          "Wan2.1_Encoders/models_t5_umt5-xxl-enc-bf16.pth", "Wan2.1_Encoders/google/umt5-xxl/",
                          "wav2vec/wav2vec2-base-960h/"), proven=_P({"render", "train", "verify"}),
           controls=("max_seconds", "seed", "checkpoint_dir", "steps", "guidance_scale", "scheduler", "dtype",
                     "device", "pose_video", "prompt") + DIT_MEMORY,
           needs_gpu_for="official-size sampling (Wan2.1-VACE 1.3B, 81 frames at 480x832)"),
    System("skyreels-a1", "SkyReels-A1", "SkyReels-A1: Expressive Portrait Animation in Video Diffusion Transformers "
           "(2025)", "dit", models=(".systems.skyreels_a1.model:SkyReelsA1",), fixture="skyreels_a1",
           engine=".systems.skyreels_a1.engine:SkyReelsA1Animator",
           verifier=".systems.skyreels_a1.verify:verify_skyreels_a1",
           trainer="skyreels_a1",
           stage_configs=("skyreels_a1_stage1.yaml", "skyreels_a1_stage2.yaml", "skyreels_a1_stage3.yaml"),
           weights="official", front_ends=("siglip",), release=".systems.skyreels_a1.release:load_release",
           release_files=("SkyReels-A1-5B/transformer/", "SkyReels-A1-5B/vae/", "SkyReels-A1-5B/pose_guider/",
                          "SkyReels-A1-5B/scheduler/", "SkyReels-A1-5B/siglip-so400m-patch14-384/"),
           # one frame size (the release's), its own sampler; the motion track's controls drive the landmarks
           controls=("fps", "face_index", "max_seconds", "checkpoint_dir", "steps", "guidance_scale", "dtype",
                     "device", "pose_video") + MOTION + DIT_MEMORY, proven=_P({"render", "train", "verify"}),
           needs_gpu_for="official-size sampling (CogVideoX-5B)"),
    System("skyreels-a2", "SkyReels-A2", "SkyReels-A2: Compose Anything in Video Diffusion Transformers (2025)", "dit",
           models=(".systems.skyreels_a2.model:SkyReelsA2",), fixture="skyreels_a2", trainer="skyreels_a2",
           stage_configs=("skyreels_a2.yaml",),
           verifier=".systems.skyreels_a2.verify:verify_skyreels_a2", weights="official", front_ends=("clip", "umt5"),
           engine=".systems.skyreels_a2.engine:SkyReelsA2Animator", release=".systems.skyreels_a2.release:load_release",
           release_files=("SkyReels-A2/transformer/", "SkyReels-A2/vae/", "SkyReels-A2/image_encoder/",
                          "SkyReels-A2/image_processor/", "SkyReels-A2/text_encoder/", "SkyReels-A2/tokenizer/"),
           # not audio-driven: the prompt and the references make the video; --size sets the width
           controls=("fps", "size", "max_seconds", "seed", "checkpoint_dir", "steps", "guidance_scale", "scheduler",
                     "dtype", "device", "prompt", "reference", "exact_reference_frames") + DIT_MEMORY,
           proven=_P({"render", "train", "verify"}), needs_gpu_for="official-size sampling (Wan2.1 14B)"),
    System("midas", "MIDAS", "MIDAS: Multimodal Interactive Digital-human Synthesis via Real-time Autoregressive "
           "Video Generation (2025)", "autoregressive",
           models=(".systems.midas.model:MidasTransformer", ".systems.midas.model:DCVideoAutoencoder"),
           trainer="midas",
           engine=".systems.midas.engine:MidasAnimator", controls=TRAINED, proven=_P({"render", "train"}),
           stage_configs=("midas_ae1.yaml", "midas_ae2.yaml", "midas_ae3.yaml", "midas_ar.yaml"),
           front_ends=("whisper",), needs_gpu_for="paper-size training and real-time sampling"),
)}


def markdown_table() -> str:
    """The registry as the README shows it (a test keeps the README's copy current)."""
    rows = ["| system | paper | weights | render | train | verify |", "|---|---|---|---|---|---|"]
    for s in SYSTEMS.values():
        rows.append(f"| `{s.name}` | {s.paper} | {s.weights} | "
                    + " | ".join("yes" if s.can(c) else "—" for c in CAPABILITIES) + " |")
    return "\n".join(rows)


def get(name: str) -> System:
    """The system called `name`; an InputError that lists the known ones otherwise."""
    if name not in SYSTEMS:
        from ..errors import InputError

        raise InputError(f"unknown system {name!r}", f"choose one of: {', '.join(SYSTEMS)}")
    return SYSTEMS[name]


def engine_names() -> list[str]:
    """Systems that render (an engine exists), registry order: what `--engine` offers."""
    return [s.name for s in SYSTEMS.values() if s.engine is not None]


def verifier_names() -> list[str]:
    """Systems with a parity verifier: what `talkinghead verify` offers."""
    return [s.name for s in SYSTEMS.values() if s.verifier is not None]


def make_animator(name: str, portrait, config=None, warn: bool = True):
    """An animator of the engine `name` for `portrait` (InputError for an unknown name or one without an engine)."""
    system = get(name)
    if system.engine is None:
        from ..errors import InputError

        raise InputError(f"{name} has no engine yet: {'; '.join(system.missing())}",
                         f"choose one of: {', '.join(engine_names())} (`talkinghead systems` says what each can do)")
    if config is not None:
        check_controls(system, config)
    factory = resolve(system.engine)
    return factory(portrait, config, warn)


def require_release_dir(folder: str | None, engine: str, how: str) -> None:
    """Refuse an empty checkpoint_dir for an engine that runs from an official release: an InputError saying that
    `engine` needs its release folder and, in `how`, where to get one."""
    if not folder:
        from ..errors import InputError

        raise InputError(f"is needed by engine {engine} (its release folder)", how, field="checkpoint_dir")


def check_controls(system: System, config) -> None:
    """Refuse a control set away from its default that `system`'s engine cannot honour, naming the engines
    that do (a silently ignored setting is worse than an error)."""
    from dataclasses import fields

    from ..config import AnimateConfig
    from ..errors import InputError

    defaults = AnimateConfig()
    for section in ("motion", "render", "diffusion"):  # the sections of a config object
        for f in fields(getattr(defaults, section)):
            if f.name in system.controls or f.name in ENCODING or getattr(getattr(config, section), f.name) == getattr(
                    getattr(defaults, section), f.name):
                continue
            others = [s.name for s in SYSTEMS.values() if s.engine is not None and f.name in s.controls]
            raise InputError(f"is not honoured by the {system.name} engine",
                             f"leave it out, or use an engine that honours it: {', '.join(others) or 'none yet'}",
                             field=f.name)


__all__ = ["System", "SYSTEMS", "CAPABILITIES", "get", "engine_names", "verifier_names", "make_animator", "check_controls", "require_release_dir", "markdown_table", "resolve"]
