"""Forced alignment: `align` finds phone timings for a transcript in real speech with pocketsphinx's bundled
US-English acoustic model. The phone set and espeak-ng's mapping onto it are in `phoneset` (re-exported here)."""
from __future__ import annotations

import math
import re
import threading
import warnings
from collections.abc import Sequence

import numpy as np

from talkinghead.audio.phoneset import ARPABET, SILENCE, contiguous_segments, espeak_to_arpabet  # noqa: F401
from talkinghead.types import PhoneSegment, Speech

_ALIGN_RATE = 16000  # Hz, what the bundled en-us acoustic model was trained on
_OOV_VOICE = "en-us"  # espeak-ng voice that spells words the dictionary lacks
_DITHER_LSB = 2  # +-LSBs of seeded noise: digital silence (log 0) derails the features
_ALT_PRONUNCIATION_RE = re.compile(r"\(\d+\)$")  # "was(2)": the dictionary's 2nd variant
_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")  # words, inner apostrophes kept

_DECODER_LOCK = threading.Lock()
_decoder = None  # pocketsphinx.Decoder, built on first use


def normalize_transcript(transcript: str) -> list[str]:
    """Lowercase words without punctuation; digits stay as they are ("i'm 42!" -> [i'm, 42])."""
    return _WORD_RE.findall(transcript.lower().replace("’", "'"))


def _get_decoder():
    """The process-wide pocketsphinx Decoder (US-English model, no language model)."""
    global _decoder
    if _decoder is None:
        import pocketsphinx

        # bestpath off: the lattice rescoring it adds may cut an alignment short
        _decoder = pocketsphinx.Decoder(
            lm=None, samprate=_ALIGN_RATE, bestpath=False, loglevel="FATAL"
        )
    return _decoder


def _espeak_pronunciation(word: str) -> str | None:
    """ARPAbet pronunciation of `word` from espeak-ng's US-English rules, or None."""
    from talkinghead.audio import tts  # late: espeak-ng is loaded only for words the dictionary lacks
    from talkinghead.errors import InputError

    try:
        phones = [s.phone for s in tts.synthesize(word, _OOV_VOICE).phones or []]
    except InputError:
        return None
    phones = [p for p in phones if p != SILENCE]
    return " ".join(phones) or None


def _learn(decoder, word: str) -> bool:
    """Teach the decoder espeak-ng's pronunciation of `word`; whether that worked."""
    phones = _espeak_pronunciation(word)
    if phones is None:
        return False
    try:
        decoder.add_word(word, phones, True)
    except RuntimeError:
        return False
    return True


def _known_words(decoder, words: Sequence[str]) -> list[str]:
    """`words` the decoder can align: dictionary words, plus unknown ones it learns from
    espeak-ng. Words neither knows are dropped with a warning."""
    kept, dropped = [], []
    for word in words:
        if decoder.lookup_word(word) is None and not _learn(decoder, word):
            dropped.append(word)
            continue
        kept.append(word)
    if dropped:
        warnings.warn(
            f"alignment skips words it cannot pronounce: {', '.join(dropped)}", stacklevel=3
        )
    return kept


def _decode(decoder, pcm: bytes) -> None:
    """One full-utterance pass, with fresh feature statistics so results never depend on
    what was aligned before."""
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()


def _phone_onsets(decoder, text: str, pcm: bytes) -> list[tuple[float, str]] | None:
    """(onset seconds, ARPAbet) of every aligned phone, or None if alignment failed."""
    frame_rate = float(decoder.config["frate"])  # frames per second
    decoder.set_align_text(text)
    _decode(decoder, pcm)  # pass 1: word alignment
    hypothesis = decoder.hyp()
    if hypothesis is None or _words(hypothesis.hypstr) != text.split():
        return None  # no path, or one through only part of the transcript
    decoder.set_alignment()
    _decode(decoder, pcm)  # pass 2: phone alignment
    alignment = decoder.get_alignment()
    if alignment is None:
        return None
    onsets = []
    for phone in alignment.phones():
        name = phone.name if phone.name in ARPABET else SILENCE  # +NSN+, +SPN+ ... fillers
        onsets.append((phone.start / frame_rate, name))
    return onsets


def _words(hypothesis: str) -> list[str]:
    """Words of a hypothesis without pronunciation-variant marks."""
    return [_ALT_PRONUNCIATION_RE.sub("", word) for word in hypothesis.split()]


def _pcm16(speech: Speech) -> bytes:
    """The speech as 16-bit little-endian PCM at the aligner's rate, lightly dithered
    (seeded, so the same speech always aligns the same way)."""
    samples = np.asarray(speech.samples, dtype=np.float32)
    if speech.sample_rate != _ALIGN_RATE:
        from scipy.signal import resample_poly  # imported here: scipy.signal costs ~0.6 s at start-up

        g = math.gcd(int(speech.sample_rate), _ALIGN_RATE)
        samples = resample_poly(samples, _ALIGN_RATE // g, int(speech.sample_rate) // g)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int32)
    pcm += np.random.default_rng(0).integers(-_DITHER_LSB, _DITHER_LSB + 1, pcm.size)
    return np.clip(pcm, -32768, 32767).astype("<i2").tobytes()


def align(speech: Speech, transcript: str) -> list[PhoneSegment] | None:
    """Phone timings of `transcript` in `speech` by forced alignment (US-English model).

    Returns ARPAbet segments tiling [0, speech.duration], or None (with a warning) when
    nothing can be aligned, so callers can fall back to acoustic mouth motion. Words the
    dictionary lacks get espeak-ng's pronunciation; words nobody can pronounce are
    dropped with a warning.
    """
    global _decoder
    words = normalize_transcript(transcript)
    if not words or speech.duration <= 0:
        warnings.warn("alignment skipped: no words or no audio", stacklevel=2)
        return None
    pcm = _pcm16(speech)
    with _DECODER_LOCK:
        decoder = _get_decoder()
        words = _known_words(decoder, words)
        try:
            onsets = _phone_onsets(decoder, " ".join(words), pcm) if words else None
        except RuntimeError:
            _decoder = None  # mid-utterance failures can leave it unusable: rebuild next time
            onsets = None
    if not onsets:
        warnings.warn(
            "pocketsphinx could not align the transcript with the audio", stacklevel=2
        )
        return None
    return contiguous_segments(onsets, speech.duration)


__all__ = [
    "ARPABET",
    "SILENCE",
    "align",
    "contiguous_segments",
    "espeak_to_arpabet",
    "normalize_transcript",
]
