"""ARPAbet mapping of espeak-ng mnemonics and pocketsphinx forced alignment (real models)."""
from __future__ import annotations

import difflib
import random
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly

import talkinghead
from talkinghead.audio import phonemes, tts
from talkinghead.audio.phonemes import (
    ARPABET,
    align,
    contiguous_segments,
    espeak_to_arpabet,
    normalize_transcript,
)
from talkinghead.types import SAMPLE_RATE, PhoneSegment, Speech

ASSETS = Path(talkinghead.__file__).parent / "assets"


@pytest.fixture(scope="module")
def clip_0880() -> Speech:
    rate, pcm = wavfile.read(ASSETS / "librivox_0880.wav")
    assert rate == SAMPLE_RATE and pcm.dtype == np.int16
    text = (ASSETS / "librivox_0880.txt").read_text().strip()
    return Speech(samples=pcm.astype(np.float32) / 32768.0, transcript=text)


def spoken(segments: list[PhoneSegment]) -> list[PhoneSegment]:
    return [s for s in segments if s.phone != "SIL"]


def assert_tiles(segments: list[PhoneSegment], duration: float) -> None:
    assert segments[0].start == 0.0
    assert segments[-1].end == pytest.approx(duration, abs=1e-9)
    for a, b in zip(segments, segments[1:]):
        assert a.end == b.start
    assert all(s.end > s.start for s in segments)
    assert all(s.phone in ARPABET for s in segments)


def is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(h == n for h in it) for n in needle)


# --- espeak-ng mnemonic -> ARPAbet --------------------------------------------------


def test_arpabet_inventory():
    assert len(ARPABET) == 40 and len(set(ARPABET)) == 40 and "SIL" in ARPABET
    assert all(p.isupper() and p.isalpha() for p in ARPABET)


@pytest.mark.parametrize(
    ("mnemonic", "phone"),
    [
        ("'0", "AA"), ("a", "AE"), ("a#", "AH"), ("@", "AH"), ("3:", "ER"), ("'aI", "AY"),
        (",eI", "EY"), ("oU", "OW"), ("OI", "OY"), ("aU", "AW"), ("u:", "UW"), ("U", "UH"),
        ("i:", "IY"), ("I", "IH"), ("E", "EH"), ("V", "AH"), ("O:", "AO"), ("T", "TH"),
        ("D", "DH"), ("S", "SH"), ("Z", "ZH"), ("tS", "CH"), ("dZ", "JH"), ("N", "NG"),
        ("j", "Y"), ("h", "HH"), ("r", "R"), ("w", "W"), ("t#", "T"), ("l", "L"),
    ],
)  # fmt: skip
def test_english_mnemonics(mnemonic, phone):
    assert espeak_to_arpabet(mnemonic) == phone


@pytest.mark.parametrize("mnemonic", ["p", "p;", "p#", "ph", "'p", "b", "b;", "B", "m", "m;", "m#"])
def test_bilabials_stay_bilabial(mnemonic):
    assert espeak_to_arpabet(mnemonic) == {"p": "P", "b": "B", "B": "B", "m": "M"}[
        mnemonic.lstrip("'")[0]
    ]


@pytest.mark.parametrize(("mnemonic", "phone"), [("f", "F"), ("f;", "F"), ("v", "V"), ("v#", "V")])
def test_labiodentals(mnemonic, phone):
    assert espeak_to_arpabet(mnemonic) == phone


@pytest.mark.parametrize(
    ("mnemonic", "phone"),
    [("o", "OW"), ("o:", "OW"), ("'o~", "OW"), ("u", "UW"), ("u-", "UW"), ("y", "UW"),
     ("'y:", "UW"), ("Y", "OW"), ("Y:", "OW"), ("2", "OW"), ("W", "AO")],
)  # fmt: skip
def test_rounded_vowels_stay_rounded(mnemonic, phone):
    assert espeak_to_arpabet(mnemonic) == phone


@pytest.mark.parametrize(
    ("mnemonic", "phone"),
    [("ts.h", "CH"), ("tS;", "CH"), ("s.", "SH"), ("z.", "ZH"), ("S;", "SH"), ("ts", "S"),
     ("x", "HH"), ("C", "HH"), ("R", "R"), ("*", "R"), ("n^", "N"), ("l^", "L"),
     ("'iE", "EH"), ("uo", "OW"), ("'Au", "AW"), ("ai", "AY"), ("i.", "IH"), ("A:", "AA"),
     ("e:", "EY"), ("E~", "EH"), ("?a", "AA"), ("_j", "Y")],
)  # fmt: skip
def test_other_languages(mnemonic, phone):
    assert espeak_to_arpabet(mnemonic) == phone


@pytest.mark.parametrize("mnemonic", ["_", "_:", "_!", "_|", "", " "])
def test_pauses_are_silence(mnemonic):
    assert espeak_to_arpabet(mnemonic) == "SIL"


