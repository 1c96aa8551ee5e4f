"""Hallo §3.1 audio embeddings: wav2vec2 hidden states resampled to the video frame rate."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from ..errors import CheckpointError, MissingFilesError

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # first one present wins

# Old torch weight norm (`weight_g`, `weight_v`) vs the parametrization names of current torch.
_LEGACY_WEIGHT_NORM = {
    ".weight_g": ".parametrizations.weight.original0",
    ".weight_v": ".parametrizations.weight.original1",
}
# Task checkpoints (e.g. facebook/wav2vec2-base-960h, a Wav2Vec2ForCTC) nest the base model under this
# prefix and add a head that Hallo's loader ignores.
_BASE_PREFIX = "wav2vec2."
_TASK_HEAD_PREFIXES = ("lm_head.",)

DEFAULT_FPS = 25  # video frames per second
DEFAULT_CLIP_LENGTH = 16  # frames per generated clip
WINDOW_RADIUS = 2  # frames of audio context on each side of a video frame


# ----------------------------------------------------------------------------------------------- loading


FILES = {"wav2vec config": [CONFIG_FILE], "wav2vec preprocessor": [PREPROCESSOR_FILE],
         "wav2vec weights": list(WEIGHT_FILES)}  # label -> accepted names, as in a release folder


def _missing_files(folder: Path) -> list[str]:
    missing = [name for name in (CONFIG_FILE, PREPROCESSOR_FILE) if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    return missing


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    safetensors_path, bin_path = (folder / name for name in WEIGHT_FILES)
    if safetensors_path.is_file():
        return load_file(str(safetensors_path), device="cpu")
    return torch.load(bin_path, map_location="cpu", weights_only=True)


def _strip_task_wrapper(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a task checkpoint (`wav2vec2.*` + `lm_head.*`) → keys of the bare Wav2Vec2Model."""
    if not any(key.startswith(_BASE_PREFIX) for key in state):
        return state
    kept = {k: v for k, v in state.items() if not k.startswith(_TASK_HEAD_PREFIXES)}
    return {k.removeprefix(_BASE_PREFIX): v for k, v in kept.items()}


def _other_weight_norm_spelling(key: str) -> str:
    for legacy, current in _LEGACY_WEIGHT_NORM.items():
        if key.endswith(legacy):
            return key.removesuffix(legacy) + current
        if key.endswith(current):
            return key.removesuffix(current) + legacy
    return key


