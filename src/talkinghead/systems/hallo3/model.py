"""Hallo3 (Cui et al. 2024, "Highly Dynamic and Realistic Portrait Image Animation with Diffusion Transformer
Networks"): a CogVideoX-5B-I2V denoiser with face attention and per-latent-frame audio attention in every
block, an identity reference network (the portrait as one 3D-VAE frame through a transformer of the
denoiser's architecture, whose per-layer tokens join the denoiser's self-attention), wav2vec audio tokens
from three linear layers, T5 text tokens, 3D RoPE, and motion-frame latents for long video; trained in two
stages (identity, then audio layers only; configs/train/hallo3_stage*.yaml). Official numbers are checked by
`talkinghead verify hallo3` (systems/hallo3/verify.py).

The official release is a SAT checkpoint that systems/hallo3/release.py loads into this module (`find_sat_checkpoint`
+ `load_sat_checkpoint`, converting its names to diffusers' CogVideoX names; `config_from_sat` for the SAT model
config, `load_sat_vae` for its 3D VAE). The model computes what the official one computes: the reference
network's tokens join each denoiser layer's self-attention unrotated, face and audio attention run per latent frame
with the self-attention's qk-LayerNorm and latent frame 0's RoPE on their queries, and audio tokens are compressed
to latent frames by a strided convolution. Our own folders save/load diffusers-style (config.json + safetensors).
"""
from __future__ import annotations

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ...errors import InputError
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
