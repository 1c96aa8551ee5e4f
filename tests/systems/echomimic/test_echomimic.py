"""EchoMimic pipeline pieces beyond `verify echomimic`: the context windows, the window-batching speed-up (same
numbers as one window per call), the opt-in fix for unaveraged windows without guidance, and the whisper loader's
errors. Runs on the tiny release of the shared reference data."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from talkinghead.errors import CheckpointError
from talkinghead.systems.echomimic.pipeline import SamplingConfig, context_windows, shifted
from tests.support import fixture, manifest


def test_context_windows_wrap_and_shift_as_officially():
    assert context_windows(4, 3, 1) == [[0, 1, 2], [2, 3, 0]]
    assert context_windows(7, 3, 1) == [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 0, 1]]
    assert context_windows(3, 12, 3) == [[0, 1, 2]]  # a short video is one window
    assert shifted([2, 3, 0], 2, 2, 4) == [2, 3, 0]  # audio-driven: 2 frames per step
    assert shifted([2, 3, 0], 1, 3, 4) == [1, 2, 3]  # landmark-driven: 3 frames per step
    with pytest.raises(ValueError, match="overlap"):
        context_windows(8, 3, 3)


@pytest.fixture(scope="module")
def tiny():
    release = fixture("echomimic", "echomimic_tiny")
    from safetensors.torch import load_file

    from talkinghead.models.checkpoints import load_vae_folder
    from talkinghead.systems.echomimic.release import load_net
    from talkinghead.systems.echomimic.pipeline import EchoMimicPipeline

    config = json.loads((release / "config.json").read_text())
    from diffusers import DDIMScheduler

    pipe = EchoMimicPipeline(load_net(release), load_vae_folder(release / "sd-vae-ft-mse"),
                             DDIMScheduler(**config["scheduler_kwargs"]))
    io = load_file(str(release / "io.safetensors"))
    run = config["run"]
    s = SamplingConfig(steps=run["num_inference_steps"], guidance_scale=run["guidance_scale"],
                       context_frames=run["context_frames"], context_overlap=run["context_overlap"])
    with torch.no_grad():
        ref = pipe.encode_reference(io["in.ref_image_uint8"].numpy())
        location = pipe.location(io["in.face_mask_uint8"].float()[None, None, None] / 255.0)
    audio = torch.randn(1, 5, 20, 384, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 4, 5, 16, 16, generator=torch.Generator().manual_seed(1)).clamp(-1.5, 1.5)
    return pipe, s, ref, location, audio, noise


def test_batched_windows_give_the_numbers_of_one_window_per_call(tiny):
    pipe, s, ref, location, audio, noise = tiny
    one = pipe.sample(ref, audio, location, noise, s)
    batched = pipe.sample(ref, audio, location, noise, dataclasses.replace(s, window_batch=3))
    assert len(context_windows(5, s.context_frames, s.context_overlap)) == 3
    assert (one - batched).abs().max() < 1e-4  # float reordering only (the reference data allows 5e-4)
    assert one.abs().max() > 0.1


def test_without_guidance_windows_are_summed_unless_averaging_is_asked_for(tiny):
    pipe, s, ref, location, audio, noise = tiny
    s = dataclasses.replace(s, guidance_scale=1.0, steps=1)
    trace_sum, trace_avg = {}, {}
    pipe.sample(ref, audio, location, noise, s, trace=trace_sum)
    pipe.sample(ref, audio, location, noise, dataclasses.replace(s, average_without_guidance=True), trace=trace_avg)
    summed, averaged = trace_sum["step_guided_out.0"], trace_avg["step_guided_out.0"]
    assert summed.shape[0] == 1  # no CFG rows
    # frames 0 and 2 and 4 are in two windows of [0,1,2], [2,3,4], [4,0,1] (frame 0 twice), 3 in one
    counts = torch.tensor([2.0, 2.0, 2.0, 1.0, 2.0]).view(1, 1, 5, 1, 1)
    assert torch.allclose(summed / counts, averaged, atol=1e-6)
    assert not torch.allclose(summed, averaged)


def test_whisper_loader_refuses_what_is_not_an_openai_checkpoint(tmp_path):
    from talkinghead.audio.whisper import WhisperFeatures

    with pytest.raises(CheckpointError, match="does not exist"):
        WhisperFeatures.from_openai_checkpoint(tmp_path / "whisper_tiny.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an openai whisper checkpoint"):
        WhisperFeatures.from_openai_checkpoint(tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="cannot read"):
        WhisperFeatures.from_openai_checkpoint(tmp_path / "broken.pt")


def test_full_size_whisper_and_landmark_locator_match_the_release_manifests():
    """On the meta device: the openai whisper-tiny encoder keys map one to one onto transformers' encoder (the
    decoder, unused by EchoMimic, is the only part left out) and face_locator_pose.pth fits the 3-channel locator."""
    from talkinghead.audio.whisper import WhisperDims, WhisperFeatures, transformers_name
    from talkinghead.systems.echomimic.model import EchoMimicConfig, EchoMimicNet
    from talkinghead.systems.echomimic.release import face_locator_sizes

    official = manifest("echomimic", "whisper_tiny.tsv")
    with torch.device("meta"):
        whisper = WhisperFeatures(WhisperDims(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6,
                                              n_audio_layer=4))
    ours = {k: list(v.shape) for k, v in whisper.encoder.state_dict().items()}
    encoder = {transformers_name(k): shape for k, shape in official.items() if k.startswith("encoder.")}
    assert encoder == ours
    assert all(k.startswith(("encoder.", "decoder.")) for k in official)

    pose = manifest("echomimic", "echomimic_face_locator_pose.tsv")
    state = {k: torch.empty(shape, device="meta") for k, shape in pose.items()}
    config = EchoMimicConfig()
    config.face_locator = face_locator_sizes(state, config.face_locator)
    assert config.face_locator["conditioning_channels"] == 3
    with torch.device("meta"):
        net = EchoMimicNet(config)
    assert {k: list(v.shape) for k, v in net.face_locator.state_dict().items()} == pose
