"""The metrics card measures what it claims: metamorphic relations on warp-engine videos of real speech.

No fixed magic numbers: each test changes one thing about a video (audio shift, another utterance,
a still image, another face, added shake, blink rate) and checks the metric moves the right way.
"""
from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

import talkinghead
from talkinghead.assets import portrait_path, speech_path
from talkinghead.config import AnimateConfig, MotionConfig, RenderConfig
from talkinghead.eval import card as C
from talkinghead.eval import stability as S
from talkinghead.eval.identity import identity_metrics
from talkinghead.eval.sync import sync_metrics
from talkinghead.io import encode_frames, load_audio
from talkinghead.io.image import load_image
from talkinghead.interfaces.cli import main
from talkinghead.types import Speech

FPS = 25
HOP = 16000 // FPS  # audio samples per video frame
SIZE = 256


def _config(**motion) -> AnimateConfig:
    # lossless: the card reads the same frames on every run (libx264's threads vary lossy encodes)
    return AnimateConfig(motion=MotionConfig(**motion), render=RenderConfig(size=SIZE, fps=FPS, lossless=True))


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _wav(path, samples: np.ndarray):
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def talk(tmp_path_factory, librivox):
    """The astronaut reading 7 s of real speech (1 s of silence either side), and its card."""
    speech, text = librivox
    pad = np.zeros(16000, np.float32)
    padded = Speech(np.concatenate([pad, speech.samples, pad]), transcript=text)
    d = tmp_path_factory.mktemp("card")
    out = talkinghead.animate(portrait_path("astronaut"), padded, d / "talk.mp4", text=text, config=_config())
    card, series = C.evaluate_with_series(out, ref=portrait_path("astronaut"), text=text)
    return dict(dir=d, video=out, speech=padded, text=text, card=card, series=series)


def test_the_card_of_a_lip_synced_video_passes(talk):
    card = talk["card"]
    assert card["schema"] == C.SCHEMA and set(C.GROUPS) <= set(card)
    assert card["sync"]["passed"] and abs(card["sync"]["offset_frames"]) <= 1
    assert card["mouth"]["articulates"] and card["mouth"]["articulation_ratio"] > 3
    assert card["mouth"]["bilabial_closure"] is not None and card["mouth"]["bilabials"] > 0
    assert card["identity"]["same_person_rate"] == 1.0
    assert card["stability"]["face_rate"] == 1.0
    assert abs(card["container"]["av_mismatch_ms"]) < 1000 / FPS
    for group in C.GROUPS:  # every None has its reason, every reason belongs to a None
        g = card[group]
        assert {k for k, v in g.items() if v is None} == set(g["missing"])


@pytest.mark.parametrize("k", [-4, 3])
def test_shifting_the_audio_by_k_frames_moves_the_offset_by_k(talk, k):
    base = sync_metrics(talk["series"].aperture, talk["speech"].samples, FPS)[0]["offset_frames"]
    x = talk["speech"].samples
    # delaying the audio by k frames makes the video lead it: the offset falls by k
    shifted = np.concatenate([np.zeros(k * HOP, np.float32), x]) if k > 0 else x[-k * HOP:]
    values = sync_metrics(talk["series"].aperture, shifted, FPS)[0]
    assert abs(values["offset_frames"] - (base - k)) <= 1


def test_the_card_reads_a_shifted_audio_file_the_same_way(talk):
    delayed = _wav(talk["dir"] / "delayed.wav", np.concatenate([np.zeros(4 * HOP, np.float32), talk["speech"].samples]))
    card = C.evaluate(talk["video"], audio=delayed)
    assert abs(card["sync"]["offset_frames"] - (talk["card"]["sync"]["offset_frames"] - 4)) <= 1


def test_another_utterance_drops_the_confidence(talk):
    # another reading fills the whole clip: no silence lined up with the video's closed mouth at either end,
    # which alone correlates with any speech padded the same way
    other = load_audio(speech_path("librivox_0880")[0]).samples
    mismatched = np.concatenate([other, other, other])[: len(talk["speech"].samples)]
    matched = sync_metrics(talk["series"].aperture, talk["speech"].samples, FPS)[0]
    wrong = sync_metrics(talk["series"].aperture, mismatched, FPS)[0]
    assert wrong["confidence"] < matched["confidence"]
    assert not wrong["passed"]


