"""Parity of our Hallo audio front end (audio/wav2vec.py) with a `hallo_audio_tiny`-style fixture folder.

The folder holds a Wav2Vec2 checkpoint (config.json, preprocessor_config.json, model.safetensors) and
io.safetensors with the waveform and what the official code made of it. Every stored intermediate and
output is compared, except `out.clip0_audioproj_tokens_tiny_net`, which needs the Hallo audio projection.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..audio.wav2vec import WINDOW_RADIUS, audio_windows, load_wav2vec, trace_hallo_audio
from ..errors import CheckpointError
from . import Check, compare

IO_FILE = "io.safetensors"
TOLERANCE = 1e-5  # max abs difference, fp32 on CPU (measured ≤ 3.5e-6 on the shipped fixture)
EXACT = 0.0  # frame counts must match exactly

_REQUIRED_KEYS = ("in.waveform", "in.fps", "in.clip_length")


def _read_io(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / IO_FILE
    if not path.is_file():
        raise CheckpointError(f"audio fixture {folder} is missing: {IO_FILE}")
    io = load_file(str(path))
    missing = [key for key in _REQUIRED_KEYS if key not in io]
    if missing:
        raise CheckpointError(f"{path} lacks the inputs {missing}")
    return io


def _count(value: int) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.int64)


def _compare_present(io: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], tolerance: float) -> list[Check]:
    return [compare(key, value, io[key], tolerance) for key, value in ours.items() if key in io]


def check_audio_fixture(folder: Path) -> list[Check]:
    """One Check per stored output of the audio front end that this folder holds."""
    folder = Path(folder)
    io = _read_io(folder)
    model, extractor = load_wav2vec(folder)
    sample_rate = int(io["in.sample_rate"]) if "in.sample_rate" in io else extractor.sampling_rate  # Hz
    if sample_rate != extractor.sampling_rate:
        raise CheckpointError(
            f"{folder / IO_FILE}: waveform at {sample_rate} Hz, the extractor expects {extractor.sampling_rate} Hz"
        )
    waveform = io["in.waveform"].numpy()  # (samples,)
    fps, clip_length = int(io["in.fps"]), int(io["in.clip_length"])

    trace = trace_hallo_audio(model, extractor, waveform, fps, clip_length)
    unpadded = trace_hallo_audio(model, extractor, waveform, fps, clip_length=-1).audio_emb  # (t, layers, dim)
    radius = (io["out.audio_windows"].shape[1] - 1) // 2 if "out.audio_windows" in io else WINDOW_RADIUS
    windows = audio_windows(trace.audio_emb, radius)  # (t, 2r+1, layers, dim)
    ours = {
        "fe.normalized_input_values": trace.normalized,
        "fe.padded_input_values": trace.padded,
        "w2v.conv_features": trace.conv_features,
        "w2v.interpolated_features": trace.interpolated,
        "w2v.hidden_states_all": trace.hidden_states,
        "out.audio_emb": trace.audio_emb,
        "out.audio_emb_no_clip_padding": unpadded,
        "out.audio_windows": windows,
        "out.clip0_audio_windows": windows[None, :clip_length],  # (1, clip, 5, layers, dim)
    }
    counts = {
        "out.audio_length": _count(trace.audio_length),
        "out.seq_len_padded": _count(trace.audio_emb.shape[0]),
    }
    return _compare_present(io, ours, TOLERANCE) + _compare_present(io, counts, EXACT)
