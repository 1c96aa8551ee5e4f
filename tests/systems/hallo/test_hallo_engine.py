"""`--engine hallo` end to end on a tiny release folder laid out like the official one (weights from the
shared reference data), through the real CLI, MediaPipe, wav2vec and PyAV."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from talkinghead.io import probe
from tests.support import cli_exit_code


@pytest.fixture(scope="module")
def tiny_release(hallo_release):
    return hallo_release


@pytest.fixture(scope="module")
def embedding(face_embedding_file):
    return face_embedding_file


def _argv(release, embedding, wav, out, *extra):
    from talkinghead.assets import portrait_path

    return ["animate", "--engine", "hallo", "--checkpoint-dir", str(release), "--face-embedding", str(embedding),
            "--image", str(portrait_path("astronaut")), "--audio", str(wav), "--size", "128", "--steps", "2",
            "-o", str(out), "--quiet", *extra]


def test_renders_a_video_of_the_audio_length(tiny_release, embedding, short_wav, tmp_path):
    out = tmp_path / "hallo.mp4"
    assert cli_exit_code(_argv(tiny_release, embedding, short_wav, out)) == 0
    info = probe(out)
    assert (info["width"], info["height"]) == (128, 128)
    assert info["n_frames"] == 23  # ceil(0.9 s * 25 fps): the padded second clip is trimmed
    assert info["audio_duration"] == pytest.approx(0.9, abs=0.05)


def test_same_seed_same_video_and_dpm_scheduler_runs(tiny_release, embedding, short_wav, tmp_path):
    import av

    def frames(path):
        with av.open(str(path)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])

    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    assert cli_exit_code(_argv(tiny_release, embedding, short_wav, a, "--seed", "3")) == 0
    assert cli_exit_code(_argv(tiny_release, embedding, short_wav, b, "--seed", "3", "--scheduler", "dpm")) == 0
    again = tmp_path / "a2.mp4"
    assert cli_exit_code(_argv(tiny_release, embedding, short_wav, again, "--seed", "3")) == 0
    assert np.array_equal(frames(a), frames(again))
    assert frames(b).shape == frames(a).shape


@pytest.mark.parametrize("drop, needle", [
    ("hallo/net.pth", "hallo/net.pth"),
    ("sd-vae-ft-mse/config.json", "sd-vae-ft-mse/config.json"),
    ("wav2vec/wav2vec2-base-960h/config.json", "wav2vec2-base-960h"),
])
def test_missing_release_file_is_named_and_no_output(tiny_release, embedding, short_wav, tmp_path, capsys, drop, needle):
    release = tmp_path / "pretrained_models"
    shutil.copytree(tiny_release, release)
    (release / drop).unlink()
    out = tmp_path / "x.mp4"
    assert cli_exit_code(_argv(release, embedding, short_wav, out)) == 1
    assert needle in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.part*"))


def test_wrong_checkpoint_keys_are_listed(tiny_release, embedding, short_wav, tmp_path, capsys):
    import torch

    release = tmp_path / "pretrained_models"
    shutil.copytree(tiny_release, release)
    state = torch.load(release / "hallo" / "net.pth", weights_only=True)
    state["imageproj.extra.weight"] = state.pop("imageproj.proj.weight")
    torch.save(state, release / "hallo" / "net.pth")
    assert cli_exit_code(_argv(release, embedding, short_wav, tmp_path / "x.mp4")) == 1
    err = capsys.readouterr().err
    assert "imageproj.proj.weight" in err and "imageproj.extra.weight" in err


@pytest.mark.parametrize("extra, needle", [
    (["--size", "100"], "multiple of 64"),
    (["--dtype", "fp16", "--device", "cpu"], "needs a GPU"),
])
def test_bad_settings_are_user_errors(tiny_release, embedding, short_wav, tmp_path, capsys, extra, needle):
    assert cli_exit_code(_argv(tiny_release, embedding, short_wav, tmp_path / "x.mp4", *extra)) == 2
    assert needle in capsys.readouterr().err


def test_missing_checkpoint_dir_and_embedding_explain_the_fix(short_wav, tmp_path, capsys):
    from talkinghead.assets import portrait_path

    base = ["animate", "--engine", "hallo", "--image", str(portrait_path("astronaut")), "--audio", str(short_wav),
            "-o", str(tmp_path / "x.mp4"), "--quiet"]
    assert cli_exit_code(base) == 2
    assert "--checkpoint-dir" in capsys.readouterr().err
    assert cli_exit_code(base + ["--checkpoint-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--face-embedding" in err and "non-commercial" in err


def test_renders_share_one_loaded_release_and_run_side_by_side(tiny_release, embedding, short_wav, astronaut,
                                                                monkeypatch):
    """A server renders many videos: the release is loaded once, a render gives the same frames whatever ran
    before it, two renders in two threads give exactly the frames each gives alone, and a replaced
    checkpoint is loaded again."""
    import os
    import threading

    from talkinghead.config import AnimateConfig, DiffusionConfig, RenderConfig
    from talkinghead.io import load_audio
    from talkinghead.systems.hallo import engine as E
    from talkinghead.systems.hallo import release

    release._CACHE.clear()
    loads = []
    real = release.load_net
    monkeypatch.setattr(release, "load_net", lambda *a, **k: loads.append(1) or real(*a, **k))
    speech = load_audio(short_wav)

    def animator(seed: int):
        config = AnimateConfig(render=RenderConfig(size=128),
                               diffusion=DiffusionConfig(checkpoint_dir=str(tiny_release), face_embedding=str(embedding),
                                                         steps=2, device="cpu"))
        config.motion.seed = seed
        return E.HalloAnimator(astronaut, config, warn=False)

    a, b = animator(1), animator(2)
    assert len(loads) == 1 and a.pipe is b.pipe
    alone = [np.stack(list(x.frames(speech))) for x in (a, b)]
    np.testing.assert_array_equal(np.stack(list(a.frames(speech))), alone[0])  # nothing left over from b
    together: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda k=k, x=x: together.__setitem__(k, np.stack(list(x.frames(speech)))))
               for k, x in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not np.array_equal(alone[0], alone[1])  # two seeds, two videos
    for k in (0, 1):
        np.testing.assert_array_equal(together[k], alone[k])
    net_file = tiny_release / "hallo" / "net.pth"
    os.utime(net_file, ns=(net_file.stat().st_atime_ns, net_file.stat().st_mtime_ns + 1_000_000))
    assert animator(1).pipe.net is not a.pipe.net and len(loads) == 2
