"""The registry's claims, proven by running them: every system listed, every dotted path resolves, and each
capability a system says it has (render, train, verify) is exercised through the real CLI: render and train here,
verify in test_verify_all.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from talkinghead.io import probe
from talkinghead.systems import CAPABILITIES, SYSTEMS, engine_names, resolve, verifier_names
from tests.support import CONFIGS, REPO, cli_exit_code

SEED_SYSTEMS = {"emo", "hallo", "hallo2", "echomimic", "emo2", "loopy", "hallo3", "hallo4", "skyreels-a1",
                "skyreels-a2", "midas"}


def test_systems_json_lists_warp_and_the_eleven(capsys):
    assert cli_exit_code(["systems", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == SEED_SYSTEMS | {"warp"}
    for r in rows:
        assert all(isinstance(r[c], bool) for c in CAPABILITIES)
        assert r["paper"] and r["family"] in ("warp", "unet", "dit", "autoregressive")


def test_systems_table_says_what_is_missing(capsys):
    assert cli_exit_code(["systems"]) == 0
    out = capsys.readouterr().out
    assert "warp" in out and "midas" in out
    assert "weights: none released" in out  # own-weight systems say where weights come from


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_every_path_resolves_and_every_stage_config_exists(name):
    s = SYSTEMS[name]
    for path in (*s.models, *(p for p in (s.engine, s.verifier, s.release) if p)):
        assert resolve(path) is not None, path
    assert (s.release is not None) == (s.weights == "official")  # official weights load through release.py
    for config in s.stage_configs:
        assert (CONFIGS / config).is_file(), config
    if s.can("render"):
        assert s.engine is not None
    if s.can("verify"):
        assert s.verifier is not None and s.fixture is not None
    if s.can("train"):
        assert s.trainer is not None and s.stage_configs


def test_cli_choices_come_from_the_registry(capsys):
    assert cli_exit_code(["animate", "--help"]) == 0
    help_text = capsys.readouterr().out
    for name in engine_names():
        assert name in help_text
    assert cli_exit_code(["verify", "--help"]) == 0
    help_text = capsys.readouterr().out
    for name in verifier_names():
        assert name in help_text


def test_an_engine_without_weights_is_refused_with_the_fix(short_wav, tmp_path, capsys):
    """Every engine but warp needs weights: leaving --checkpoint-dir out is one message, exit 2, no file."""
    from talkinghead.assets import portrait_path

    for name in engine_names():
        if SYSTEMS[name].weights == "none":
            continue
        out = tmp_path / f"{name}.mp4"
        code = cli_exit_code(["animate", "--engine", name, "--image", str(portrait_path("astronaut")), "--audio",
                     str(short_wav), "-o", str(out), "--quiet"])
        assert code == 2, name
        assert "--checkpoint-dir" in capsys.readouterr().err, name
        assert not out.exists()


# ----------------------------------------------------------------------------------- render, where claimed
@pytest.fixture(scope="module")
def engine_args(request):
    """name -> the extra CLI arguments (weights folder and the like) a tiny render of that engine needs."""
    def args(name: str) -> list[str]:
        if name == "warp":
            return ["--size", "128"]
        if name in ("hallo", "hallo2"):
            release = request.getfixturevalue("hallo_release")
            emb = request.getfixturevalue("face_embedding_file")
            return ["--checkpoint-dir", str(release), "--face-embedding", str(emb), "--size", "128", "--steps", "2"]
        builder = request.getfixturevalue("tiny_checkpoints").get(name)
        if builder is None:
            raise AssertionError(f"{name} claims render but tests/systems/conftest.py builds no tiny checkpoint for it")
        return builder()
    return args


def _frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("name", [n for n, s in SYSTEMS.items() if s.can("render")])
def test_render_claim(name, engine_args, short_wav, tmp_path):
    """The real CLI on a bundled portrait and real speech: an mp4 as long as the audio (within one frame),
    with an audio track, and the same frames for the same seed (encoded losslessly: libx264's threads may code
    the same frames differently from run to run, so only a lossless encode shows the engine's frames exactly)."""
    from talkinghead.assets import portrait_path

    extra = engine_args(name)
    outs = [tmp_path / f"{name}_{k}.mp4" for k in range(2)]
    for out in outs:
        argv = ["animate", "--engine", name, "--image", str(portrait_path("astronaut")), "--audio", str(short_wav),
                "-o", str(out), "--quiet", "--seed", "7", "--lossless", *extra]
        assert cli_exit_code(argv) == 0
    info = probe(outs[0])
    assert info["audio_duration"] == pytest.approx(0.9, abs=0.05)
    assert abs(info["n_frames"] / info["fps"] - info["audio_duration"]) <= 1.0 / info["fps"] + 1e-6
    np.testing.assert_array_equal(_frames(outs[0]), _frames(outs[1]))


def test_a_control_an_engine_cannot_honour_is_refused_naming_those_that_do(hallo_release, face_embedding_file,
                                                                           short_wav, tmp_path, capsys):
    from talkinghead.assets import portrait_path

    out = tmp_path / "x.mp4"
    base = ["animate", "--image", str(portrait_path("astronaut")), "--audio", str(short_wav), "-o", str(out), "--quiet"]
    assert cli_exit_code(base + ["--engine", "hallo", "--checkpoint-dir", str(hallo_release), "--face-embedding",
                        str(face_embedding_file), "--head-motion", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--head-motion is not honoured by the hallo engine" in err and "warp" in err
    assert cli_exit_code(base + ["--lip-weight", "1.5"]) == 2  # warp has no Hallo branch weights
    err = capsys.readouterr().err
    assert "--lip-weight is not honoured by the warp engine" in err and "hallo" in err
    assert not out.exists()


def test_hallo_seed_zero_is_seed_zero_and_branch_weights_change_the_video(hallo_release, face_embedding_file,
                                                                          short_wav, tmp_path):
    from talkinghead.assets import portrait_path

    def render(name, *extra):
        out = tmp_path / f"{name}.mp4"
        assert cli_exit_code(["animate", "--engine", "hallo", "--checkpoint-dir", str(hallo_release), "--face-embedding",
                     str(face_embedding_file), "--image", str(portrait_path("astronaut")), "--audio", str(short_wav),
                     "--size", "128", "--steps", "2", "-o", str(out), "--quiet", *extra]) == 0
        return _frames(out)

    zero, forty_two = render("s0", "--seed", "0"), render("s42", "--seed", "42")
    assert not np.array_equal(zero, forty_two)
    assert not np.array_equal(render("lip", "--seed", "0", "--lip-weight", "0"), zero)


# ----------------------------------------------------------------------------------- train, where claimed
@pytest.mark.parametrize("name", [n for n, s in SYSTEMS.items() if s.can("train")])
def test_train_claim(name):
    """Every stage config of a system that claims training names its trainer adapter; tests/train/test_smoke.py
    runs `train --smoke` on each of them (every YAML under configs/) and test_every_system.py overfits and
    resumes one stage per adapter."""
    import yaml

    from talkinghead.train.adapters import ADAPTERS

    s = SYSTEMS[name]
    assert s.trainer in ADAPTERS
    for config in s.stage_configs:
        system = yaml.safe_load((CONFIGS / config).read_text())["system"]
        assert (system if isinstance(system, str) else system["name"]) == s.trainer, config


def test_readme_table_is_current():
    from talkinghead.systems import markdown_table

    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- systems-table")
    body = readme[readme.index("\n", start) + 1: readme.index("<!-- /systems-table -->")].strip()
    assert body == markdown_table(), "regenerate the README's systems table from talkinghead.systems.markdown_table()"
