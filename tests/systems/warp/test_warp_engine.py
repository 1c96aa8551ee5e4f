"""End to end with real components: FaceMesh, pocketsphinx, PyAV. Measured on decoded pixels."""
import av
import numpy as np
import pytest

import talkinghead
from talkinghead.audio.features import voice_activity
from talkinghead.audio.phonemes import align
from talkinghead.config import AnimateConfig, MotionConfig, RenderConfig
from talkinghead.eval.sync import aperture_series, audio_envelope, av_offset
from talkinghead.io import probe
from talkinghead.motion.visemes import viseme_of
from talkinghead.types import Speech

FPS = 25


def _decode(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def talk(tmp_path_factory, grace, librivox):
    """grace + real read speech with its transcript, padded with 1 s of silence on both sides."""
    speech, text = librivox
    pad = np.zeros(16000, np.float32)
    padded = Speech(np.concatenate([pad, speech.samples, pad]), transcript=text)
    out = tmp_path_factory.mktemp("e2e") / "talk.mp4"
    sheet = out.with_name("sheet.png")
    talkinghead.animate(grace, padded, out, text=text, preview=sheet)
    frames = _decode(out)
    return dict(out=out, sheet=sheet, frames=frames, speech=padded, text=text,
                aperture=aperture_series(frames))


def test_output_is_a_valid_h264_aac_mp4_of_the_audio_length(talk):
    info = probe(talk["out"])
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["audio_codec"] == "aac"
    assert (info["width"], info["height"]) == (512, 512) and info["fps"] == FPS
    assert abs(info["n_frames"] / FPS - talk["speech"].duration) <= 1 / FPS
    assert abs(info["audio_duration"] - talk["speech"].duration) < 0.05
    assert talk["sheet"].exists() and talk["sheet"].stat().st_size > 10_000


def test_mouth_opens_in_speech_and_closes_in_silence(talk):
    ap = talk["aperture"]
    assert not np.isnan(ap).any(), "FaceMesh lost the face on some frames"
    vad = voice_activity(talk["speech"].samples, FPS)[: len(ap)]
    assert np.median(ap[:20]) < 0.04 and np.median(ap[-20:]) < 0.04  # leading/trailing silence
    assert ap[vad].mean() > 2.5 * ap[~vad].mean()
    assert np.percentile(ap[vad], 90) > 0.15


def test_lips_close_at_bilabials(talk):
    phones = align(talk["speech"], talk["text"])
    assert phones is not None
    ap = talk["aperture"]
    frames = [int((p.start + p.end) / 2 * FPS) for p in phones if viseme_of(p.phone) == "PP"]
    vowels = [int((p.start + p.end) / 2 * FPS) for p in phones if viseme_of(p.phone) in ("aa", "E", "oh")]
    assert len(frames) >= 4 and len(vowels) >= 5
    assert np.median(ap[frames]) < 0.05
    assert np.median(ap[frames]) < 0.4 * np.median(ap[vowels])


def test_audio_and_mouth_are_in_sync(talk):
    env = audio_envelope(talk["speech"].samples, FPS, len(talk["aperture"]))
    offset, peak, corr = av_offset(talk["aperture"], env, FPS)
    assert abs(offset) <= 1
    # read speech: the dB envelope is flat within phrases, so r is modest; the peak must still
    # stand clear of the correlation at far lags (a real alignment, not noise)
    far = np.abs(np.concatenate([corr[:10], corr[-10:]]))
    assert peak > 0.15 and peak > 2 * np.median(far)


def test_background_is_unchanged(talk, grace):
    from talkinghead.face import prepare

    portrait, _ = prepare(grace, 512)
    ref = portrait.image.astype(np.float64)
    band = np.zeros(ref.shape[:2], bool)
    band[:16], band[-16:], band[:, :16], band[:, -16:] = True, True, True, True
    for f in talk["frames"][::10]:
        mse = np.mean((f[band].astype(np.float64) - ref[band]) ** 2)
        assert 10 * np.log10(255 ** 2 / max(mse, 1e-9)) > 35  # includes H.264 loss


def test_same_seed_same_video_and_streaming_equals_batch(astronaut, librivox):
    speech = Speech(librivox[0].samples[: 16000 * 2])
    cfg = AnimateConfig(MotionConfig(seed=7), RenderConfig(size=256))
    anim = talkinghead.Animator(astronaut, cfg)
    batch = list(anim.frames(speech))
    again = list(talkinghead.Animator(astronaut, cfg).frames(speech))
    chunks = [speech.samples[i:i + 640] for i in range(0, len(speech.samples), 640)]  # 40 ms
    streamed = list(anim.stream(chunks))
    assert len(batch) == len(streamed) == 50
    assert all(np.array_equal(a, b) for a, b in zip(batch, again))
    assert all(np.array_equal(a, b) for a, b in zip(batch, streamed))
    other = list(talkinghead.Animator(astronaut, AnimateConfig(MotionConfig(seed=8), RenderConfig(size=256))
                                      ).frames(speech))
    assert not all(np.array_equal(a, b) for a, b in zip(batch, other))


def test_streaming_yields_frames_while_audio_arrives(astronaut, librivox):
    anim = talkinghead.Animator(astronaut, AnimateConfig(render=RenderConfig(size=256)))
    samples = librivox[0].samples[:16000]
    got = []

    def chunks():
        for i in range(0, len(samples), 1600):  # 100 ms
            yield samples[i:i + 1600]
            got.append(n_seen[0])

    n_seen = [0]
    for _ in anim.stream(chunks()):
        n_seen[0] += 1
    # after each 100 ms chunk, the frames up to (time - lookahead) had already been yielded
    assert got[4] >= 8 and got[-1] >= 20 and n_seen[0] == 25


def test_silent_audio_gives_a_still_blinking_face(tmp_path, grace):
    out = tmp_path / "silent.mp4"
    talkinghead.animate(grace, Speech(np.zeros(16000 * 6, np.float32)), out,
                        config=AnimateConfig(MotionConfig(blink_rate=30), RenderConfig(size=256)))
    frames = _decode(out)
    assert len(frames) == 150
    ap = aperture_series(frames[::5])
    assert np.nanmax(ap) < 0.05
    diffs = [np.abs(a.astype(int) - frames[0].astype(int)).mean() for a in frames]
    assert max(diffs) > 1.0  # blinks and idle head motion happen
