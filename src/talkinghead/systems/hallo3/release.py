"""The official Hallo3 release folder (huggingface.co/fudan-generative-ai/hallo3, `pretrained_models/`): a SAT
checkpoint (`hallo3/<latest>/mp_rank_00_model_states.pt`, `{"module": state}`) whose names `sat_to_ours` converts to
this package's (diffusers' CogVideoX names for both transformers; `sat_from_ours` is the inverse), the SAT model
config (`config_from_sat`), the SAT 3D VAE (`load_sat_vae`), T5 and wav2vec2; `load_release` loads every part the
engine runs, from local files only."""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX

from ...errors import CheckpointError
from ...models.checkpoints import load_state_dict, load_strict, require_files
from ...models.text_encoders import load_t5
from .model import COGVIDEOX_5B_VAE, Hallo3Model
from .pipeline import Hallo3Sampler

RELEASE_URL = "https://huggingface.co/fudan-generative-ai/hallo3"
T5_DIR, WAV2VEC_DIR = "t5-v1_1-xxl", "wav2vec/wav2vec2-base-960h"


# ------------------------------------------------------------------ the official SAT release

SAT_CHECKPOINT = "mp_rank_00_model_states.pt"  # in <release>/<the number in `latest`>/
SAT_NETS = {"model.diffusion_model.": "transformer.", "ref_model.diffusion_model.": "reference_net."}
SAT_UNUSED_PREFIXES = ("conditioner.", "first_stage_model.")  # T5 and the VAE: loaded from their own files
SAT_UNUSED_SUFFIXES = ("mixins.pos_embed.freqs_cos", "mixins.pos_embed.freqs_sin",  # RoPE tables, recomputed
                       "transformer.position_embeddings.weight")  # SAT's absolute table, unused by the forward
# plain renames inside one transformer (after the SAT prefix), applied in order (diffusers' CogVideoX converter)
_SAT_RENAMES = (
    ("transformer.final_layernorm", "norm_final"), ("transformer.layers.", "transformer_blocks."),
    ("attention.dense", "attn1.to_out.0"), ("mlp.dense_h_to_4h", "ff.net.0.proj"), ("mlp.dense_4h_to_h", "ff.net.2"),
    ("post_attention_layernorm", "norm2.norm"), ("input_layernorm", "norm1.norm"),
    ("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"),
    ("mixins.pos_embed.pos_embedding", "patch_embed.pos_embedding"), ("mixins.patch_embed", "patch_embed"),
    ("mixins.final_layer.norm_final", "norm_out.norm"), ("mixins.final_layer.linear", "proj_out"),
    ("mixins.final_layer.adaLN_modulation.1", "norm_out.linear"),
)
_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.(face|audio)_(attn\.(query|key_value|dense)|input_layernorm)\.(\w+)$")
_QKV = re.compile(r"^transformer\.layers\.(\d+)\.attention\.query_key_value\.(\w+)$")
_ADALN = re.compile(r"^mixins\.adaln_layer\.adaLN_modulations\.(\d+)\.1\.(\w+)$")
_QK_LN = re.compile(r"^mixins\.adaln_layer\.(query|key)_layernorm_list\.(\d+)\.(\w+)$")


