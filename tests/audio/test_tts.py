"""espeak-ng text to speech: audio, phone timings, voices, errors (real espeak-ng)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from talkinghead.audio import tts
from talkinghead.audio.phonemes import ARPABET
from talkinghead.errors import InputError
from talkinghead.types import SAMPLE_RATE, Speech

BILABIALS = ("P", "B", "M")
ENVELOPE_HOP_S = 0.005  # s


@pytest.fixture(scope="module")
def bob() -> Speech:
    return tts.synthesize("Bob made a map.", "en")


def spoken(speech: Speech) -> list[str]:
    return [p.phone for p in speech.phones if p.phone != "SIL"]


def rms(speech: Speech, start: float, end: float) -> float:
    part = speech.samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
    return float(np.sqrt(np.mean(part.astype(np.float64) ** 2))) if part.size else 0.0


def envelope(speech: Speech) -> np.ndarray:
    hop = int(ENVELOPE_HOP_S * SAMPLE_RATE)
    n = len(speech.samples) // hop
    frames = speech.samples[: n * hop].reshape(n, hop).astype(np.float64)
    return np.sqrt((frames**2).mean(axis=1))


def assert_tiles(speech: Speech) -> None:
    """Phones are contiguous, strictly increasing, cover [0, duration], SIL at both ends."""
    phones = speech.phones
    assert phones, "no phones"
    assert phones[0].start == 0.0
    assert phones[-1].end == pytest.approx(speech.duration, abs=1e-9)
    for a, b in zip(phones, phones[1:]):
        assert a.end == b.start
    assert all(p.end > p.start for p in phones)
    assert all(p.phone in ARPABET for p in phones)
    assert phones[0].phone == "SIL" and phones[-1].phone == "SIL"


def test_english_is_audible_16k_speech(bob):
    assert bob.sample_rate == SAMPLE_RATE
    assert bob.samples.dtype == np.float32 and bob.samples.ndim == 1
    assert 0.5 < bob.duration < 2.0  # four short words
    assert rms(bob, 0, bob.duration) > 0.02
    assert np.abs(bob.samples).max() <= 1.0
    assert bob.transcript == "Bob made a map."
    assert bob.source == "espeak-ng:en"


def test_phones_tile_the_audio(bob):
    assert_tiles(bob)


def test_bob_made_a_map_has_timed_bilabials(bob):
    phones = spoken(bob)
    assert phones == ["B", "AA", "B", "M", "EY", "D", "AH", "M", "AE", "P"]
    env = envelope(bob)
    speaking = np.nonzero(env > 0.05 * env.max())[0] * ENVELOPE_HOP_S
    segments = [p for p in bob.phones if p.phone != "SIL"]
    for seg in segments:
        if seg.phone in BILABIALS:  # inside the speech, not in the surrounding silence
            assert speaking[0] - 0.03 <= seg.start and seg.end <= speaking[-1] + 0.1
    # words in order: "Bob" early, "map" late
    assert segments[0].phone == "B" and segments[0].start < 0.2 * bob.duration
    assert segments[-1].phone == "P" and segments[-1].start > 0.6 * bob.duration
    # vowels are loud, the stops' closures quiet
    vowel, stop = segments[-2], segments[-1]
    assert rms(bob, vowel.start, vowel.end) > 4 * rms(bob, stop.start, stop.start + 0.02)


def test_voiceless_stop_starts_at_its_closure():
    # espeak-ng reports /p/ at its burst; the lips close ~40 ms earlier (digital silence)
    speech = tts.synthesize("apa", "en-us")
    p = next(s for s in speech.phones if s.phone == "P")
    assert rms(speech, p.start, p.start + 0.02) < 1e-3
    before = next(s for s in speech.phones if s.end == p.start)
    assert rms(speech, before.start, before.end) > 0.02  # the vowel keeps no silence


@pytest.mark.parametrize(
    ("word", "expected"),
    [("map", ["M", "AE", "P"]), ("see", ["S", "IY"]), ("fish", ["F", "IH", "SH"])],
)
def test_simple_words_give_expected_phones(word, expected):
    assert spoken(tts.synthesize(word, "en-us")) == expected


def test_hello_roughly():
    phones = spoken(tts.synthesize("hello", "en"))
    assert phones[0] == "HH" and "L" in phones and phones[-1] == "OW"


def test_german_speaks_with_phones():
    speech = tts.synthesize("Guten Morgen, mein Freund.", "de")
    assert speech.source == "espeak-ng:de"
    assert_tiles(speech)
    phones = spoken(speech)
    assert {"G", "M", "F", "R", "N"} <= set(phones)
    assert phones.count("M") == 2  # Morgen, mein


def test_mandarin_speaks_with_phones():
    speech = tts.synthesize("你好，我是中国人。", "cmn")
    assert speech.source == "espeak-ng:cmn"
    assert rms(speech, 0, speech.duration) > 0.02
    assert_tiles(speech)
    phones = spoken(speech)
    assert len(phones) >= 12
    assert phones[0] == "N" and "W" in phones


def test_unknown_voice_is_an_input_error():
    with pytest.raises(InputError) as err:
        tts.synthesize("hello", "xx-klingonese")
    assert "xx-klingonese" in err.value.message
    assert "talkinghead voices" in err.value.hint and "en" in err.value.hint


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_is_an_input_error(text):
    with pytest.raises(InputError) as err:
        tts.synthesize(text)
    assert err.value.field == "text" and err.value.message == "is empty" and err.value.hint


def test_text_without_words_is_an_input_error():
    with pytest.raises(InputError):
        tts.synthesize("...")


def test_same_text_same_samples(bob):
    tts.synthesize("Guten Tag.", "de")  # another voice in between
    again = tts.synthesize("Bob made a map.", "en")
    assert np.array_equal(again.samples, bob.samples)
    assert again.phones == bob.phones


def test_threads_share_espeak_safely(bob):
    results: list[Speech] = []
    threads = [
        threading.Thread(target=lambda: results.append(tts.synthesize("Bob made a map.", "en")))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert all(np.array_equal(r.samples, bob.samples) for r in results)


def test_list_voices():
    voices = tts.list_voices()
    assert {"en", "en-us", "de", "cmn", "fr"} <= set(voices)
    assert voices == sorted(voices) and len(voices) == len(set(voices))


def test_voice_codes_are_case_insensitive():
    assert tts.synthesize("hi", "EN-US").source == "espeak-ng:en-us"
