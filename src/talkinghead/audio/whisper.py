"""Whisper audio features as EchoMimic v1 (and MuseTalk before it) compute them.

The encoder is transformers' `WhisperEncoder`, filled from an openai-format checkpoint (`whisper_tiny.pt`:
`{"dims": ..., "model_state_dict": ...}`, loaded with `weights_only=True`). What differs from transformers'
own feature path, and is reproduced here because it changes the numbers:

- the log-mel is computed on the whole, unpadded waveform (its normalisation max is taken over the whole
  file); each 30 s segment is then zero-padded in the normalised log-mel domain to 3000 frames;
- the features are the stack [embedding, output of every block] *before* the final LayerNorm, for every
  one of the 1500 positions, of which `int(segment_frames / 2)` are kept per segment (50 per second);
- per video frame i a window of 10 feature frames, c-4 .. c+5 with c = int(i * 50 / fps), clamped at both
  ends and flattened index-major/layer-minor to (10 * (layers + 1), width) tokens; windows continue up to
  the first one whose start lies past the end of the features.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
SEGMENT_FRAMES = 3000  # mel frames per 30 s segment, what the encoder always sees
FEATURES_PER_SECOND = 50
WINDOW_PAST, WINDOW_FUTURE = 4, 5  # feature frames before / after the centre frame of a video frame

# openai checkpoint names -> transformers WhisperEncoder names (per block `blocks.N.` -> `layers.N.`)
_BLOCK_NAMES = {
    "attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj", "attn.value": "self_attn.v_proj",
    "attn.out": "self_attn.out_proj", "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
    "mlp_ln": "final_layer_norm",
}
_TOP_NAMES = {"conv1": "conv1", "conv2": "conv2", "ln_post": "layer_norm"}


def transformers_name(key: str) -> str:
    """An openai checkpoint key of the encoder (`encoder.blocks.0.attn.query.weight`) -> its WhisperEncoder name."""
    name = key.removeprefix("encoder.")
    if name == "positional_embedding":
        return "embed_positions.weight"
    head, _, leaf = name.rpartition(".")
    if head.startswith("blocks."):
        _, index, sub = head.split(".", 2)
        return f"layers.{index}.{_BLOCK_NAMES.get(sub, sub)}.{leaf}"
    return f"{_TOP_NAMES.get(head, head)}.{leaf}"


def mel_filters(n_mels: int) -> torch.Tensor:
    """The Slaney-normalised mel filter bank openai whisper ships (librosa's, float32), (n_mels, n_fft/2+1)."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                           max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney",
                           mel_scale="slaney")
    return torch.from_numpy(bank.T.astype(np.float32))


