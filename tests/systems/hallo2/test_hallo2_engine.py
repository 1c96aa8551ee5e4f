"""`--engine hallo2` end to end on a tiny release folder in the official layout (Hallo's tiny net as
hallo2/net.pth, the tiny super-resolution network of the shared Hallo2 data as hallo2/net_g.pth), through the
real CLI, MediaPipe, wav2vec and PyAV; plus Hallo2's audio segmentation rule and the SR chunk schedule."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.io import probe
from talkinghead.systems.hallo2.engine import hallo2_audio_plan
from talkinghead.systems.hallo2.super_resolution import restore_video
from tests.support import cli_exit_code

SMALL_SR = dict(img_size=64, nf=32, ch_mult=(1, 1, 1), attn_resolutions=(16,), codebook_size=8, emb_dim=32,
                dim_embd=32, n_head=2, n_layers=1, latent_size=256, connect_list=("32",),
                fuse_encoder_block={"64": 2, "32": 5, "16": 9}, fuse_generator_block={"16": 6, "32": 9, "64": 12})


def small_sr(seed: int = 0):
    """A 64-pixel super-resolution network of the official block structure, deterministic weights."""
    from talkinghead.nn.vq_super_resolution import VQSuperResolutionConfig, VQVideoSuperResolution

    torch.manual_seed(seed)
    net = VQVideoSuperResolution(VQSuperResolutionConfig(**SMALL_SR)).eval()
    with torch.no_grad():
        net.position_emb.normal_()
    return net


@pytest.fixture(scope="module")
def release(hallo_release, tmp_path_factory) -> Path:
    """The tiny Hallo release plus hallo2/net_g.pth in the official `{'params_ema': ...}` form (a 64-pixel
    network, so a CPU restores a whole clip in seconds) and hallo2/net_g_config.json with its sizes."""
    root = tmp_path_factory.mktemp("hallo2") / "pretrained_models"
    shutil.copytree(hallo_release, root)
    net = small_sr()
    torch.save({"params_ema": net.state_dict()}, root / "hallo2" / "net_g.pth")
    (root / "hallo2" / "net_g_config.json").write_text(json.dumps(net.config.to_dict()))
    return root


def _argv(release, embedding, wav, out, *extra, engine="hallo2"):
    from talkinghead.assets import portrait_path

    return ["animate", "--engine", engine, "--checkpoint-dir", str(release), "--face-embedding", str(embedding),
            "--image", str(portrait_path("astronaut")), "--audio", str(wav), "--size", "128", "--steps", "2",
            "-o", str(out), "--quiet", *extra]


def _frames(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_long_video_loop_renders_the_audio_length_and_repeats_for_a_seed(release, face_embedding_file, short_wav,
                                                                         tmp_path):
    a, b, hallo = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "hallo.mp4"
    assert cli_exit_code(_argv(release, face_embedding_file, short_wav, a, "--seed", "5")) == 0
    info = probe(a)
    assert (info["width"], info["height"]) == (128, 128)
    assert info["n_frames"] == 23  # ceil(0.9 s * 25 fps)
    assert info["audio_duration"] == pytest.approx(0.9, abs=0.05)
    assert cli_exit_code(_argv(release, face_embedding_file, short_wav, b, "--seed", "5")) == 0
    assert np.array_equal(_frames(a), _frames(b))
    # same net.pth, but Hallo2's loop masks the motion frames and draws the mask from the noise stream
    assert cli_exit_code(_argv(release, face_embedding_file, short_wav, hallo, "--seed", "5", engine="hallo")) == 0
    assert not np.array_equal(_frames(a), _frames(hallo))


def test_super_resolution_stage(release, face_embedding_file, short_wav, tmp_path):
    out = tmp_path / "sr.mp4"
    assert cli_exit_code(_argv(release, face_embedding_file, short_wav, out, "--super-resolution", "--sr-fidelity", "1")) == 0
    info = probe(out)
    assert (info["width"], info["height"]) == (64, 64)  # the network's face size (512 in the release)
    assert info["n_frames"] == 22  # video_sr.py drops the last frame
    assert info["audio_duration"] == pytest.approx(0.9, abs=0.05)
    frames = _frames(out)
    assert frames.std() > 5  # restored content, not a flat image


def test_super_resolution_needs_net_g_and_its_options_need_it(release, face_embedding_file, short_wav, tmp_path,
                                                              capsys):
    bare = tmp_path / "pretrained_models"
    shutil.copytree(release, bare)
    (bare / "hallo2" / "net_g.pth").unlink()
    out = tmp_path / "x.mp4"
    assert cli_exit_code(_argv(bare, face_embedding_file, short_wav, out, "--super-resolution")) == 1
    assert "hallo2/net_g.pth" in capsys.readouterr().err
    assert cli_exit_code(_argv(release, face_embedding_file, short_wav, out, "--sr-fidelity", "0.7")) == 2
    assert "error: --sr-fidelity sets the super-resolution stage, which is off" in capsys.readouterr().err
    assert cli_exit_code(_argv(release, face_embedding_file, short_wav, out, "--super-resolution", engine="hallo")) == 2
    assert "hallo2" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("seconds, lengths, pad, generated", [
    (0.9, [23], 9, 23),  # one segment: Hallo's rule (pad to whole clips, trim to the audio)
    (70.0, [1500, 250], 10, 1750),  # 1750 % 16 = 6: the last segment gets 10 frames
    (60.16, [1500, 4], 16, 1504),  # total 1504 is whole clips but the segment is not: a whole clip of zeros
    (60.64, [1500, 16], 0, 1504),  # segment whole, total 1516 not: nothing padded, the partial clip is dropped
])
def test_hallo2_audio_segments(seconds, lengths, pad, generated):
    got_lengths, got_pad = hallo2_audio_plan(round(seconds * 16000), 16000, 25, 16)
    assert (got_lengths, got_pad) == (lengths, pad)
    assert min(sum(lengths), (sum(lengths) + pad) // 16 * 16) == generated


def test_hallo2_audio_matches_hallo_below_one_segment(hallo_dir, librivox):
    from talkinghead.audio.wav2vec import hallo_audio_embeddings, load_wav2vec
    from talkinghead.systems.hallo2.engine import hallo2_audio_embeddings

    model, extractor = load_wav2vec(hallo_dir / "hallo_audio_tiny")
    wave = librivox[0].samples[:16000]
    a, n_a = hallo_audio_embeddings(model, extractor, wave, 25, 16)
    b, n_b = hallo2_audio_embeddings(model, extractor, wave, 25, 16)
    assert n_a == n_b == 25 and torch.equal(a, b)


def test_restore_video_chunks_overlap_and_keep_order():
    """16-frame chunks overlapping by 4; each output frame comes from the chunk that restored it first-hand."""
    net = small_sr()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(30)]
    out = list(restore_video(net, iter(frames), w=1.0, chunk=16, overlap=4))
    assert len(out) == 30 and out[0].shape == (64, 64, 3) and out[0].dtype == np.uint8
    # chunks [0, 16), [12, 28), [24, 30): frames 16..27 come from the second chunk, 28..29 from the third
    second = list(restore_video(net, iter(frames[12:28]), w=1.0, chunk=16, overlap=4))
    assert all(np.array_equal(out[i], second[i - 12]) for i in range(16, 28))
    third = list(restore_video(net, iter(frames[24:]), w=1.0, chunk=16, overlap=4))
    assert all(np.array_equal(out[i], third[i - 24]) for i in range(28, 30))
    assert not np.array_equal(out[12], second[0])  # frame 12 was restored with frames 0..15, not 12..27
