"""`talkinghead verify hallo2 DIR`: run our Hallo2 parts on reference data made by the official code and compare
every stored output. DIR holds (directly or as subfolders, see the hallo2 reference data's README):
- a super-resolution folder: config.json, net_g.pth (`{'params_ema': ...}`), io.safetensors;
- a long-video folder: config.json (with `mask_rate` and the sha256 of the Hallo net it ran), io.safetensors;
  the Hallo reference folder holding that net (net.pth, vae_tiny.safetensors, config.json, io.safetensors for
  the inputs) is found beside DIR (`DIR/../hallo/*`) or inside it, by its sha256;
- `manifests/`: the key manifests of the full-size `net.pth` and `net_g.tsv`, checked on the meta device.
Every size, seed, step and setting comes from those files."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import InputError
from ...verify import Check, compare

SR_REL_TOL = 1e-5  # fixture README: atol = 1e-5 x max|reference| per tensor, indices exact
TOL_EXACT = 1e-5  # projections
TOL_CLIP = 1e-3  # a clip of the long loop (guided outputs, latents, video) from the stored inputs
TOL_CHAINED = 1e-2  # clip t > 0 fed with our own previous clip (differences amplify through the motion frames)


def is_sr_fixture(folder: Path) -> bool:
    return (folder / "net_g.pth").is_file() and (folder / "io.safetensors").is_file()


def is_long_fixture(folder: Path) -> bool:
    if not ((folder / "io.safetensors").is_file() and (folder / "config.json").is_file()):
        return False
    return "mask_rate" in json.loads((folder / "config.json").read_text()).get("settings", {})


def verify_hallo2(root: Path) -> list[Check]:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder", "pass a Hallo2 reference-data folder (made by running the official code on a tiny config)")
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    checks: list[Check] = []
    found = False
    for folder in candidates:
        if is_sr_fixture(folder):
            checks += check_super_resolution(folder)
            found = True
        if is_long_fixture(folder):
            checks += check_long_video(folder)
            found = True
        if (folder / "hallo2_net_g.tsv").is_file():
            checks += check_manifests(folder)
            found = True
    if not found:
        raise InputError(f"{root} holds no Hallo2 reference data",
                         "expected net_g.pth + io.safetensors (super-resolution), config.json with settings.mask_rate "
                         "+ io.safetensors (long video) or manifests/hallo2_net_g.tsv, in the folder or a subfolder")
    return checks


# -- manifests -------------------------------------------------------------------------------------------------
def read_manifest(path: Path) -> dict[str, tuple[int, ...]]:
    """`key<TAB>[shape]<TAB>dtype` lines -> key -> shape."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")[:2]
            out[key] = tuple(json.loads(shape))
    return out


def manifest_mismatches(model: torch.nn.Module, manifest: dict[str, tuple[int, ...]]) -> list[str]:
    """Keys missing on either side or with another shape (empty when the model matches key for key)."""
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    bad = [f"only in ours: {k}" for k in sorted(set(ours) - set(manifest))]
    bad += [f"only in the release: {k}" for k in sorted(set(manifest) - set(ours))]
    bad += [f"{k}: ours {ours[k]} vs release {manifest[k]}" for k in sorted(set(ours) & set(manifest))
            if ours[k] != manifest[k]]
    return bad


def check_manifests(folder: Path) -> list[Check]:
    """Our full-size networks built on the meta device against the release manifests (0 mismatches)."""
    from ..hallo.model import HalloNet
    from ...nn.vq_super_resolution import VQSuperResolutionConfig, VQVideoSuperResolution

    checks = []
    with torch.device("meta"):
        sr = VQVideoSuperResolution(VQSuperResolutionConfig())
    bad = manifest_mismatches(sr, read_manifest(folder / "hallo2_net_g.tsv"))
    checks.append(Check(f"{folder.name}/hallo2_net_g.tsv keys+shapes (mismatches)", float(len(bad)), 0.0))
    if (folder / "hallo2_net.tsv").is_file():
        with torch.device("meta"):
            net = HalloNet()
        bad = manifest_mismatches(net, read_manifest(folder / "hallo2_net.tsv"))
        checks.append(Check(f"{folder.name}/hallo2_net.tsv keys+shapes (mismatches)", float(len(bad)), 0.0))
    return checks


