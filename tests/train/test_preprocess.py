"""preprocess: videos -> shards of face crops, landmarks, masks, pose/speed, audio features; rejects with
reasons; resumable; workers=1 and workers=2 agree."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

import talkinghead.train.preprocess as P
from talkinghead.assets import portrait
from talkinghead.errors import InputError
from talkinghead.io import encode_frames, load_audio
from talkinghead.train.preprocess import MEL_PER_FRAME, N_MELS, Shard, crop_boxes, log_mel, preprocess
from talkinghead.types import SAMPLE_RATE, Speech

FPS = 25


def _index(dataset: Path) -> dict:
    return json.loads((dataset / "index.json").read_text(encoding="utf-8"))


def _tone(seconds: float) -> Speech:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return Speech((0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def _video_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


# ---------------------------------------------------------------------------------------------- layout


def test_shards_hold_crops_landmarks_masks_pose_and_mel(dataset_dir: Path, synth_dir: Path, synth_settings: dict):
    index = _index(dataset_dir)
    size = synth_settings["dataset_size"]
    assert index["version"] == 1 and index["size"] == size and index["fps"] == FPS
    assert index["mel_per_frame"] == MEL_PER_FRAME and index["n_mels"] == N_MELS and index["audio_feats"] is None
    assert [v["id"] for v in index["videos"]] == sorted(p.stem for p in synth_dir.glob("*.mp4"))
    for v in index["videos"]:
        meta = json.loads(Path(v["source"]).with_suffix(".json").read_text(encoding="utf-8"))
        t = v["frames"]
        assert t == meta["frames"] and v["seconds"] == pytest.approx(t / FPS, abs=1e-3)
        shard = Shard(dataset_dir / v["shard"])
        assert shard.meta["id"] == v["id"] and shard.n_frames == t
        d = shard.load()
        assert d["frames"].shape == (t, size, size, 3) and d["frames"].dtype == np.uint8
        assert d["frames"].std() > 20  # a picture, not a flat fill
        lm = d["landmarks"]
        assert lm.shape == (t, 478, 3) and lm.dtype == np.float16
        xy = lm[..., :2].astype(np.float32)
        assert xy.min() >= 0 and xy.max() <= size  # the whole face is inside the crop
        assert d["has_face"].all()
        masks = d["masks"]
        assert masks.shape == (3, size, size) and masks.dtype == np.uint8 and set(np.unique(masks)) == {0, 1}
        lip, face, full = masks.astype(bool)
        assert 0 < lip.sum() < face.sum() < size * size
        assert not (lip & ~face).any()  # lip inside face
        assert (full == ~face).all()  # full: everything outside the face box (Hallo's pose region)
        mouth = lm[:, [13, 14, 61, 291], :2].astype(np.float32).mean(axis=(0, 1)).round().astype(int)
        assert lip[mouth[1], mouth[0]]  # the lip box is around the mouth
        assert d["hallo_masks"].shape == (3, 64, 64) and d["hallo_masks"].max() == 255
        assert d["mel"].shape == (t, MEL_PER_FRAME, N_MELS) and np.isfinite(d["mel"]).all()
        assert d["pose"].shape == (t, 3) and np.abs(d["pose"]).max() < 30
        assert d["speed"].shape == (t,) and (d["speed"] >= 0).all()
        assert d["speed_bucket"].dtype == np.int64 and 0 <= d["speed_bucket"].min() <= d["speed_bucket"].max() < 6
        box = d["box"]  # inside the 128 px source frames
        assert (box[:, :2] >= 0).all() and (box[:, :2] + box[:, 2:] <= synth_settings["size"]).all()


def test_log_mel_has_exactly_four_frames_per_video_frame_in_place():
    n = 10
    samples = np.zeros(n * SAMPLE_RATE // FPS, np.float32)
    k = 6  # a click in the middle of video frame 6
    samples[k * 640 + 320] = 1.0
    mel = log_mel(samples, n + 2, FPS)  # two frames past the audio read silence
    assert mel.shape == (n + 2, MEL_PER_FRAME, N_MELS) and mel.dtype == np.float32
    energy = mel.max(axis=2)  # (frames, 4)
    assert np.unravel_index(energy.argmax(), energy.shape)[0] == k
    np.testing.assert_allclose(mel[n:], np.log10(P.LOG_FLOOR), rtol=1e-6)  # silence: the floor (float32)


def test_still_faces_get_one_box_and_moving_faces_a_smooth_one():
    base = np.zeros((50, 478, 3), np.float32)
    base[:, :, 0] = np.linspace(100, 200, 478)
    base[:, :, 1] = np.linspace(150, 250, 478)
    jitter = base + np.random.default_rng(0).normal(0, 1.0, base.shape).astype(np.float32)
    still = crop_boxes(jitter, (640, 480), FPS)
    assert (still == still[0]).all()  # small jitter: one fixed box
    moving = base.copy()
    moving[:, :, 0] += np.linspace(0, 150, 50)[:, None]  # the face slides 150 px to the right
    boxes = crop_boxes(moving, (640, 480), FPS)
    assert np.all(np.diff(boxes[:, 0]) >= 0) and boxes[-1, 0] - boxes[0, 0] > 80  # follows it, monotonic
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 640).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 2] <= 480).all()


# ---------------------------------------------------------------------------------------------- resume


def test_rerun_processes_nothing_again(dataset_dir: Path, synth_dir: Path, monkeypatch):
    shards = sorted((dataset_dir / "shards").iterdir())
    mtimes = [p.stat().st_mtime_ns for p in shards]

    def must_not_run(*args, **kwargs):
        raise AssertionError("a complete shard was processed again")

    monkeypatch.setattr(P, "process_video", must_not_run)
    report = preprocess(synth_dir, dataset_dir, size=64, workers=1, progress=False)
    assert report.reused == report.processed == [p.stem for p in shards] and not report.skipped
    assert [p.stat().st_mtime_ns for p in shards] == mtimes


def test_an_interrupted_video_is_done_again_alone(dataset_dir: Path, synth_dir: Path, tmp_path: Path):
    copy = tmp_path / "dataset"
    shutil.copytree(dataset_dir, copy)
    gone = sorted((copy / "shards").glob("*.safetensors"))[1]
    gone.rename(gone.with_name(f".{gone.name}.123.part"))  # as a run killed while writing it leaves it
    report = preprocess(synth_dir, copy, size=64, workers=1, progress=False)
    assert set(report.processed) - set(report.reused) == {gone.stem}
    assert gone.is_file() and not list((copy / "shards").glob(".*"))
    assert _index(copy) == _index(dataset_dir)
    with pytest.raises(InputError, match="size 64"):
        preprocess(synth_dir, copy, size=96, workers=1, progress=False)


def test_two_workers_make_the_same_dataset(dataset_dir: Path, synth_dir: Path, tmp_path: Path):
    report = preprocess(synth_dir, tmp_path / "ds2", size=64, workers=2, progress=False)
    assert len(report.processed) == 3 and not report.skipped and not report.reused
    assert _index(tmp_path / "ds2") == _index(dataset_dir)
    for v in _index(dataset_dir)["videos"]:
        a, b = Shard(dataset_dir / v["shard"]).load(), Shard(tmp_path / "ds2" / v["shard"]).load()
        assert set(a) == set(b)
        for key in ("masks", "box", "speed_bucket", "mel", "frames"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        np.testing.assert_allclose(a["landmarks"], b["landmarks"], atol=0.05)


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory, synth_dir: Path) -> Path:
    """One good clip and every kind of bad video."""
    folder = tmp_path_factory.mktemp("bad")
    good = sorted(synth_dir.glob("*.mp4"))[0]
    shutil.copy(good, folder / "good.mp4")
    (folder / "notes.mp4").write_text("a text file, not a video\n", encoding="utf-8")
    frames = _video_frames(good)
    encode_frames(frames, folder / "silent.mp4", FPS)  # no audio track
    encode_frames([np.full((96, 96, 3), 128, np.uint8)] * 40, folder / "gray.mp4", FPS, audio=_tone(1.6))
    encode_frames(frames[:10], folder / "short.mp4", FPS, audio=_tone(0.4))
    face = cv2.resize(portrait("astronaut"), (160, 160))
    pair = np.concatenate([face, face[:, ::-1]], 1)  # two faces of the same size side by side
    encode_frames([pair] * 30, folder / "crowd.mp4", FPS, audio=_tone(1.2))  # two people
    (folder / "readme.txt").write_text("not a video at all", encoding="utf-8")
    return folder


def test_bad_videos_are_reported_with_reasons(bad_dir: Path, tmp_path: Path, monkeypatch):
    report = preprocess(bad_dir, tmp_path / "ds", size=64, workers=2, progress=False)
    assert report.processed == ["good"]
    reasons = {Path(source).name: reason for source, reason in report.skipped}
    assert set(reasons) == {"notes.mp4", "silent.mp4", "gray.mp4", "short.mp4", "crowd.mp4"}
    assert reasons["notes.mp4"].startswith("unreadable")
    assert reasons["silent.mp4"] == "no audio track"
    assert reasons["gray.mp4"].startswith("no face")
    assert reasons["short.mp4"].startswith("too short")
    assert reasons["crowd.mp4"].startswith("several people")
    saved = json.loads((tmp_path / "ds" / "report.json").read_text(encoding="utf-8"))
    assert {(Path(e["source"]).name, e["reason"]) for e in saved["skipped"]} == set(reasons.items())
    assert [v["id"] for v in _index(tmp_path / "ds")["videos"]] == ["good"]

    monkeypatch.setattr(P, "process_video", lambda *a, **k: pytest.fail("processed again"))
    again = preprocess(bad_dir, tmp_path / "ds", size=64, workers=1, progress=False)  # verdicts are kept
    assert again.skipped == report.skipped and again.reused == ["good"]


def test_bad_folders_are_input_errors(tmp_path: Path, synth_dir: Path):
    with pytest.raises(InputError, match="does not exist"):
        preprocess(tmp_path / "missing", tmp_path / "ds", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no videos"):
        preprocess(tmp_path / "empty", tmp_path / "ds", progress=False)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(InputError, match="no videos"):
        preprocess(tmp_path / "texts", tmp_path / "ds", progress=False)
    for bad in ({"size": 10}, {"workers": 0}, {"fps": 29.97}, {"audio_model": tmp_path / "texts"}):
        with pytest.raises(InputError):
            preprocess(synth_dir, tmp_path / "ds", **bad, progress=False)
    assert not (tmp_path / "ds").exists()


def test_phone_videos_are_turned_upright(tmp_path: Path, synth_dir: Path):
    """A video stored sideways with a display rotation (as phones record) is read as it is shown."""
    folder = tmp_path / "videos"
    folder.mkdir()
    good = sorted(synth_dir.glob("*.mp4"))[0]
    frames = _video_frames(good)[:30]
    speech = load_audio(good)
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in frames]  # turned clockwise, as the sensor saw it
    with av.open(str(folder / "phone.mp4"), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = stored[0].shape[1], stored[0].shape[0], "yuv420p"
        vs.set_display_rotation(90)  # shown turned 90 degrees counterclockwise
        aus = out.add_stream("aac", rate=SAMPLE_RATE)
        aus.layout = "mono"
        for i, f in enumerate(stored):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for packet in vs.encode(vf):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        samples = speech.samples[: int(len(frames) / FPS * SAMPLE_RATE)]
        for start in range(0, len(samples), 1024):
            af = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts = SAMPLE_RATE, start
            for packet in aus.encode(af):
                out.mux(packet)
        for packet in aus.encode(None):
            out.mux(packet)
    report = preprocess(folder, tmp_path / "ds", size=64, workers=1, progress=False)
    assert report.processed == ["phone"], report.skipped
    d = Shard(tmp_path / "ds" / "shards" / "phone.safetensors").load()
    eyes, chin = d["landmarks"][:, [33, 263], 1].astype(np.float32), d["landmarks"][:, 152, 1].astype(np.float32)
    assert (eyes.mean(axis=1) < chin).all()  # eyes above the chin: upright


# ------------------------------------------------------------------------------------------ audio models


def _tiny_wav2vec(folder: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=8,
                            num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor().save_pretrained(folder)
    return folder


def _tiny_whisper(folder: Path) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=64,
                           max_target_positions=16, num_mel_bins=80, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                           decoder_start_token_id=3, suppress_tokens=[], begin_suppress_tokens=[])
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory, synth_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("one")
    shutil.copy(sorted(synth_dir.glob("*.mp4"))[0], folder / "clip.mp4")
    return folder


def test_wav2vec_features_one_row_per_frame(one_clip: Path, tmp_path: Path, monkeypatch):
    model = _tiny_wav2vec(tmp_path / "wav2vec2-tiny")
    report = preprocess(one_clip, tmp_path / "ds", size=64, workers=1, audio_model=model, progress=False)
    assert report.processed == ["clip"]
    index = _index(tmp_path / "ds")
    assert index["audio_feats"] == {"kind": "wav2vec2", "model": "wav2vec2-tiny", "layers": 2, "dim": 32}
    shard = Shard(tmp_path / "ds" / index["videos"][0]["shard"])
    feats = shard.array("audio_feats")
    assert feats.shape == (shard.n_frames, 2, 32) and feats.dtype == np.float16 and np.isfinite(feats).all()
    assert feats.astype(np.float32).std(axis=0).mean() > 0  # changes over time

    monkeypatch.setattr(P, "process_video", lambda *a, **k: pytest.fail("processed again"))
    for audio_model in (None, model):  # features kept without --audio-model, and with the same model
        assert preprocess(one_clip, tmp_path / "ds", size=64, workers=1, audio_model=audio_model,
                          progress=False).reused == ["clip"]
    assert _index(tmp_path / "ds")["audio_feats"]["kind"] == "wav2vec2"


def test_whisper_features_one_row_per_frame(one_clip: Path, tmp_path: Path):
    model = _tiny_whisper(tmp_path / "whisper-tiny")
    preprocess(one_clip, tmp_path / "ds", size=64, workers=1, audio_model=model, progress=False)
    index = _index(tmp_path / "ds")
    assert index["audio_feats"] == {"kind": "whisper", "model": "whisper-tiny", "layers": 2, "dim": 16}
    shard = Shard(tmp_path / "ds" / index["videos"][0]["shard"])
    assert shard.array("audio_feats").shape == (shard.n_frames, 2, 16)


def test_body_keypoints_are_stored_and_read(one_clip: Path, tmp_path: Path):
    """body=True stores EMO2's hands and body keypoints (real MediaPipe Hands + Pose) per frame, in crop-box
    units; TalkingClips then carries them, and a dataset made without them is made again when asked."""
    from talkinghead.train.datasets import TalkingClips

    preprocess(one_clip, tmp_path / "ds", size=64, workers=1, progress=False)
    report = preprocess(one_clip, tmp_path / "ds", size=64, workers=1, progress=False, body=True)
    assert report.processed == ["clip"]  # the shard had no keypoints
    shard = Shard(tmp_path / "ds" / _index(tmp_path / "ds")["videos"][0]["shard"])
    t = shard.n_frames
    assert shard.array("hands").shape == (t, 2, 21, 3) and shard.array("body").shape == (t, 12, 2)
    assert shard.array("hand_mask").shape == (t, 2) and set(np.unique(shard.array("body_mask"))) <= {0, 1}
    body, mask = shard.array("body"), shard.array("body_mask").astype(bool)
    assert np.isfinite(body).all() and (body[~mask] == 0).all()
    item = TalkingClips(tmp_path / "ds", clip_frames=3, motion_frames=0)[0]
    assert item["hands"].shape == (3, 2, 21, 3) and item["body_mask"].shape == (3, 12)
    assert preprocess(one_clip, tmp_path / "ds", size=64, workers=1, progress=False, body=True).reused == ["clip"]