def test_any_mnemonic_gives_a_valid_phone():
    rng = random.Random(0)
    alphabet = "".join(chr(c) for c in range(33, 127)) + "ɑəʃ"
    for _ in range(3000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        assert espeak_to_arpabet(name) in ARPABET, name


# --- segments ---------------------------------------------------------------------


def test_contiguous_segments_fill_gaps_and_edges():
    onsets = [(0.1, "B"), (0.2, "AA"), (0.2, "SIL"), (0.3, "SIL"), (5.0, "M")]
    segs = contiguous_segments(onsets, 1.0)
    assert [(s.phone, s.start, s.end) for s in segs] == [
        ("SIL", 0.0, 0.1), ("B", 0.1, 0.2), ("SIL", 0.2, 1.0)
    ]  # fmt: skip


def test_contiguous_segments_without_onsets_is_silence():
    assert contiguous_segments([], 2.0) == [PhoneSegment("SIL", 0.0, 2.0)]
    assert contiguous_segments([(0.0, "AA")], 0.0) == []


def test_normalize_transcript():
    assert normalize_transcript("Hello, World! It’s 42 -- well-known.") == [
        "hello", "world", "it's", "42", "well", "known"
    ]  # fmt: skip


# --- forced alignment ---------------------------------------------------------------


def test_align_librivox(clip_0880):
    segments = align(clip_0880, clip_0880.transcript)
    assert segments is not None
    assert_tiles(segments, clip_0880.duration)
    phones = [s.phone for s in spoken(segments)]
    assert phones[:3] == ["HH", "IY", "W"] and phones[3] in ("AA", "AH")
    assert is_subsequence(["Z", "N", "AA", "T", "IH", "L", "D", "S", "P", "OW", "Z", "D"], phones)
    assert phones[-3:] == ["M", "AE", "N"]  # "man"
    m = spoken(segments)[-3]
    assert 0.7 * clip_0880.duration < m.start < 0.9 * clip_0880.duration
    assert segments[0].phone == "SIL" and segments[0].end > 0.1  # the clip opens quietly


def test_align_is_deterministic(clip_0880):
    first = align(clip_0880, clip_0880.transcript)
    align(Speech(samples=clip_0880.samples[::-1].copy()), "man young")  # disturb the state
    assert align(clip_0880, clip_0880.transcript) == first


def test_align_resamples_other_rates(clip_0880):
    rate = 22050
    resampled = resample_poly(clip_0880.samples, 441, 320).astype(np.float32)
    segments = align(Speech(samples=resampled, sample_rate=rate), clip_0880.transcript)
    reference = align(clip_0880, clip_0880.transcript)
    assert [s.phone for s in segments] == [s.phone for s in reference]
    assert segments[-1].end == pytest.approx(len(resampled) / rate)


def test_align_matches_espeak_timings():
    """pocketsphinx on espeak-ng audio agrees with espeak-ng's own phone events."""
    text = "Please pass me the big blue bowl of soup, my friend."
    speech = tts.synthesize(text, "en-us")
    aligned = align(speech, text)
    assert aligned is not None
    assert_tiles(aligned, speech.duration)
    ours, theirs = spoken(speech.phones), spoken(aligned)
    matcher = difflib.SequenceMatcher(
        a=[s.phone for s in ours], b=[s.phone for s in theirs], autojunk=False
    )
    deltas = [
        abs((ours[i + k].start + ours[i + k].end) - (theirs[j + k].start + theirs[j + k].end)) / 2
        for i, j, size in matcher.get_matching_blocks()
        for k in range(size)
    ]
    assert len(deltas) >= 0.8 * len(ours)
    assert np.median(deltas) < 0.060  # s


def test_align_learns_unknown_words_from_espeak():
    text = "Mister Zorblax visited Qwertyville."
    speech = tts.synthesize(text, "en-us")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segments = align(speech, text)
    assert segments is not None and len(spoken(segments)) > 20


def test_align_drops_unpronounceable_words(monkeypatch, clip_0880):
    monkeypatch.setattr(phonemes, "_espeak_pronunciation", lambda word: None)
    with pytest.warns(UserWarning, match="zzyzzq"):
        segments = align(clip_0880, "he was not an ill disposed zzyzzq young man")
    assert segments is not None


@pytest.mark.parametrize("transcript", ["", "  ...!  "])
def test_align_without_words_is_none(clip_0880, transcript):
    with pytest.warns(UserWarning):
        assert align(clip_0880, transcript) is None


def test_align_silence_is_none():
    with pytest.warns(UserWarning, match="could not align"):
        assert align(Speech(samples=np.zeros(SAMPLE_RATE, np.float32)), "hello world") is None
    with pytest.warns(UserWarning):  # and the decoder still works afterwards
        assert align(Speech(samples=np.zeros(0, np.float32)), "hello") is None


def test_align_from_threads(clip_0880):
    reference = align(clip_0880, clip_0880.transcript)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(align(clip_0880, clip_0880.transcript)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [reference] * 3