def _sat_net_keys(key: str, value: torch.Tensor, main: bool) -> dict[str, torch.Tensor] | None:
    """One key of a SAT transformer (prefix removed) -> our keys inside `transformer.`/`reference_net.`
    (None: not used by the forward). `main`: the denoiser, whose face/audio attention reuses each layer's
    qk-LayerNorm (copied into the cross layers, which hold their own)."""
    if key.endswith(SAT_UNUSED_SUFFIXES):
        return None
    if m := _QKV.match(key):
        q, k, v = value.chunk(3, dim=0)
        base = f"transformer_blocks.{m[1]}.attn1"
        return {f"{base}.to_q.{m[2]}": q, f"{base}.to_k.{m[2]}": k, f"{base}.to_v.{m[2]}": v}
    if m := _ADALN.match(key):  # 12 chunks: msa/mlp shift, scale, gate of the video stream, then of the text
        c = value.chunk(12, dim=0)
        base = f"transformer_blocks.{m[1]}"
        return {f"{base}.norm1.linear.{m[2]}": torch.cat(c[0:3] + c[6:9]),
                f"{base}.norm2.linear.{m[2]}": torch.cat(c[3:6] + c[9:12])}
    if m := _QK_LN.match(key):
        norm = "norm_q" if m[1] == "query" else "norm_k"
        out = {f"transformer_blocks.{m[2]}.attn1.{norm}.{m[3]}": value}
        if main:
            for layer in ("face_attn", "audio_attn"):
                out[f"transformer_blocks.{m[2]}.cross_layers.{layer}.attn.{norm}.{m[3]}"] = value
        return out
    if m := _LAYER.match(key):
        base = f"transformer_blocks.{m[1]}.cross_layers.{m[2]}_attn"
        if m[3] == "input_layernorm":
            return {f"{base}.norm.{m[5]}": value}
        if m[4] == "key_value":  # first half keys, second half values
            k, v = value.chunk(2, dim=0)
            return {f"{base}.attn.to_k.{m[5]}": k, f"{base}.attn.to_v.{m[5]}": v}
        return {f"{base}.attn.{'to_q' if m[4] == 'query' else 'to_out.0'}.{m[5]}": value}
    for old, new in _SAT_RENAMES:
        if key.startswith(old) or f".{old}" in key:
            key = key.replace(old, new)
    return {key: value}