def _rename_weight_norm(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Rename weight-norm tensors between the legacy and parametrization spellings, where the model wants it."""
    renamed = {}
    for key, value in state.items():
        other = _other_weight_norm_spelling(key)
        renamed[other if key not in expected and other in expected else key] = value
    return renamed


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    expected = set(model.state_dict())
    state = _rename_weight_norm(_strip_task_wrapper(state), expected)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"wav2vec2 weights in {folder} do not match the model built from {CONFIG_FILE}: "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # shape mismatches; the message names the keys
        raise CheckpointError(f"wav2vec2 weights in {folder} do not fit {CONFIG_FILE}: {error}") from error


def load_wav2vec(
    folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Wav2Vec2Model, Wav2Vec2FeatureExtractor]:
    """Build a Wav2Vec2Model and its feature extractor from a local folder (never downloads), in eval mode.

    Loads strictly: any key other than the known legacy/task-wrapper spellings raises CheckpointError.
    """
    folder = Path(folder)
    missing = _missing_files(folder)
    if missing:
        raise MissingFilesError(folder, missing, "wav2vec2")
    config = Wav2Vec2Config.from_json_file(str(folder / CONFIG_FILE))
    config._attn_implementation = "eager"  # the attention Hallo's transformers 4.39 ran
    model = Wav2Vec2Model(config)
    _load_strict(model, _read_weights(folder), folder)
    extractor = Wav2Vec2FeatureExtractor.from_json_file(str(folder / PREPROCESSOR_FILE))
    return model.to(device=device, dtype=dtype).eval(), extractor


# ------------------------------------------------------------------------------------------ embeddings


@dataclass(frozen=True)
class AudioTrace:
    """Every stage of `hallo_audio_embeddings`, for parity checks."""

    normalized: torch.Tensor  # (samples,) feature-extractor output
    padded: torch.Tensor  # (samples_padded,) normalised signal, zero-padded to whole clips
    conv_features: torch.Tensor  # (1, conv_frames, conv_dim) at the wav2vec rate (50 Hz)
    interpolated: torch.Tensor  # (1, t, conv_dim) resampled to the video frame rate
    hidden_states: torch.Tensor  # (layers + 1, t, dim); index 0 is the input of layer 1
    audio_emb: torch.Tensor  # (t, layers, dim)
    audio_length: int  # real video frames, before clip padding


def video_frame_count(n_samples: int, sample_rate: int, fps: int) -> int:
    """Video frames covering `n_samples` (rounded up; same float expression as Hallo)."""
    return math.ceil(n_samples / sample_rate * fps)


def padded_frame_count(n_frames: int, clip_length: int) -> int:
    """`n_frames` rounded up to whole clips; clip_length <= 0 means no padding."""
    if clip_length <= 0 or n_frames % clip_length == 0:
        return n_frames
    return n_frames + clip_length - n_frames % clip_length


def normalize_waveform(extractor: Wav2Vec2FeatureExtractor, waveform: np.ndarray) -> torch.Tensor:
    """Per-utterance zero mean / unit variance of the unpadded waveform. (samples,) float32."""
    values = extractor(waveform, sampling_rate=extractor.sampling_rate, return_tensors="np").input_values
    return torch.from_numpy(np.squeeze(values, axis=0)).float()


def pad_to_frames(signal: torch.Tensor, n_frames: int, target_frames: int, samples_per_frame: int) -> torch.Tensor:
    """Append zeros for the (target_frames - n_frames) extra frames. (samples,) → (samples_padded,)."""
    extra_samples = (target_frames - n_frames) * samples_per_frame
    return F.pad(signal, (0, extra_samples), mode="constant", value=0.0)


def resample_features(features: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Linear resampling along time to exactly `n_frames`. (1, n, c) → (1, n_frames, c)."""
    by_channel = features.transpose(1, 2)  # (1, c, n)
    return F.interpolate(by_channel, size=n_frames, mode="linear", align_corners=True).transpose(1, 2)


def encoder_hidden_states(encoder: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Run the encoder without a mask; stack its hidden states as transformers 4.39 returned them.

    (1, t, dim) → (layers + 1, t, dim): [input of layer 1, output of layers 1..n-1, last_hidden_state].
    transformers 5 no longer returns them from the encoder itself, so layer hooks record them.
    """
    recorded: list[torch.Tensor] = []

    def record_input(_module, args, kwargs):
        recorded.append(args[0] if args else kwargs["hidden_states"])

    def record_output(_module, _args, output):
        recorded.append(output[0] if isinstance(output, tuple) else output)

    layers = encoder.layers
    handles = [layers[0].register_forward_pre_hook(record_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(record_output) for layer in layers]
    try:
        last = encoder(hidden, attention_mask=None).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    if len(recorded) != len(layers) + 1:
        raise RuntimeError(f"recorded {len(recorded)} hidden states for {len(layers)} layers (layerdrop active?)")
    recorded[-1] = last  # differs from the last layer's output only for the stable-layer-norm variant
    return torch.cat(recorded, dim=0)  # (layers + 1, t, dim)


@torch.no_grad()
def trace_hallo_audio(
    model: Wav2Vec2Model,
    extractor: Wav2Vec2FeatureExtractor,
    waveform: np.ndarray,
    fps: int = DEFAULT_FPS,
    clip_length: int = DEFAULT_CLIP_LENGTH,
) -> AudioTrace:
    """`hallo_audio_embeddings` with every intermediate kept."""
    sample_rate = extractor.sampling_rate  # Hz
    samples_per_frame = sample_rate // fps  # 640 at 16 kHz / 25 fps
    param = next(model.parameters())

    normalized = normalize_waveform(extractor, waveform)  # (samples,)
    audio_length = video_frame_count(len(normalized), sample_rate, fps)
    seq_len = padded_frame_count(audio_length, clip_length)
    padded = pad_to_frames(normalized, audio_length, seq_len, samples_per_frame)  # (samples_padded,)

    signal = padded.to(device=param.device, dtype=param.dtype)[None]  # (1, samples_padded)
    conv_features = model.feature_extractor(signal).transpose(1, 2)  # (1, conv_frames, conv_dim)
    interpolated = resample_features(conv_features, seq_len)  # (1, t, conv_dim)
    projected, _ = model.feature_projection(interpolated)  # (1, t, dim); SpecAugment is off in eval
    hidden_states = encoder_hidden_states(model.encoder, projected)  # (layers + 1, t, dim)
    audio_emb = hidden_states[1:].transpose(0, 1).cpu()  # (t, layers, dim)
    return AudioTrace(normalized, padded, conv_features, interpolated, hidden_states, audio_emb, audio_length)


def hallo_audio_embeddings(
    model: Wav2Vec2Model,
    extractor: Wav2Vec2FeatureExtractor,
    waveform: np.ndarray,
    fps: int = DEFAULT_FPS,
    clip_length: int = DEFAULT_CLIP_LENGTH,
) -> tuple[torch.Tensor, int]:
    """Hallo's audio embedding of a 16 kHz mono float32 waveform.

    Returns (audio_emb (t_padded, layers, dim) on the CPU, audio_length = real video frames). t_padded is
    the frame count rounded up to whole clips of `clip_length` (clip_length <= 0: no padding).
    """
    trace = trace_hallo_audio(model, extractor, waveform, fps, clip_length)
    return trace.audio_emb, trace.audio_length


def audio_windows(emb: torch.Tensor, radius: int = WINDOW_RADIUS) -> torch.Tensor:
    """±radius frames of context per frame, clamped at the edges. (t, layers, dim) → (t, 2r+1, layers, dim)."""
    n_frames = emb.shape[0]
    offsets = torch.arange(-radius, radius + 1, device=emb.device)  # (2r+1,)
    index = (torch.arange(n_frames, device=emb.device)[:, None] + offsets).clamp(0, n_frames - 1)  # (t, 2r+1)
    return emb[index]
