"""The official Hallo4 release folder (huggingface.co/fudan-generative-ai/hallo4, `pretrained_models/`): the DiT
`hallo4/model_weight.ckpt` (Wan2.1 names + Hallo4's, converted by `official_to_ours`; `load_dit`), the Wan2.1 VAE
and Wan's umt5-xxl encoder (their own .pth files, converted to diffusers' and transformers' names), wav2vec2, and
`load_release`, which loads every part the engine runs, from local files only."""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import torch

from ...models.checkpoints import load_state_dict, load_strict, require_files
from ...types import Speech
from .model import WAN_VACE_1_3B, Hallo4WanModel
from .pipeline import OFFICIAL, WanLatents

RELEASE_URL = "https://huggingface.co/fudan-generative-ai/hallo4"
CHECKPOINT = "hallo4/model_weight.ckpt"
CONFIG = "Wan2.1_Encoders/config.json"
INFERENCE_FILE = "hallo4/inference.json"  # optional: other sizes/settings (small test releases)
WAV2VEC_DIRS = ("wav2vec/wav2vec2-base-960h", "wav2vec2-base-960h")


def release_root(folder: Path) -> Path:
    """The `pretrained_models/` folder of a release checkout (or the folder itself)."""
    return folder / "pretrained_models" if (folder / "pretrained_models").is_dir() else folder


# ------------------------------------------------------------------ the official checkpoint

_TOP = {"text_embedding.0": "condition_embedder.text_embedder.linear_1",
        "text_embedding.2": "condition_embedder.text_embedder.linear_2",
        "time_embedding.0": "condition_embedder.time_embedder.linear_1",
        "time_embedding.2": "condition_embedder.time_embedder.linear_2",
        "time_projection.1": "condition_embedder.time_proj", "head.head": "proj_out"}
_ATTN = {"self_attn": "attn1", "cross_attn": "attn2", "audio_cross_attn": "audio_attn",
         "condition_cross_attn": "condition_attn"}
_PROJ = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0", "norm_q": "norm_q", "norm_k": "norm_k"}
_BLOCK = {"norm3": "norm2", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2", "audio_cross_norm": "audio_norm",
          "condition_cross_norm": "condition_norm", "before_proj": "proj_in", "after_proj": "proj_out"}
_BLOCK_KEY = re.compile(r"^(blocks|vace_blocks)\.(\d+)\.(.+)\.(weight|bias)$")