# -- super-resolution ----------------------------------------------------------------------------------------------
def sr_input(frames_u8: torch.Tensor, size: int) -> torch.Tensor:
    """(b, f, 3, h, w) uint8 RGB -> (b, f, 3, size, size) in [-1, 1], enlarged by pixel repetition, as the
    recorded run fed the network: (float32(u8 / 255) - 0.5) / 0.5."""
    k = size // frames_u8.shape[-1]
    x = frames_u8.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
    return ((x.double() / 255.0).float() - 0.5) / 0.5


def summarise(key: str, t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Our full tensor reduced the way the stored key was (`.avgpool8x8`, `.crop_br16`, `.avgpoolK`,
    `.crop_{tl,center,br}`, `.mean_hw`); the summary sizes come from the stored tensor's shape."""
    last = key.rsplit(".", 1)[-1]
    side = t.shape[-1]
    if last.startswith("avgpool"):
        k = side // ref.shape[-1]
        return F.avg_pool2d(t.flatten(0, -4), k).view(ref.shape)
    c = ref.shape[-1]
    if last.startswith("crop_br"):
        return t[..., side - c:, side - c:]
    if last == "crop_tl":
        return t[..., :c, :c]
    if last == "crop_center":
        s = (side - c) // 2
        return t[..., s:s + c, s:s + c]
    if last == "mean_hw":
        return t.mean((-1, -2))
    return t


def check_super_resolution(folder: Path) -> list[Check]:
    from safetensors.torch import load_file

    from .super_resolution import load_super_resolution
    from ...nn.vq_super_resolution import VQSuperResolutionConfig

    config = json.loads((folder / "config.json").read_text())
    net = load_super_resolution(folder / "net_g.pth", VQSuperResolutionConfig.from_reference_run(config))
    io = load_file(str(folder / "io.safetensors"))
    call = config.get("inference_call", {})
    x = sr_input(io["in.frames_lr_u8"], net.config.img_size)
    trace: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out = net.restore(x, float(call.get("w", 0.5)), bool(call.get("adain", True)), trace=trace)
    trace["out.x"], trace["in.x"] = out.video, x

    checks = []
    for key, ref in io.items():
        if key == "in.frames_lr_u8":
            continue
        base = key
        for suffix in (".avgpool8x8", ".crop_br16", ".avgpool4", ".crop_tl", ".crop_center", ".crop_br", ".mean_hw"):
            if key.endswith(suffix):
                base = key[: -len(suffix)]
        source = base.rsplit(".out_", 1)[0] if ".block" in base else base  # enc.block5.out_256 -> enc.block5
        if source not in trace:
            checks.append(Check(f"{folder.name}/{key} (not produced)", float("inf"), 0.0))
            continue
        ours = summarise(key, trace[source], ref)
        if not ref.is_floating_point():
            checks.append(compare(f"{folder.name}/{key}", ours, ref, 0.0))
        else:
            checks.append(compare(f"{folder.name}/{key}", ours, ref, SR_REL_TOL * float(ref.abs().max())))
    return checks


# -- long-video loop ---------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_hallo_weights(folder: Path, sha: str | None) -> tuple[Path, bool]:
    """The Hallo reference folder whose net.pth the long-video run used: in `folder`, beside it, or in a
    `hallo` folder beside the Hallo2 data (the hallo reference data), matched by sha256 when recorded.
    Returns (folder, whether its net.pth has the recorded sha256); with no match, the only candidate is used
    (so changed weights show as differences rather than as missing data)."""
    from ..hallo.verify import is_net_fixture

    roots = [folder, folder.parent, folder.parent.parent / "hallo", folder.parent / "hallo"]
    seen, candidates = set(), []
    for r in roots:
        if not r.is_dir():
            continue
        for p in [r] + sorted(q for q in r.iterdir() if q.is_dir()):
            if p.resolve() not in seen and is_net_fixture(p) and (p / "net.pth").is_file():
                seen.add(p.resolve())
                candidates.append(p)
    for p in candidates:
        if sha is None or _sha256(p / "net.pth") == sha:
            return p, True
    if len(candidates) == 1:
        return candidates[0], False
    raise InputError(f"{folder.name} ran the Hallo net with sha256 {sha}, but no Hallo reference folder with that "
                     f"net.pth was found (looked in {', '.join(str(r) for r in roots)})",
                     "put the Hallo reference-data folder (named hallo) beside the Hallo2 one")


def check_long_video(folder: Path) -> list[Check]:
    from safetensors.torch import load_file

    from .engine import mask_motion_frames
    from ..hallo.verify import BRANCHES, _levels, load_fixture_pipeline

    config = json.loads((folder / "config.json").read_text())
    settings = config["settings"]
    run = settings["v1_run"]
    weights, same = find_hallo_weights(folder, config.get("weights", {}).get("net.pth_sha256"))
    pipe, _ = load_fixture_pipeline(weights)
    from diffusers import DDIMScheduler
    pipe.scheduler = DDIMScheduler(**config["scheduler_kwargs"])
    v1 = load_file(str(weights / "io.safetensors"))
    io = load_file(str(folder / "io.safetensors"))

    frames = int(run["n_frames"])
    n_motion = int(settings.get("n_motion_frames", run["n_motion_frames"]))
    steps, cfg, seed = int(run["num_inference_steps"]), float(run["cfg_scale"]), int(run["seed"])
    mask_rate = float(settings["mask_rate"])
    weights_branch = tuple(settings.get("motion_scale", (1.0, 1.0, 1.0)))
    windows_all = io["in.audio_windows_all"]
    clips = int(settings.get("clips", windows_all.shape[0] // frames))
    reference = v1["in.ref_and_motion_pixels"][0, :1]  # (1, 3, H, W) in [-1, 1]
    emb, region = v1["in.face_emb"], v1["in.face_region_mask"]
    masks = {k: [v1[f"in.{k}_mask.{i}"] for i in range(_levels(v1, k))] for k in BRANCHES}
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)  # VAE downsampling
    latent_hw = [side // factor for side in reference.shape[-2:]]
    checks: list[Check] = [Check(f"{folder.name}/net.pth sha256 == recorded ({weights.name})",
                                 0.0 if same else float("inf"), 0.0)]

    def check(key: str, ours: torch.Tensor, tol: float, label: str = "") -> None:
        if key in io:
            checks.append(compare(f"{folder.name}/{key}{label}", ours, io[key], tol))

    def clip(t: int, motion: torch.Tensor, generator: torch.Generator, tol: float, label: str) -> torch.Tensor:
        masked, keep = mask_motion_frames(motion, region, generator, mask_rate)
        pixels = torch.cat([reference, masked])  # (1 + m, 3, H, W)
        p = f"long.clip{t}."
        check(p + "keep_mask_u8", keep.to(torch.uint8), 0.0, label)
        # a sum over H*W pixels: the per-pixel tolerance of its inputs (stored: float noise; chained: a clip's) times H*W
        per_pixel = TOL_EXACT if tol == TOL_CLIP else TOL_CLIP
        check(p + "ref_img_pixels_masked.sum_hw", pixels.sum((-1, -2))[None], per_pixel * pixels[0, 0].numel(), label)
        windows = windows_all[t * frames:(t + 1) * frames][None]
        cond = pipe.condition(emb, windows, region, masks, cfg > 1.0, weights_branch)
        check(p + "audioproj_out", cond.audio_tokens[-1:], TOL_EXACT, label)
        noise = torch.randn((1, 4, windows.shape[1], *latent_hw), generator=generator)
        trace: dict = {}
        latents = pipe.sample_clip(pipe.encode_images(pixels), cond, noise, steps, cfg, trace=trace)
        for key, value in trace.items():
            check(p + key, value, 0.0 if key == "step_in_latents.0" else tol, label)
        check(p + "final_latents", latents, tol, label)
        video = pipe.decode_latents(latents)  # (1, 3, f, H, W) in [0, 1]
        check(p + "videos.avgpool4", F.avg_pool3d(video, (1, 4, 4)), tol, label)
        c = io[p + "videos.last2_crop_br32"].shape[-1] if p + "videos.last2_crop_br32" in io else 32
        check(p + "videos.last2_crop_br32", video[:, :, -2:, -c:, -c:], tol, label)
        return video

    generator = torch.Generator().manual_seed(seed)
    motion = reference.repeat(n_motion, 1, 1, 1)  # the first clip's motion frames are the portrait
    with torch.no_grad():
        for t in range(clips):
            state = generator.get_state()
            video = clip(t, motion, generator, TOL_CLIP if t == 0 else TOL_CHAINED, "" if t == 0 else " (chained)")
            stored = io.get(f"long.clip{t}.motion_frames_from_prev_clip")
            if t > 0 and stored is not None:  # the same clip from the recorded motion frames: clip-level tolerance
                replay = torch.Generator()
                replay.set_state(state)
                clip(t, stored, replay, TOL_CLIP, " (recorded motion frames)")
            motion = video[0, :, -n_motion:].permute(1, 0, 2, 3) * 2.0 - 1.0  # (m, 3, H, W) in [-1, 1]
            check(f"long.clip{t + 1}.motion_frames_from_prev_clip", motion, TOL_CLIP)
    return checks
