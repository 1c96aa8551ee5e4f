"""Hallo3 (Cui et al. 2024, "Highly Dynamic and Realistic Portrait Image Animation with Diffusion Transformer
Networks"): a CogVideoX-5B-I2V denoiser with face attention and per-latent-frame audio attention in every
block, an identity reference network (the portrait as one 3D-VAE frame through a transformer of the
denoiser's architecture, whose per-layer tokens join the denoiser's self-attention), wav2vec audio tokens
from three linear layers, T5 text tokens, 3D RoPE, and motion-frame latents for long video; trained in two
stages (identity, then audio layers only; configs/train/hallo3_stage*.yaml). Official numbers are checked by
`talkinghead verify hallo3` (systems/hallo3/verify.py).

The official release is a SAT checkpoint (`hallo3/<latest>/mp_rank_00_model_states.pt`, `{"module": state}`);
`find_sat_checkpoint` + `load_sat_checkpoint` load it into this module, converting its names (diffusers' CogVideoX
names for both transformers, see `sat_to_ours`; `sat_from_ours` is the inverse), `config_from_sat` turns the
official SAT model config into this module's arguments, and `load_sat_vae` reads the release's SAT 3D VAE. The model computes what the official one computes: the reference
network's tokens join each denoiser layer's self-attention unrotated, face and audio attention run per latent frame
with the self-attention's qk-LayerNorm and latent frame 0's RoPE on their queries, and audio tokens are compressed
to latent frames by a strided convolution. Our own folders save/load diffusers-style (config.json + safetensors).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ...errors import CheckpointError, InputError
from ...models.checkpoints import load_strict
from ...nn.dit import (AudioCrossAttention, DiTConditions, FaceAttention, ReferenceFeatureBank,
                       attach_identity_reference, conditioned_cogvideox, conditioned_forward, transformer_rope,
                       use_sliced_positions)
from ...nn.projections import ImageProjection

# THUDM/CogVideoX-5b-I2V transformer/config.json: the base of Hallo3's denoiser and reference network
COGVIDEOX_5B_I2V = {
    "num_attention_heads": 48, "attention_head_dim": 64, "in_channels": 32, "out_channels": 16,
    "flip_sin_to_cos": True, "freq_shift": 0, "time_embed_dim": 512, "text_embed_dim": 4096, "num_layers": 42,
    "dropout": 0.0, "attention_bias": True, "sample_width": 90, "sample_height": 60, "sample_frames": 49,
    "patch_size": 2, "temporal_compression_ratio": 4, "max_text_seq_length": 226, "activation_fn": "gelu-approximate",
    "timestep_activation_fn": "silu", "norm_elementwise_affine": True, "norm_eps": 1e-5,
    "spatial_interpolation_scale": 1.875, "temporal_interpolation_scale": 1.0,
    "use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": True,
}
# THUDM/CogVideoX-5b-I2V vae/config.json (AutoencoderKLCogVideoX)
COGVIDEOX_5B_VAE = {
    "in_channels": 3, "out_channels": 3, "block_out_channels": [128, 256, 256, 512], "latent_channels": 16,
    "layers_per_block": 3, "norm_eps": 1e-6, "norm_num_groups": 32, "temporal_compression_ratio": 4,
    "sample_height": 480, "sample_width": 720, "scaling_factor": 0.7, "use_quant_conv": False,
    "use_post_quant_conv": False,
}
# THUDM/CogVideoX-5b-I2V scheduler/scheduler_config.json: v-prediction, zero-terminal-SNR DDIM
COGVIDEOX_SCHEDULER = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0, "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "snr_shift_scale": 1.0,
}
# wav2vec2-base: windows of 5 frames × the last 12 hidden layers × 768 channels -> 32 tokens per frame
HALLO3_AUDIO = {"window": 5, "layers": 12, "channels": 768, "hidden_dim": 512, "output_dim": 768, "n_tokens": 32}
# a 512-d face-recognition embedding -> identity tokens for face attention
HALLO3_FACE = {"embedding_dim": 512, "n_tokens": 4, "dim": 1024}

# tiny sizes for tests and CPU benchmarks: 2 blocks of width 32, 4 latent channels, 32 px frames
TINY_TRANSFORMER = {
    "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 8, "out_channels": 4, "time_embed_dim": 32,
    "text_embed_dim": 16, "num_layers": 2, "sample_width": 4, "sample_height": 4, "sample_frames": 9,
    "max_text_seq_length": 8, "use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": False,
}
TINY_AUDIO = {"window": 3, "layers": 2, "channels": 8, "hidden_dim": 16, "output_dim": 16, "n_tokens": 2}
HALLO3_TINY = {"transformer_config": TINY_TRANSFORMER, "audio_config": TINY_AUDIO,
               "face_config": {"embedding_dim": 8, "n_tokens": 2, "dim": 16}}
TINY_VAE = {"block_out_channels": [8, 8, 8, 8], "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4,
            "sample_height": 32, "sample_width": 32}


class Hallo3AudioProjection(nn.Module):
    """Hallo3's audio tokens: per video frame, a window of wav2vec states (window × layers × channels) through
    ReLU(proj1), ReLU(proj2), proj3 -> `n_tokens` × `output_dim`; then the frames are compressed to latent frames
    as the causal VAE compresses video (frame 0 kept, the rest halved twice by `conv1`, a kernel-2 stride-2
    convolution over frames: 4k + 1 frames -> k + 1), and LayerNorm. Keys match the official `audio_proj.`."""

    def __init__(self, window: int = 5, layers: int = 12, channels: int = 768, hidden_dim: int = 512,
                 output_dim: int = 768, n_tokens: int = 32, compressions: int = 2):
        super().__init__()
        self.n_tokens, self.output_dim, self.compressions = n_tokens, output_dim, compressions
        self.proj1 = nn.Linear(window * layers * channels, hidden_dim)
        self.proj2 = nn.Linear(hidden_dim, hidden_dim)
        self.proj3 = nn.Linear(hidden_dim, n_tokens * output_dim)
        self.conv1 = nn.Conv1d(n_tokens * output_dim, n_tokens * output_dim, kernel_size=2, stride=2)
        self.norm = nn.LayerNorm(output_dim)

    def compress(self, x: torch.Tensor) -> torch.Tensor:  # (b, f, n·c) -> (b, 1 + (f − 1)/2, n·c)
        rest = self.conv1(x[:, 1:].transpose(1, 2)).transpose(1, 2)
        return torch.cat([x[:, :1], rest], dim=1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:  # (b, T, w, l, c) -> (b, T', n_tokens, dim)
        b, f = windows.shape[:2]
        if (f - 1) % (2 ** self.compressions):
            raise ValueError(f"{f} audio frames: need 1 + {2 ** self.compressions}k (one per video frame of a clip)")
        x = torch.relu(self.proj1(windows.reshape(b, f, -1)))
        x = self.proj3(torch.relu(self.proj2(x)))  # (b, f, n·c)
        for _ in range(self.compressions):
            x = self.compress(x)
        return self.norm(x.reshape(b, x.shape[1], self.n_tokens, self.output_dim))


class StagedModel:
    """Training stages of a system as (train, freeze) parameter-name patterns (fnmatch)."""

    system = ""
    STAGES: dict[str, tuple[list[str], list[str]]] = {}

    @classmethod
    def trainable_patterns(cls, stage: str) -> tuple[list[str], list[str]]:
        """(train, freeze) parameter-name patterns of a training stage."""
        if str(stage) not in cls.STAGES:
            raise InputError(f"{cls.system} has no training stage {stage!r}",
                             f"use one of: {', '.join(sorted(cls.STAGES))}")
        train, freeze = cls.STAGES[str(stage)]
        return list(train), list(freeze)


class Hallo3Model(StagedModel, ModelMixin, ConfigMixin):
    """Denoiser + identity reference network + audio and face projections.

    Call with latents in CogVideoX layout: `noisy` (b, T', c, h, w); `text` (b, L, text_embed_dim) T5 tokens;
    `face_embedding` (b, 512); `audio_windows` (b, T, window, layers, channels) wav2vec windows per video frame;
    `motion_latents` (b, m, c, h, w) (the portrait's latent for a first clip); `reference_latents`
    (b, 1, c, h, w) the portrait's latent. Returns the v-prediction (b, T', c, h, w).
    """

    system = "hallo3"
    config_name = "config.json"
    STAGES = {  # Hallo3 §4.1: stage 1 identity (3D attention of both nets + face attention), stage 2 audio only
        "1": (["transformer.transformer_blocks.*.attn1.*", "reference_net.transformer_blocks.*.attn1.*",
               "transformer.transformer_blocks.*.cross_layers.face_attn.*", "face_proj.*"],
              ["*audio_attn*", "audio_proj.*"]),
        "2": (["transformer.transformer_blocks.*.cross_layers.audio_attn.*", "audio_proj.*"], []),
    }

    @register_to_config
    def __init__(self, transformer_config: dict | None = None, audio_config: dict | None = None,
                 face_config: dict | None = None, identity_reference: bool = True):
        super().__init__()
        tc = {**COGVIDEOX_5B_I2V, **(transformer_config or {})}  # overrides of the official sizes
        ac = {**HALLO3_AUDIO, **(audio_config or {})}
        fc = {**HALLO3_FACE, **(face_config or {})}
        dim, heads, head_dim = tc["num_attention_heads"] * tc["attention_head_dim"], tc["num_attention_heads"], \
            tc["attention_head_dim"]
        eps = tc["norm_eps"]  # the official input LayerNorms; the qk-LayerNorms use 1e-6 as CogVideoX's
        self.transformer = conditioned_cogvideox(tc, lambda i: {
            "face_attn": FaceAttention(dim, fc["dim"], heads, head_dim, eps=eps, qk_eps=1e-6),
            "audio_attn": AudioCrossAttention(dim, ac["output_dim"], heads, head_dim, eps=eps, qk_eps=1e-6)})
        use_sliced_positions(self.transformer)
        self.face_proj = ImageProjection(fc["dim"], fc["embedding_dim"], fc["n_tokens"])
        self.audio_proj = Hallo3AudioProjection(ac["window"], ac["layers"], ac["channels"], ac["hidden_dim"],
                                                ac["output_dim"], ac["n_tokens"])
        self.bank = ReferenceFeatureBank()
        self.reference_net = None
        if identity_reference:
            self.reference_net = CogVideoXTransformer3DModel(**tc)
            use_sliced_positions(self.reference_net)
            attach_identity_reference(self.reference_net, self.transformer, self.bank)

    # ------------------------------------------------------------ conditions

    def encode_reference(self, reference_latents: torch.Tensor, text: torch.Tensor) -> None:
        """Run the identity reference network on the portrait's latent (b, 1, c, h, w) at t = 0 and keep
        its per-layer tokens in the bank (the input is the latent beside itself as its own I2V condition)."""
        self.bank.clear()
        if self.reference_net is None:
            return
        b, f, _, h, w = reference_latents.shape
        x = torch.cat([reference_latents, reference_latents], dim=2)
        t = torch.zeros(b, dtype=torch.long, device=x.device)
        self.bank.recording = True
        try:
            rope = transformer_rope(self.transformer, f, h, w, x.device)
            self.reference_net(x, text, t, image_rotary_emb=rope, return_dict=False)
        finally:
            self.bank.recording = False

    def conditions(self, frames: int, face_embedding: torch.Tensor | None, audio_windows: torch.Tensor | None
                   ) -> DiTConditions:
        tokens = {}
        if face_embedding is not None:
            tokens["face"] = self.face_proj(face_embedding.to(self.dtype))  # (b, n, d_face)
        if audio_windows is not None:  # (b, T, window, layers, channels) -> (b, T', n, d_audio)
            tokens["audio"] = self.audio_proj(audio_windows.to(self.dtype))
            if tokens["audio"].shape[1] != frames:
                raise ValueError(f"{audio_windows.shape[1]} audio frames give {tokens['audio'].shape[1]} latent "
                                 f"frames, the latents have {frames}")
        return DiTConditions(frames, tokens)

    def forward(self, noisy: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                face_embedding: torch.Tensor | None = None, audio_windows: torch.Tensor | None = None,
                motion_latents: torch.Tensor | None = None, reference_latents: torch.Tensor | None = None,
                reuse_reference: bool = False) -> torch.Tensor:
        if not reuse_reference:
            if reference_latents is not None:
                self.encode_reference(reference_latents, text)
            else:
                self.bank.clear()
        cond = self.conditions(noisy.shape[1], face_embedding, audio_windows)
        return conditioned_forward(self.transformer, noisy, timestep, text, motion_latents, cond)

    # ------------------------------------------------------------ training

    def predict(self, noisy: torch.Tensor, timestep: torch.Tensor, batch: dict) -> torch.Tensor:
        """The forward on a training batch dict (keys as the forward's argument names, `latents` excluded)."""
        return self(noisy, timestep, batch["text"], batch.get("face_embedding"), batch.get("audio_windows"),
                    batch.get("motion_latents"), batch.get("reference_latents"))


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


def read_sat_state(path: Path) -> dict[str, torch.Tensor]:
    """The `module` state dict of a SAT checkpoint, read with weights_only=True."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad file for the user
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}. Only weights-only torch pickles "
                              "are loaded; re-download the file if it is truncated.") from exc
    state = state.get("module", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a SAT state dict ({{'module': {{name: tensor}}}})")
    return state


def load_sat_checkpoint(model: "Hallo3Model", path: str | Path) -> list[str]:
    """Load an official SAT checkpoint into `model` strictly (every parameter from the file, every denoiser and
    reference-network key used); T5/VAE entries, if the file carries them, are ignored. Returns the unused keys."""
    path = Path(path)
    ours, unused = sat_to_ours(read_sat_state(path))
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
    from diffusers import AutoencoderKLCogVideoX

    path = Path(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad file for the user
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}. Only weights-only torch pickles "
                              "are loaded; re-download the file if it is truncated.") from exc
    for wrapper in ("state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    vc = {**COGVIDEOX_5B_VAE, **(config or {})}
    vae = AutoencoderKLCogVideoX(**{k: tuple(v) if isinstance(v, list) else v for k, v in vc.items()})
    load_strict(vae, sat_vae_to_diffusers(state, len(vc["block_out_channels"])), path)
    return vae.eval()
