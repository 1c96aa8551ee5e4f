import numpy as np
import pytest

from talkinghead.audio.tts import synthesize
from talkinghead.config import LOOKAHEAD, MotionConfig
from talkinghead.errors import InputError
from talkinghead.motion import MotionGenerator, motion_track
from talkinghead.types import PhoneSegment, Speech


def _stream(speech, cfg, fps, chunk):
    gen = MotionGenerator(cfg, fps, speech.phones)
    out = []
    for i in range(0, len(speech.samples), chunk):
        out += gen.push(speech.samples[i:i + chunk])
    return out + gen.finish()


@pytest.mark.parametrize("fps", [12.5, 24, 25, 29.97, 60])
@pytest.mark.parametrize("chunk", [160, 640, 1234, 16000])
def test_streaming_equals_batch(librivox, chunk, fps):
    speech, _ = librivox
    batch = motion_track(speech, MotionConfig(), fps).frames
    assert _stream(speech, MotionConfig(), fps, chunk) == batch


def test_whole_file_push_equals_one_sample_chunks_of_a_short_clip(librivox):
    speech = Speech(librivox[0].samples[:8000])
    batch = motion_track(speech, MotionConfig(), 24).frames
    assert _stream(speech, MotionConfig(), 24, 1) == batch


def test_frames_are_released_as_soon_as_their_lookahead_is_in(librivox):
    """With 40 ms chunks at 25 fps no frame waits for an extra chunk: after each chunk, every frame
    whose pts + 120 ms (mid-time + lookahead, incl. the smoothing window) is in hand is out."""
    speech, _ = librivox
    gen = MotionGenerator(MotionConfig(), 25)
    out = 0
    for i in range(0, len(speech.samples) - 640, 640):
        out += len(gen.push(speech.samples[i:i + 640]))
        in_hand = (i + 640) / 16000
        if in_hand >= 0.12:  # frames k with k / 25 + 0.12 <= in_hand
            assert out >= int(np.floor((in_hand - 0.12) * 25 + 1e-6)) + 1


@pytest.mark.parametrize("fps", [25, 30, 24])
def test_frame_count_matches_audio_duration(librivox, fps):
    speech, _ = librivox
    track = motion_track(speech, MotionConfig(), fps)
    assert abs(len(track) / fps - speech.duration) <= 0.5 / fps + 1e-9


def test_frames_are_causal_with_fixed_lookahead(librivox):
    """A frame never depends on audio later than its mid-time + LOOKAHEAD."""
    speech, _ = librivox
    fps, cut = 25, 80000  # 5 s
    gen = MotionGenerator(MotionConfig(), fps)
    early = gen.push(speech.samples[:cut])
    # every frame whose mid-time + lookahead is inside the pushed audio is already out
    assert len(early) >= int((cut / 16000 - LOOKAHEAD) * fps - 0.5)
    # and none of them changes when the rest of the audio is replaced by noise
    other = np.concatenate([speech.samples[:cut], np.random.default_rng(0).uniform(-1, 1, 40000).astype(np.float32)])
    gen2 = MotionGenerator(MotionConfig(), fps)
    frames2 = gen2.push(other) + gen2.finish()
    assert frames2[:len(early)] == early


def test_mouth_follows_speech_and_silence_closes_it(librivox):
    speech, _ = librivox
    pad = np.zeros(16000, np.float32)
    s = Speech(np.concatenate([pad, speech.samples, pad]))
    jaw = motion_track(s, MotionConfig(), 25).as_array("jaw")
    assert jaw[:20].max() == 0.0 and jaw[-20:].max() == 0.0  # silence: closed
    assert jaw[30:200].mean() > 0.15 and jaw[30:200].max() > 0.4  # speech: moving


def test_silent_audio_gives_still_blinking_face(silence):
    track = motion_track(Speech(np.zeros(16000 * 30, np.float32)), MotionConfig(blink_rate=20), 25)
    assert track.as_array("jaw").max() == 0.0
    blinks = np.sum(np.diff((track.as_array("blink") > 0.9).astype(int)) == 1)
    assert 6 <= blinks <= 16  # 20/min over 30 s, seeded gamma intervals
    assert track.as_array("blink").max() == 1.0  # each blink fully closes on some frame