def sat_to_ours(sat: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A SAT engine state dict (the official `module` entry) -> (our Hallo3Model state dict, SAT keys not used).
    Works on meta tensors (shapes only). Keys the rules do not know are returned as-is under their SAT name,
    so a strict load names them."""
    ours: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in sat.items():
        if key.startswith(SAT_UNUSED_PREFIXES):
            unused.append(key)
            continue
        prefix = next((p for p in SAT_NETS if key.startswith(p)), None)
        if prefix is None:
            ours[key] = value
            continue
        rest = key[len(prefix):]
        if prefix.startswith("model.") and rest.startswith(("transformer.audio_proj.", "transformer.face_proj.")):
            ours[rest[len("transformer."):]] = value
            continue
        mapped = _sat_net_keys(rest, value, main=prefix.startswith("model."))
        if mapped is None:
            unused.append(key)
        else:
            ours.update({SAT_NETS[prefix] + k: v for k, v in mapped.items()})
    return ours, unused


def config_from_sat(model_config: dict, audio_proj: dict | None = None, face_proj: dict | None = None) -> dict:
    """Hallo3Model arguments from the official SAT model config (`network_config`, as in the release's
    configs/cogvideox_5b_i2v_s2.yaml) and the sizes of the audio/face projections (`AudioProjModel`,
    `FaceProjModel` arguments; the official ones when not given)."""
    p = model_config["network_config"]["params"]
    mods, targs = p.get("modules", {}), p.get("transformer_args", {})
    pos = mods.get("pos_embed_config", {}).get("params", {})
    patch = mods.get("patch_embed_config", {}).get("params", {})
    heads = p["num_attention_heads"]
    tc = {"num_attention_heads": heads, "attention_head_dim": p["hidden_size"] // heads,
          "in_channels": p["in_channels"], "out_channels": p["out_channels"], "time_embed_dim": p["time_embed_dim"],
          "text_embed_dim": patch.get("text_hidden_size", 4096), "num_layers": p["num_layers"],
          "sample_height": p["latent_height"], "sample_width": p["latent_width"], "sample_frames": p["num_frames"],
          "patch_size": p["patch_size"], "temporal_compression_ratio": p.get("time_compressed_rate", 4),
          "max_text_seq_length": pos.get("text_length", 226), "norm_elementwise_affine": p.get("elementwise_affine", True),
          "use_rotary_positional_embeddings": True,
          "use_learned_positional_embeddings": bool(pos.get("learnable_pos_embed", False))}
    a = {**{"seq_len": 5, "blocks": 12, "channels": 768, "intermediate_dim": 512, "context_tokens": 32},
         **(audio_proj or {})}
    f = {**{"clip_embeddings_dim": 512, "clip_extra_context_tokens": 4}, **(face_proj or {})}
    audio = {"window": a["seq_len"], "layers": a["blocks"], "channels": a["channels"],
             "hidden_dim": a["intermediate_dim"], "output_dim": a.get("output_dim", targs.get("cross_attn_hidden_size", 768)),
             "n_tokens": a["context_tokens"]}
    face = {"embedding_dim": f["clip_embeddings_dim"], "n_tokens": f["clip_extra_context_tokens"],
            "dim": f.get("hidden_size", targs.get("face_cross_attn_hidden_size", 1024))}
    return {"transformer_config": tc, "audio_config": audio, "face_config": face}


def find_sat_checkpoint(folder: str | Path) -> Path:
    """The checkpoint file of a SAT release folder: `<folder>/<latest>/mp_rank_00_model_states.pt`, where
    `latest` holds the iteration (the official `pretrained_models/hallo3/` layout); `folder` may also be the
    `pretrained_models/` folder above it. One CheckpointError names what is missing."""
    folder = Path(folder)
    for root in (folder, folder / "hallo3"):
        if (root / "latest").is_file():
            tag = (root / "latest").read_text().strip()
            path = root / tag / SAT_CHECKPOINT
            if not path.is_file():
                raise CheckpointError(f"{root} is missing files of the Hallo3 release:\n  {tag}/{SAT_CHECKPOINT} "
                                      f"(named by {root / 'latest'})")
            return path
    raise CheckpointError(f"{folder} is missing files of the Hallo3 release:\n  latest (the SAT tracker file)\n"
                          f"  <iteration>/{SAT_CHECKPOINT}\n(pass the release's pretrained_models/hallo3 folder)")


def load_sat_checkpoint(model: Hallo3Model, path: str | Path) -> list[str]:
    """Load an official SAT checkpoint into `model` strictly (every parameter from the file, every denoiser and
    reference-network key used); T5/VAE entries, if the file carries them, are ignored. Returns the unused keys."""
    path = Path(path)
    ours, unused = sat_to_ours(load_state_dict(path))
    load_strict(model, {k: v.to(model.state_dict()[k].dtype) if k in model.state_dict() else v
                        for k, v in ours.items()}, path)
    return unused


_TOP_TO_SAT = {"norm_final": "transformer.final_layernorm", "time_embedding.linear_1": "time_embed.0",
               "time_embedding.linear_2": "time_embed.2", "patch_embed.pos_embedding": "mixins.pos_embed.pos_embedding",
               "patch_embed.proj": "mixins.patch_embed.proj", "patch_embed.text_proj": "mixins.patch_embed.text_proj",
               "norm_out.norm": "mixins.final_layer.norm_final", "proj_out": "mixins.final_layer.linear",
               "norm_out.linear": "mixins.final_layer.adaLN_modulation.1"}
_BLOCK_TO_SAT = {"attn1.to_out.0": "attention.dense", "ff.net.0.proj": "mlp.dense_h_to_4h", "ff.net.2": "mlp.dense_4h_to_h",
                 "norm1.norm": "input_layernorm", "norm2.norm": "post_attention_layernorm"}
_OURS_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)\.(weight|bias)$")


def sat_from_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `sat_to_ours`: our Hallo3Model state dict -> the official SAT names (the `module` entry the
    official code loads). The face/audio layers' qk-LayerNorm copies must equal the self-attention's (the official
    model shares one per layer); the RoPE tables and SAT's unused absolute table are not written."""
    sat: dict[str, torch.Tensor] = {}
    gathered: dict[tuple, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(("audio_proj.", "face_proj.")):
            sat["model.diffusion_model.transformer." + key] = value
            continue
        net, _, rest = key.partition(".")
        prefix = {v.rstrip("."): k for k, v in SAT_NETS.items()}.get(net)
        if prefix is None:
            raise ValueError(f"{key} has no official counterpart")
        m = _OURS_BLOCK.match(rest)
        if m is None:
            if rest in _TOP_TO_SAT:  # a buffer: no weight/bias suffix
                sat[prefix + _TOP_TO_SAT[rest]] = value
                continue
            name, _, kind = rest.rpartition(".")
            if name not in _TOP_TO_SAT:
                raise ValueError(f"{key} has no official counterpart")
            sat[prefix + _TOP_TO_SAT[name] + "." + kind] = value
            continue
        n, part, kind = m[1], m[2], m[3]
        layer = f"{prefix}transformer.layers.{n}."
        if part in ("attn1.to_q", "attn1.to_k", "attn1.to_v"):
            gathered.setdefault(("qkv", layer, kind), {})[part[-1]] = value
        elif part in ("norm1.linear", "norm2.linear"):
            gathered.setdefault(("adaln", f"{prefix}mixins.adaln_layer.adaLN_modulations.{n}.1.", kind), {})[part] = value
        elif part in ("attn1.norm_q", "attn1.norm_k"):
            which = "query" if part.endswith("q") else "key"
            sat[f"{prefix}mixins.adaln_layer.{which}_layernorm_list.{n}.{kind}"] = value
        elif part in _BLOCK_TO_SAT:
            sat[layer + _BLOCK_TO_SAT[part] + "." + kind] = value
        elif cm := re.match(r"^cross_layers\.(face|audio)_attn\.(norm|attn\.(to_q|to_k|to_v|to_out\.0|norm_q|norm_k))$", part):
            mod, sub = cm[1], cm[3]
            if sub is None:
                sat[f"{layer}{mod}_input_layernorm.{kind}"] = value
            elif sub in ("norm_q", "norm_k"):
                shared = state[f"{net}.transformer_blocks.{n}.attn1.{sub}.{kind}"]
                if not torch.equal(shared, value):
                    raise ValueError(f"{key} differs from the self-attention's {sub}: the official model shares one")
            elif sub in ("to_k", "to_v"):
                gathered.setdefault(("kv", f"{layer}{mod}_attn.key_value.", kind), {})[sub] = value
            else:
                sat[f"{layer}{mod}_attn.{'query' if sub == 'to_q' else 'dense'}.{kind}"] = value
        else:
            raise ValueError(f"{key} has no official counterpart")
    for (what, base, kind), parts in gathered.items():
        if what == "qkv":
            sat[f"{base}attention.query_key_value.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
        elif what == "kv":
            sat[f"{base}{kind}"] = torch.cat([parts["to_k"], parts["to_v"]])
        else:
            a, b = parts["norm1.linear"].chunk(6), parts["norm2.linear"].chunk(6)
            sat[f"{base}{kind}"] = torch.cat(a[0:3] + b[0:3] + a[3:6] + b[3:6])
    return sat


# ------------------------------------------------------------------ the official SAT 3D VAE (cogvideox-5b-i2v-sat/vae/3d-vae.pt)

SAT_VAE_FILE = "cogvideox-5b-i2v-sat/vae/3d-vae.pt"
_SAT_VAE_RENAMES = (("block.", "resnets."), ("down.", "down_blocks."), ("downsample", "downsamplers.0"),
                    ("upsample", "upsamplers.0"), ("nin_shortcut", "conv_shortcut"),
                    ("encoder.mid.block_1", "encoder.mid_block.resnets.0"),
                    ("encoder.mid.block_2", "encoder.mid_block.resnets.1"),
                    ("decoder.mid.block_1", "decoder.mid_block.resnets.0"),
                    ("decoder.mid.block_2", "decoder.mid_block.resnets.1"))


def sat_vae_to_diffusers(state: dict[str, torch.Tensor], up_blocks: int = 4) -> dict[str, torch.Tensor]:
    """The SAT CogVideoX VAE state dict (as in 3d-vae.pt, or with the engine's `first_stage_model.` prefix) ->
    `AutoencoderKLCogVideoX` names (diffusers' converter rules: renames, decoder `up.N` -> `up_blocks.{3-N}`;
    the training loss entries are dropped)."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("first_stage_model.")
        if key.startswith("loss."):
            continue
        for old, new in _SAT_VAE_RENAMES:
            key = key.replace(old, new)
        parts = key.split(".")
        if parts[0] == "decoder" and parts[1] == "up":
            parts[1], parts[2] = "up_blocks", str(up_blocks - 1 - int(parts[2]))
        out[".".join(parts)] = value
    return out


def sat_vae_from_diffusers(state: dict[str, torch.Tensor], up_blocks: int = 4) -> dict[str, torch.Tensor]:
    """The inverse of `sat_vae_to_diffusers` (our VAE -> the official 3d-vae.pt names)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "decoder" and parts[1] == "up_blocks":
            parts[1], parts[2] = "up", str(up_blocks - 1 - int(parts[2]))
        key = ".".join(parts)
        for old, new in reversed(_SAT_VAE_RENAMES):
            key = key.replace(new, old)
        out[key] = value
    return out


def load_sat_vae(path: str | Path, config: dict | None = None):
    """An `AutoencoderKLCogVideoX` (the official CogVideoX-5B-I2V sizes unless `config` overrides) with the SAT
    VAE file loaded strictly (weights_only; a `state_dict`/`module` wrapper is accepted)."""
    path = Path(path)
    state = load_state_dict(path)
    vc = {**COGVIDEOX_5B_VAE, **(config or {})}
    vae = AutoencoderKLCogVideoX(**{k: tuple(v) if isinstance(v, list) else v for k, v in vc.items()})
    load_strict(vae, sat_vae_to_diffusers(state, len(vc["block_out_channels"])), path)
    return vae.eval()


@dataclass
class Hallo3Release:
    """The loaded parts of a release: our model (SAT weights), the CogVideoX 3D VAE, T5, wav2vec2."""

    model: Hallo3Model
    vae: AutoencoderKLCogVideoX
    text_encoder: object
    tokenizer: object
    audio_model: object
    extractor: object
    sampler: Hallo3Sampler
    text_length: int
    lock: object


def load_release(folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Hallo3Release:
    """The parts of an official Hallo3 `pretrained_models/` folder, strictly, from local files only:
    `hallo3/latest` + `hallo3/<n>/mp_rank_00_model_states.pt` (SAT), `cogvideox-5b-i2v-sat/vae/3d-vae.pt`,
    `t5-v1_1-xxl/` (transformers T5 encoder + tokenizer), `wav2vec/wav2vec2-base-960h/`. A small (test) release
    may add `hallo3/config.json` (the SAT model config and projection sizes, as the reference data's) and
    `cogvideox-5b-i2v-sat/vae/config.json` (AutoencoderKLCogVideoX sizes); the official sizes apply otherwise.
    One CheckpointError lists every missing file."""
    from ...audio.wav2vec import load_wav2vec

    root = Path(folder)
    root = root / "pretrained_models" if (root / "pretrained_models").is_dir() else root
    latest = root / "hallo3" / "latest"  # the SAT tracker file names the iteration folder of the checkpoint
    iteration = latest.read_text().strip() if latest.is_file() else "<iteration>"
    files = require_files(root, {"SAT tracker file": ["hallo3/latest"],
                                 "Hallo3 model (SAT)": [f"hallo3/{iteration}/{SAT_CHECKPOINT}"],
                                 "CogVideoX 3D VAE (SAT)": [SAT_VAE_FILE], "T5 encoder": [f"{T5_DIR}/config.json"],
                                 "T5 tokenizer": [f"{T5_DIR}/spiece.model"],
                                 "wav2vec2": [f"{WAV2VEC_DIR}/config.json"]}, f"Hallo3 ({RELEASE_URL})")
    checkpoint = files.pop("Hallo3 model (SAT)")
    files.pop("SAT tracker file")
    key = (str(root.resolve()), device, str(dtype), tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size)
                                                          for f in (checkpoint, *files.values())))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        _CACHE.clear()  # one release in memory at a time
        own = root / "hallo3" / "config.json"
        config = json.loads(own.read_text()) if own.is_file() else None
        model = Hallo3Model(**config_from_sat(config["model_config"], config.get("audio_proj_args"),
                                              config.get("face_proj_args"))) if config else Hallo3Model()
        load_sat_checkpoint(model, checkpoint)
        vae_config = files["CogVideoX 3D VAE (SAT)"].parent / "config.json"
        vae = load_sat_vae(files["CogVideoX 3D VAE (SAT)"],
                           json.loads(vae_config.read_text()) if vae_config.is_file() else None)
        tokenizer, text_encoder = load_t5(files["T5 encoder"].parent)
        audio_model, extractor = load_wav2vec(files["wav2vec2"].parent, device=device)
        params = (config or {}).get("model_config", {}).get("sampler_config", {}).get("params", {})
        disc = params.get("discretization_config", {}).get("params", {})
        if (device, dtype) != ("cpu", torch.float32):
            for part in (model, vae, text_encoder):
                part.to(device=device, dtype=dtype)
        release = Hallo3Release(model.eval(), vae, text_encoder, tokenizer, audio_model, extractor,
                                Hallo3Sampler(shift_scale=disc.get("shift_scale", 1.0)),
                                model.transformer.config.max_text_seq_length, threading.Lock())
        _CACHE[key] = release
        return release


_CACHE: dict[tuple, Hallo3Release] = {}  # loaded once per process (a server renders many videos)
_CACHE_LOCK = threading.Lock()
