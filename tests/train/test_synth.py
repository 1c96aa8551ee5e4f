"""SynthTalk: warp-engine clips with espeak-ng speech in several languages and the true phone timings."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from talkinghead.errors import InputError
from talkinghead.io import probe
from talkinghead.data.synth import MAX_SECONDS, MIN_SECONDS, plan_clip, portrait_variant, synth

LANGUAGES = ("en-us", "de", "fr")  # as conftest's synth_dir


def test_clips_come_with_true_phone_timings(synth_dir: Path, synth_settings: dict):
    videos = sorted(synth_dir.glob("*.mp4"))
    assert len(videos) == 3
    languages = set()
    for video in videos:
        meta = json.loads(video.with_suffix(".json").read_text(encoding="utf-8"))
        languages.add(meta["language"])
        info = probe(video)
        assert (info["width"], info["height"]) == (synth_settings["size"],) * 2
        assert info["audio_codec"] == "aac" and info["n_frames"] == meta["frames"]
        assert MIN_SECONDS - 0.5 <= meta["seconds"] <= MAX_SECONDS + 0.5
        phones = meta["phones"]
        assert len(phones) >= 5 and sum(p["phone"] != "SIL" for p in phones) >= 5
        assert phones[0]["start"] == 0.0 and phones[-1]["end"] == pytest.approx(meta["seconds"], abs=1e-3)
        for a, b in zip(phones, phones[1:]):
            assert a["start"] < a["end"] == pytest.approx(b["start"], abs=1e-3)
        assert abs(info["video_duration"] - meta["seconds"]) <= 0.5 / meta["fps"] + 1e-3  # round(s * fps) frames
        assert all(0.0 <= p["start"] < p["end"] <= meta["seconds"] + 1e-3 for p in phones)
        assert all(p["end"] <= info["video_duration"] for p in phones if p["phone"] != "SIL")  # speech is on screen
        assert meta["text"].endswith(".") and meta["portrait"] in ("astronaut", "grace_hopper")
        assert set(meta["motion"]) >= {"head_motion", "smile", "blink_rate", "seed"}
    assert languages == set(synth_settings["languages"])


def test_same_seed_same_clips_and_a_rerun_keeps_them(synth_dir: Path, synth_settings: dict):
    before = {p: p.stat().st_mtime_ns for p in synth_dir.iterdir()}
    paths = synth(synth_dir, clips=3, size=synth_settings["size"], seed=0, languages=synth_settings["languages"],
                  progress=False)
    assert sorted(paths) == sorted(p for p in before if p.suffix == ".mp4")
    assert {p: p.stat().st_mtime_ns for p in synth_dir.iterdir()} == before  # nothing rendered again
    a, b, other = plan_clip(0, 1, LANGUAGES)[0], plan_clip(0, 1, LANGUAGES)[0], plan_clip(1, 1, LANGUAGES)[0]
    assert a == b and a != other


def test_variants_flip_and_zoom_the_portrait():
    plan = plan_clip(0, 0, LANGUAGES)[0]
    plan.flip, plan.shift = False, (0.0, 0.0)
    image = portrait_variant(plan, 256)
    plan.flip = True
    flipped = portrait_variant(plan, 256)
    assert image.shape == flipped.shape == (256, 256, 3)
    assert abs(flipped[:, ::-1].astype(int) - image).mean() < 3  # a mirror image of the same crop
    plan.flip, plan.zoom = False, plan.zoom * 0.7
    assert abs(portrait_variant(plan, 256).astype(int) - image).mean() > 10  # closer in


@pytest.mark.parametrize("kwargs", [{"clips": 0}, {"size": 127}, {"seed": -1}, {"languages": ("xx-nope",)},
                                    {"languages": ()}])
def test_bad_arguments_are_input_errors(tmp_path: Path, kwargs):
    with pytest.raises(InputError):
        synth(tmp_path / "out", **{"clips": 1, **kwargs}, progress=False)
    assert not list(tmp_path.glob("out/*.mp4"))


def test_small_videos_zoom_in_so_the_face_stays_animatable():
    from talkinghead.face.landmarks import MIN_FACE_WIDTH, analyze
    from talkinghead.data.synth import effective_zoom, plan_clip, portrait_variant
    from talkinghead.types import Portrait

    plans = [plan_clip(0, k, ("en-us",))[0] for k in range(6)]
    for plan in plans:
        plan.zoom = 2.6  # the widest framing SynthTalk draws
        assert effective_zoom(plan, 1024) == 2.6  # large videos keep the plan's framing
        assert effective_zoom(plan, 128) < 2.6
        face = analyze(Portrait(portrait_variant(plan, 128), plan.portrait), warn=False)
        assert face.face_width >= MIN_FACE_WIDTH