def log_mel_spectrogram(waveform: torch.Tensor | np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """(samples,) float waveform at 16 kHz -> (n_mels, samples // 160) normalised log-mel, as openai whisper."""
    audio = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters(n_mels) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def int16_waveform(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] quantised as ffmpeg's s16le output, then read back as int16 / 32768
    (what whisper's audio loader hands to the front end)."""
    q = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    return q.astype(np.float32) / 32768.0


@dataclass
class WhisperDims:
    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4


class WhisperFeatures(nn.Module):
    """The whisper encoder of an openai-format checkpoint, giving EchoMimic's pre-LayerNorm layer stack."""

    def __init__(self, dims: WhisperDims):
        super().__init__()
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        self.dims = dims
        config = WhisperConfig(num_mel_bins=dims.n_mels, d_model=dims.n_audio_state,
                               encoder_layers=dims.n_audio_layer, encoder_attention_heads=dims.n_audio_head,
                               encoder_ffn_dim=4 * dims.n_audio_state, max_source_positions=dims.n_audio_ctx,
                               decoder_layers=0, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                               activation_function="gelu")
        config._attn_implementation = "sdpa"
        self.encoder = WhisperEncoder(config)

    @property
    def width(self) -> int:
        return self.dims.n_audio_state

    @property
    def n_layers(self) -> int:
        """Feature layers per frame: the embedding plus one per block."""
        return self.dims.n_audio_layer + 1

    @classmethod
    def from_openai_checkpoint(cls, path: str | Path) -> "WhisperFeatures":
        """Load `whisper_tiny.pt` (openai format) strictly; the decoder weights are read and ignored."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"whisper checkpoint {path} does not exist (EchoMimic's release ships it as "
                                  "pretrained_weights/audio_processor/whisper_tiny.pt)")
        try:
            blob = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad file for the user
            raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}. Only weights-only torch "
                                  "pickles are loaded; re-download the file if it is truncated.") from exc
        if not isinstance(blob, dict) or "dims" not in blob or "model_state_dict" not in blob:
            raise CheckpointError(f"{path} is not an openai whisper checkpoint (expected a dict with 'dims' and "
                                  "'model_state_dict')")
        d = blob["dims"]
        model = cls(WhisperDims(d["n_mels"], d["n_audio_ctx"], d["n_audio_state"], d["n_audio_head"],
                                d["n_audio_layer"]))
        state = {k: v for k, v in blob["model_state_dict"].items() if not k.startswith("decoder.")}
        model.load_openai_state(state, path)
        return model.eval()

    def load_openai_state(self, state: dict[str, torch.Tensor], source: str | Path) -> None:
        from ..models.checkpoints import load_strict

        ours = {transformers_name(key): value for key, value in state.items()}
        model_keys = self.encoder.state_dict()
        # openai's key projection has no bias: transformers' k_proj neither
        load_strict(self.encoder, {k: v.to(model_keys[k].dtype) if k in model_keys else v for k, v in ours.items()},
                    source)

    @torch.no_grad()
    def layer_stack(self, mel_segment: torch.Tensor) -> torch.Tensor:
        """(n_mels, 3000) log-mel -> (positions, layers + 1, width): embedding and every block's output,
        before the final LayerNorm."""
        enc = self.encoder
        p = next(enc.parameters())
        x = mel_segment.to(p.device, p.dtype)[None]
        x = F.gelu(enc.conv1(x))
        x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        outs = [x]
        for layer in enc.layers:
            x = layer(x, None)
            x = x[0] if isinstance(x, tuple) else x
            outs.append(x)
        return torch.stack(outs, dim=2)[0]

    @torch.no_grad()
    def features(self, waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
        """16 kHz waveform -> (feature frames, layers + 1, width) float32, 50 frames per second."""
        mel = log_mel_spectrogram(waveform, self.dims.n_mels)
        n_frames = mel.shape[-1]
        kept = []
        for seek in range(0, max(n_frames, 1), SEGMENT_FRAMES):
            segment = mel[:, seek:seek + SEGMENT_FRAMES]
            length = segment.shape[-1]
            segment = F.pad(segment, (0, SEGMENT_FRAMES - length))  # zeros in the normalised log-mel domain
            kept.append(self.layer_stack(segment)[: int(length / 2)].float())
        return torch.cat(kept).cpu()


def window_indices(n_features: int, fps: float) -> list[list[int]]:
    """Feature-frame indices of every video frame's window (see the module docstring)."""
    step = FEATURES_PER_SECOND / fps
    windows = []
    i = 0
    while True:
        start = int(i * step)
        centre = int(i * FEATURES_PER_SECOND / fps)
        windows.append([min(max(j, 0), n_features - 1)
                        for j in range(centre - WINDOW_PAST, centre + WINDOW_FUTURE + 1)])
        i += 1
        if start > n_features:
            return windows


def audio_windows(features: torch.Tensor, fps: float) -> torch.Tensor:
    """(feature frames, layers, width) -> (video frames, 10 * layers, width) tokens per video frame."""
    idx = torch.tensor(window_indices(features.shape[0], fps))
    return features[idx].reshape(idx.shape[0], -1, features.shape[-1])