def official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official Hallo4 DiT state dict (Wan2.1 names + Hallo4's) -> Hallo4WanModel names. Unknown keys keep
    their name, so a strict load reports them."""
    out = {}
    for key, value in state.items():
        if key == "head.modulation":
            out["scale_shift_table"] = value
            continue
        m = re.match(r"^(blocks|vace_blocks)\.(\d+)\.modulation$", key)
        if m:
            out[f"{m[1]}.{m[2]}.scale_shift_table"] = value
            continue
        m = _BLOCK_KEY.match(key)
        if m:
            part = m[3]
            am = re.match(r"^(self_attn|cross_attn|audio_cross_attn|condition_cross_attn)\.(q|k|v|o|norm_q|norm_k)$",
                          part)
            part = f"{_ATTN[am[1]]}.{_PROJ[am[2]]}" if am else _BLOCK.get(part, part)
            out[f"{m[1]}.{m[2]}.{part}.{m[4]}"] = value
            continue
        name, _, kind = key.rpartition(".")
        out[f"{_TOP.get(name, name)}.{kind}"] = value
    return out


def ours_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `official_to_ours`."""
    top = {v: k for k, v in _TOP.items()}
    attn = {v: k for k, v in _ATTN.items()}
    proj = {v: k for k, v in _PROJ.items()}
    block = {v: k for k, v in _BLOCK.items()}
    out = {}
    for key, value in state.items():
        if key == "scale_shift_table":
            out["head.modulation"] = value
            continue
        m = re.match(r"^(blocks|vace_blocks)\.(\d+)\.scale_shift_table$", key)
        if m:
            out[f"{m[1]}.{m[2]}.modulation"] = value
            continue
        m = _BLOCK_KEY.match(key)
        if m:
            part = m[3]
            am = re.match(r"^(attn1|attn2|audio_attn|condition_attn)\.(to_q|to_k|to_v|to_out\.0|norm_q|norm_k)$", part)
            part = f"{attn[am[1]]}.{proj[am[2]]}" if am else block.get(part, part)
            out[f"{m[1]}.{m[2]}.{part}.{m[4]}"] = value
            continue
        name, _, kind = key.rpartition(".")
        out[f"{top.get(name, name)}.{kind}"] = value
    return out


def load_dit(root: str | Path, audio: dict | None = None, **overrides) -> Hallo4WanModel:
    """The Hallo4 DiT alone from an official `pretrained_models/` folder: `Wan2.1_Encoders/config.json` (the VACE config
    the official loader reads) and `hallo4/model_weight.ckpt`, loaded strictly. `audio` gives the audio projection
    sizes when they differ from wav2vec2-base's (small test releases)."""
    root = Path(root)
    files = require_files(root, {"DiT config": [CONFIG], "Hallo4 DiT": [CHECKPOINT]}, "Hallo4")
    config = {**WAN_VACE_1_3B, **json.loads(files["DiT config"].read_text()), **overrides}
    model = Hallo4WanModel(**config, audio=audio)
    load_strict(model, official_to_ours(load_state_dict(files["Hallo4 DiT"])), files["Hallo4 DiT"])
    return model.eval()


# ------------------------------------------------------------------ the Wan2.1 VAE (`Wan2.1_Encoders/Wan2.1_VAE.pth`)

VAE_FILE = "Wan2.1_Encoders/Wan2.1_VAE.pth"
_RESIDUAL = ((".residual.0.gamma", ".norm1.gamma"), (".residual.2.", ".conv1."), (".residual.3.gamma", ".norm2.gamma"),
             (".residual.6.", ".conv2."), (".shortcut.", ".conv_shortcut."))
_VAE_FIXED = {"conv1": "quant_conv", "conv2": "post_quant_conv", "encoder.conv1": "encoder.conv_in",
              "decoder.conv1": "decoder.conv_in", "encoder.head.0": "encoder.norm_out",
              "encoder.head.2": "encoder.conv_out", "decoder.head.0": "decoder.norm_out",
              "decoder.head.2": "decoder.conv_out"}


def wan_vae_to_diffusers(state: dict[str, torch.Tensor], levels: int = 4, res_blocks: int = 2) -> dict[str, torch.Tensor]:
    """Wan's own VAE names (`WanVAE_`) -> diffusers' `AutoencoderKLWan`: middle blocks to mid_block resnets /
    attention, the decoder's flat `upsamples` list to up_blocks (res_blocks + 1 resnets, then an upsampler, per
    level), the encoder's flat list kept flat as down_blocks, heads to norm_out/conv_out."""
    per_level = res_blocks + 2  # decoder: res_blocks + 1 resnets and one resample per level (none after the last)
    out = {}
    for key, value in state.items():
        name, _, kind = key.rpartition(".")
        if name in _VAE_FIXED:
            out[f"{_VAE_FIXED[name]}.{kind}"] = value
            continue
        m = re.match(r"^(encoder|decoder)\.middle\.(\d)\.(.+)$", key)
        if m:
            part = "attentions.0" if m[2] == "1" else f"resnets.{int(m[2]) // 2}"
            key = f"{m[1]}.mid_block.{part}.{m[3]}"
        m = re.match(r"^decoder\.upsamples\.(\d+)\.(.+)$", key)
        if m:
            level, j = divmod(int(m[1]), per_level)
            sub = f"upsamplers.0.{m[2]}" if j == per_level - 1 else f"resnets.{j}.{m[2]}"
            key = f"decoder.up_blocks.{level}.{sub}"
        key = key.replace("encoder.downsamples.", "encoder.down_blocks.")
        for old, new in _RESIDUAL:
            key = key.replace(old, new)
        out[key] = value
    return out


def load_wan_vae(path: str | Path, base_dim: int = 96):
    """diffusers' `AutoencoderKLWan` with the official `Wan2.1_VAE.pth` loaded strictly (weights_only);
    `base_dim` 96 at full size (the only size the official code builds; small test releases differ)."""
    from diffusers import AutoencoderKLWan

    path = Path(path)
    state = load_state_dict(path)
    vae = AutoencoderKLWan(base_dim=base_dim)
    load_strict(vae, wan_vae_to_diffusers(state), path)
    return vae.eval()


# ------------------------------------------------------------------ Wan's umt5-xxl encoder (`models_t5_umt5-xxl-enc-bf16.pth`)

T5_FILE = "Wan2.1_Encoders/models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER = "Wan2.1_Encoders/google/umt5-xxl"
_T5_BLOCK = {"attn.q": "layer.0.SelfAttention.q", "attn.k": "layer.0.SelfAttention.k",
             "attn.v": "layer.0.SelfAttention.v", "attn.o": "layer.0.SelfAttention.o",
             "pos_embedding.embedding": "layer.0.SelfAttention.relative_attention_bias",
             "norm1": "layer.0.layer_norm", "norm2": "layer.1.layer_norm", "ffn.gate.0": "layer.1.DenseReluDense.wi_0",
             "ffn.fc1": "layer.1.DenseReluDense.wi_1", "ffn.fc2": "layer.1.DenseReluDense.wo"}


def wan_t5_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan's own T5 encoder names -> transformers' `UMT5EncoderModel` (gated GELU: `gate.0` is wi_0, `fc1` wi_1;
    every block keeps its own relative-position table, as umt5 does)."""
    out = {}
    for key, value in state.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = out["encoder.embed_tokens.weight"] = value
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = value
        elif m := re.match(r"^blocks\.(\d+)\.(.+)\.weight$", key):
            out[f"encoder.block.{m[1]}.{_T5_BLOCK.get(m[2], m[2])}.weight"] = value
        else:
            out[key] = value
    return out


def wan_t5_config(state: dict[str, torch.Tensor]):
    """The `UMT5Config` of a Wan T5 encoder state dict, read from its shapes (umt5-xxl: 24 layers, 64 heads of 64,
    d_ff 10240, 32 buckets, vocab 256384)."""
    from transformers import UMT5Config

    vocab, d_model = state["token_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    buckets, heads = state["blocks.0.pos_embedding.embedding.weight"].shape
    return UMT5Config(vocab_size=vocab, d_model=d_model, d_kv=state["blocks.0.attn.q.weight"].shape[0] // heads,
                      d_ff=state["blocks.0.ffn.fc1.weight"].shape[0], num_layers=layers, num_heads=heads,
                      relative_attention_num_buckets=buckets, relative_attention_max_distance=128,
                      feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0)


def load_wan_t5(path: str | Path):
    """transformers' `UMT5EncoderModel` with Wan's T5 encoder file loaded strictly (weights_only)."""
    from transformers import UMT5EncoderModel

    path = Path(path)
    state = load_state_dict(path)
    model = UMT5EncoderModel(wan_t5_config(state))
    load_strict(model, {k: v.to(torch.float32) for k, v in wan_t5_to_transformers(state).items()}, path)
    return model.eval()


class Hallo4Release:
    """The loaded parts of an official Hallo4 `pretrained_models/` folder."""

    def __init__(self, folder, device: str = "cpu", dtype: torch.dtype = torch.float32):
        from ...audio.wav2vec import load_wav2vec
        from ...models.text_encoders import load_tokenizer

        root = release_root(Path(folder))
        files = require_files(root, {"Hallo4 DiT": [CHECKPOINT], "DiT config": [CONFIG], "Wan2.1 VAE": [VAE_FILE],
                                     "umt5-xxl encoder": [T5_FILE],
                                     "umt5-xxl tokenizer": [f"{T5_TOKENIZER}/tokenizer_config.json"],
                                     "wav2vec2": [f"{d}/config.json" for d in WAV2VEC_DIRS]}, f"Hallo4 ({RELEASE_URL})")
        own = root / INFERENCE_FILE
        settings = json.loads(own.read_text()) if own.is_file() else {}
        self.settings = {**OFFICIAL, **{k: v for k, v in settings.items() if k in OFFICIAL}}
        self.dit = load_dit(root, audio=settings.get("audio_proj"))
        self.latents = WanLatents(load_wan_vae(files["Wan2.1 VAE"], settings.get("vae_dim", 96)))
        self.text_encoder = load_wan_t5(files["umt5-xxl encoder"])
        self.tokenizer = load_tokenizer(files["umt5-xxl tokenizer"].parent)
        self.audio_model, self.extractor = load_wav2vec(files["wav2vec2"].parent, device=device)
        if (device, dtype) != ("cpu", torch.float32):
            for part in (self.dit, self.latents.vae, self.text_encoder):
                part.to(device=device, dtype=dtype)
        self.lock = threading.Lock()

    @torch.no_grad()
    def encode_text(self, text: str) -> torch.Tensor:
        """(L, 4096) T5 states of `text`, whitespace-collapsed, trimmed to its true token count."""
        import re

        text = re.sub(r"\s+", " ", text).strip()
        t = self.tokenizer([text], return_tensors="pt", padding="max_length", truncation=True,
                           max_length=self.dit.text_len, add_special_tokens=True)
        p = next(self.text_encoder.parameters())
        out = self.text_encoder(input_ids=t.input_ids.to(p.device), attention_mask=t.attention_mask.to(p.device))
        return out.last_hidden_state[0, : int(t.attention_mask.sum())].float()

    def audio_windows(self, speech: Speech, fps: int) -> tuple[torch.Tensor, int]:
        """(n, 5, layers, channels) wav2vec2 windows per video frame, as the official front end makes them, and n."""
        from ...audio.wav2vec import audio_windows, trace_hallo_audio

        with self.lock:
            w = trace_hallo_audio(self.audio_model, self.extractor, speech.samples, fps=fps, clip_length=-1)
        return audio_windows(w.audio_emb), w.audio_length


_RELEASES: dict[tuple, Hallo4Release] = {}


def load_release(folder, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Hallo4Release:
    """One loaded release per process (a server renders many videos), reloaded when its folder changes."""
    key = (str(Path(folder).resolve()), device, str(dtype))
    if key not in _RELEASES:
        _RELEASES.clear()
        _RELEASES[key] = Hallo4Release(folder, device, dtype)
    return _RELEASES[key]