def test_controls(librivox):
    speech, _ = librivox
    still = motion_track(speech, MotionConfig(head_motion=0), 25)
    for k in ("yaw", "pitch", "roll", "tx", "ty"):
        assert np.abs(still.as_array(k)).max() == 0.0
    lively = motion_track(speech, MotionConfig(head_motion=2), 25)
    normal = motion_track(speech, MotionConfig(head_motion=1), 25)
    assert lively.as_array("yaw").std() == pytest.approx(2 * normal.as_array("yaw").std(), rel=1e-4)
    lips = motion_track(speech, MotionConfig(lips_only=True), 25)
    for k in ("yaw", "pitch", "blink", "brows", "gaze_x"):
        assert np.abs(lips.as_array(k)).max() == 0.0
    assert lips.as_array("jaw").max() > 0.3
    mute = motion_track(speech, MotionConfig(mouth_scale=0), 25)
    assert np.abs(mute.as_array("jaw")).max() == 0.0
    big = motion_track(speech, MotionConfig(mouth_scale=2), 25)
    np.testing.assert_allclose(big.as_array("jaw"), 2 * normal.as_array("jaw"), rtol=1e-5)
    assert np.all(motion_track(speech, MotionConfig(smile=0.7), 25).as_array("smile") == np.float32(0.7))
    assert normal.as_array("brows").max() > 0.3 and motion_track(speech, MotionConfig(brows=0), 25).as_array("brows").max() == 0
    wander = motion_track(speech, MotionConfig(gaze="wander"), 25)
    assert np.abs(wander.as_array("gaze_x")).max() > 0.02 and np.abs(normal.as_array("gaze_x")).max() == 0


def test_head_motion_is_smooth_and_seeded(librivox):
    speech, _ = librivox
    a = motion_track(speech, MotionConfig(seed=1), 25)
    b = motion_track(speech, MotionConfig(seed=1), 25)
    c = motion_track(speech, MotionConfig(seed=2), 25)
    assert a.frames == b.frames
    assert not np.allclose(a.as_array("yaw"), c.as_array("yaw"))
    yaw = a.as_array("yaw")
    assert 0.5 < yaw.std() < 6  # degrees: visible, not wild
    # smooth: frame-to-frame steps are small compared with the range (no jitter)
    assert np.abs(np.diff(yaw, 2)).max() < 0.1 * np.ptp(yaw)


def test_bilabials_close_the_lips_even_for_one_frame():
    phones = [PhoneSegment("SIL", 0.0, 0.2), PhoneSegment("AA", 0.2, 0.4), PhoneSegment("M", 0.4, 0.44),
              PhoneSegment("AA", 0.44, 0.7), PhoneSegment("P", 0.7, 0.73), PhoneSegment("AA", 0.73, 1.0),
              PhoneSegment("SIL", 1.0, 1.4)]
    rng = np.random.default_rng(0)
    t = np.arange(int(1.4 * 16000)) / 16000
    loud = ((t > 0.2) & (t < 1.0)).astype(np.float32)
    s = Speech((0.3 * np.sin(2 * np.pi * 150 * t) * loud + 0.001 * rng.standard_normal(len(t))).astype(np.float32),
               phones=phones)
    tr = motion_track(s, MotionConfig(), 25)
    jaw, press = tr.as_array("jaw"), tr.as_array("press")
    m_frame, p_frame = int(0.42 * 25), int(0.715 * 25)
    assert press[m_frame] == 1.0 and jaw[m_frame] == 0.0
    assert press[p_frame] == 1.0 and jaw[p_frame] == 0.0
    assert jaw[int(0.3 * 25)] > 0.3 and jaw[int(0.6 * 25)] > 0.3  # vowels open
    # silence (beyond the ~100 ms of anticipation/carry-over around speech) is closed
    assert jaw[:2].max() < 0.05 and jaw[-3:].max() < 0.05


def test_acoustic_mouth_distinguishes_vowels_in_any_language():
    """Without a transcript, spectral shape gives width and rounding: 'ee' spreads, German 'u' rounds,
    'ah' opens widest; Mandarin speech moves the mouth too."""
    def stats(text, voice):
        s = synthesize(text, voice)
        tr = motion_track(Speech(s.samples), MotionConfig(), 25)
        jaw = tr.as_array("jaw")
        act = jaw > 0.05
        return jaw[act].mean(), tr.as_array("width")[act].mean(), tr.as_array("round")[act].mean(), jaw

    a_jaw, a_w, a_r, _ = stats("aaaah aaaah", "en-us")
    i_jaw, i_w, i_r, _ = stats("iiii iiii", "de")
    u_jaw, u_w, u_r, _ = stats("uuuu uuuu", "de")
    assert a_jaw > i_jaw and a_jaw > u_jaw
    assert i_w > a_w > u_w
    assert u_r > 0.5 > i_r + 0.3
    *_, zh = stats("wo men jin tian qu shang hai", "cmn")
    assert zh.std() > 0.1 and zh.max() > 0.4


def test_invalid_config_is_refused():
    with pytest.raises(InputError, match="between 0 and 2") as e:
        MotionGenerator(MotionConfig(head_motion=5), 25)
    assert e.value.field == "head_motion"
    with pytest.raises(InputError, match="camera, wander") as e:
        MotionGenerator(MotionConfig(gaze="left"), 25)
    assert e.value.field == "gaze"