def test_a_still_image_fails_sync_and_articulation(talk):
    still = load_image(portrait_path("astronaut")).image
    still = cv2.resize(still, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    n = len(talk["series"].aperture)
    video = encode_frames((still for _ in range(n)), talk["dir"] / "still.mp4", FPS, audio=talk["speech"])
    card = C.evaluate(video, text=talk["text"])
    assert card["sync"]["passed"] is False and card["sync"]["confidence"] < talk["card"]["sync"]["confidence"]
    assert card["mouth"]["articulates"] is False
    assert card["mouth"]["articulation"] < talk["card"]["mouth"]["articulation"] / 5
    assert card["mouth"]["bilabial_closure"] is not None  # a shut mouth "closes" on every p/b/m ...
    assert card["mouth"]["open_vowel_rate"] < talk["card"]["mouth"]["open_vowel_rate"]  # ... but never opens


def test_the_same_person_passes_identity_and_another_face_fails(talk):
    frames = talk["series"].frames
    same = talk["card"]["identity"]
    other = identity_metrics(frames, load_image(portrait_path("grace_hopper")).image)
    assert same["distance_mean"] < same["threshold"] < other["distance_mean"]
    assert other["same_person_rate"] < same["same_person_rate"]


def test_added_shake_raises_jitter(talk):
    rng = np.random.default_rng(0)
    shaken = []
    for f in _frames(talk["video"]):
        dx, dy = rng.uniform(-3, 3, 2)
        shaken.append(cv2.warpAffine(f, np.float32([[1, 0, dx], [0, 1, dy]]), (SIZE, SIZE),
                                     borderMode=cv2.BORDER_REPLICATE))
    video = encode_frames(shaken, talk["dir"] / "shaken.mp4", FPS, audio=talk["speech"])
    card = C.evaluate(video)
    assert card["stability"]["jitter"] > 2 * talk["card"]["stability"]["jitter"]


def test_blink_rate_follows_the_blink_control(tmp_path, librivox):
    speech = librivox[0]
    rates = {}
    for rate in (0, 40):
        out = talkinghead.animate(portrait_path("astronaut"), speech, tmp_path / f"b{rate}.mp4",
                                  config=_config(blink_rate=rate))
        sc = C.scan(out, 10 ** 6)
        rates[rate] = S.blink_metrics(sc.landmarks, FPS)["blinks_per_min"]
    assert rates[0] <= 10 < 20 <= rates[40]


def test_background_matches_the_portrait_and_a_wrong_portrait_does_not(talk):
    right = talk["card"]["stability"]
    assert right["background_psnr_db"] > 28 and right["background_ssim"] > 0.85
    grace = load_image(portrait_path("grace_hopper")).image
    wrong, _ = S.background_metrics(talk["series"].sampled, talk["series"].landmarks, grace,
                                    C._reference(grace)[1])
    assert wrong["background_psnr_db"] < right["background_psnr_db"] - 10
    assert wrong["background_ssim"] < right["background_ssim"] - 0.3


def test_missing_inputs_give_null_with_a_reason(talk):
    video = encode_frames(_frames(talk["video"])[:40], talk["dir"] / "silent.mp4", FPS)  # no audio track
    card = C.evaluate(video)
    assert card["sync"]["confidence"] is None and "no audio" in card["sync"]["missing"]["confidence"]
    assert card["identity"]["distance_mean"] is None and "(ref)" in card["identity"]["missing"]["distance_mean"]
    assert card["mouth"]["bilabial_closure"] is None and "(text)" in card["mouth"]["missing"]["bilabial_closure"]
    assert card["container"]["av_mismatch_ms"] is None


def test_cli_writes_json_and_plot(talk, tmp_path, capsys):
    js, png = tmp_path / "card.json", tmp_path / "card.png"
    with pytest.raises(SystemExit) as e:
        main(["eval", str(talk["video"]), "-o", str(js), "--plot", str(png)])
    assert e.value.code == 0
    card = json.loads(js.read_text())
    for group, key in [("sync", "offset_frames"), ("sync", "confidence"), ("identity", "distance_mean"),
                       ("stability", "jitter"), ("stability", "blinks_per_min"), ("container", "av_mismatch_ms")]:
        assert key in card[group]
    assert card["identity"]["distance_mean"] is None and card["identity"]["missing"]["distance_mean"]
    assert png.stat().st_size > 10_000
    assert "| sync | offset_frames |" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["eval", "nowhere.mp4"], "does not exist"),
    (["eval", "{video}", "-o", "{tmp}/card.txt"], "must end in .json"),
    (["eval", "{video}", "--plot", "{tmp}/missing/plot.png"], "not writable"),
    (["eval", "{tmp}", "--audio", "x.wav"], "single video"),
    (["eval", "{video}", "--real", "{tmp}"], "folder mode"),
    (["eval", "{ref}"], "single image, not a video"),
    (["eval", "{tmp}/notes.txt"], "cannot be read as a video"),
])
def test_cli_bad_input_is_one_clear_message(talk, tmp_path, capsys, args, message):
    (tmp_path / "notes.txt").write_text("not a video")
    args = [a.format(video=talk["video"], tmp=tmp_path, ref=portrait_path("grace_hopper")) for a in args]
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.png"))


def test_folder_mode_summarises_and_compares_distributions(talk, tmp_path):
    folder = tmp_path / "generated"
    folder.mkdir()
    frames = _frames(talk["video"])
    encode_frames(frames[:60], folder / "a.mp4", FPS)
    encode_frames(frames[60:120], folder / "b.mp4", FPS)
    real = tmp_path / "real"
    real.mkdir()
    encode_frames(frames[120:], real / "real.mp4", FPS)
    result = C.evaluate_folder(folder, ref=portrait_path("astronaut"), real=real)
    assert [c["video"] for c in result["videos"]] == [str(folder / "a.mp4"), str(folder / "b.mp4")]
    assert result["summary"]["stability"]["cards"] == 2 and result["summary"]["stability"]["jitter"] > 0
    dist = result["distribution"]
    assert dist["fid"] is not None and dist["kid_mean"] is not None and dist["n_real"] > 1
