"""The phone set: the ARPAbet inventory, and espeak-ng's phoneme mnemonics mapped onto it.

espeak-ng reports the phonemes it speaks in its own mnemonics (per language); `espeak_to_arpabet` turns them
into the ARPAbet phones that pocketsphinx alignment gives, so both sources of timings speak one language
downstream, and `contiguous_segments` turns onsets into segments that tile the speech.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable

from talkinghead.types import PhoneSegment

SILENCE = "SIL"

ARPABET: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
    "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T",
    "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH", SILENCE,
)  # fmt: skip

# ---------------------------------------------------------------------------------------
# espeak-ng mnemonic -> ARPAbet
# ---------------------------------------------------------------------------------------

_STRESS_MARKS = "',%="  # espeak-ng prefixes phoneme names with these stress marks
_PAUSE_MARKS = "_:!|"  # "_", "_:", "_!", "_|", "__": pauses and word boundaries
_MODIFIERS = ":~#-`^\"+/[]!|_0123456789"  # length, nasal, variant ... marks after a phone

# English phonemes as espeak-ng names them (en, en-us, en-gb ... voices).
_ENGLISH: dict[str, str] = {
    # monophthongs
    "i": "IY", "i:": "IY", "I": "IH", "I#": "IH", "I2": "IH", "e": "EH", "E": "EH",
    "a": "AE", "aa": "AE", "a#": "AH", "A:": "AA", "A@": "AA", "A#": "AA", "0": "AA",
    "0#": "AA", "V": "AH", "@": "AH", "@2": "AH", "@5": "AH", "3": "ER", "3:": "ER",
    "@r": "ER", "O": "AO", "O:": "AO", "O@": "AO", "o@": "AO", "U": "UH", "U@": "UH",
    "u:": "UW", "u": "UW", "@L": "L",
    # diphthongs
    "aI": "AY", "aI@": "AY", "aI3": "AY", "aU": "AW", "aU@": "AW", "eI": "EY", "e@": "EH",
    "i@": "IH", "i@3": "IH", "OI": "OY", "oU": "OW", "oU#": "OW",
    # consonants
    "p": "P", "b": "B", "t": "T", "t#": "T", "d": "D", "d#": "D", "k": "K", "g": "G",
    "f": "F", "v": "V", "T": "TH", "D": "DH", "s": "S", "z": "Z", "z#": "Z", "S": "SH",
    "Z": "ZH", "h": "HH", "tS": "CH", "dZ": "JH", "m": "M", "m-": "M", "n": "N", "n-": "N",
    "N": "NG", "l": "L", "l/": "L", "l-": "L", "r": "R", "r-": "R", "w": "W", "j": "Y",
    "x": "HH", "?": "HH",
}  # fmt: skip

# Multi-letter phonemes of other languages, matched as a prefix (longest first) before
# the letter-by-letter fallback. Affricates and hushing sibilants mostly.
_CLUSTERS: dict[str, str] = {
    "tS": "CH", "ts;": "CH", "ts.": "CH", "tc": "CH", "dZ": "JH", "dz;": "JH", "dz.": "JH",
    "ts": "S", "t_s": "S", "dz": "Z", "d_z": "Z", "s;": "SH", "s.": "SH", "sx": "SH",
    "S;": "SH", "z;": "ZH", "z.": "ZH", "Z;": "ZH", "ng": "NG", "_j": "Y", "i.": "IH",
    "@r": "ER",
}  # fmt: skip

_CLUSTERS_LONGEST_FIRST = sorted(_CLUSTERS, key=len, reverse=True)

# Consonant letters by place of articulation. Bilabials stay bilabial (lip closure is the
# one shape a viewer never forgives), labiodentals stay labiodental.
_CONSONANTS: dict[str, str] = {
    # bilabial: p b m, β
    "p": "P", "b": "B", "m": "M", "B": "B", "P": "P",
    # labiodental: f v, ɱ (lips still close enough to read as M)
    "f": "F", "v": "V", "M": "M",
    # labio-velar approximant
    "w": "W",
    # dental fricatives
    "T": "TH", "D": "DH",
    # alveolar: stops, nasal, fricatives, lateral, rhotics (r trill, * tap), ɬ
    "t": "T", "d": "D", "n": "N", "s": "S", "z": "Z", "l": "L", "r": "R", "*": "R",
    "K": "L",
    # postalveolar fricatives
    "S": "SH", "Z": "ZH",
    # palatal: j, ç, ʎ, c ɟ (palatal stops)
    "j": "Y", "C": "HH", "L": "L", "c": "K", "J": "G", ";": "Y",
    # velar: k g ŋ x ɣ
    "k": "K", "g": "G", "N": "NG", "x": "HH", "G": "G",
    # uvular: q χ ʀ ʁ
    "q": "K", "X": "HH", "R": "R", "Q": "R",
    # glottal, pharyngeal
    "h": "HH", "H": "HH", "?": "HH", "#": "HH",
}  # fmt: skip

# Vowel letters as (height 0 close .. 3 open, backness 0 front .. 2 back, rounded 0/1).
_VOWEL_FEATURES: dict[str, tuple[float, float, float]] = {
    "i": (0.0, 0.0, 0), "I": (0.6, 0.4, 0), "e": (1.0, 0.0, 0), "E": (2.0, 0.0, 0),
    "&": (2.6, 0.0, 0), "a": (3.0, 0.6, 0), "A": (3.0, 2.0, 0), "6": (2.6, 1.0, 0),
    "@": (1.5, 1.0, 0), "3": (2.0, 1.0, 0), "V": (2.0, 1.6, 0), "7": (1.0, 2.0, 0),
    "y": (0.0, 0.0, 1), "Y": (1.0, 0.0, 1), "2": (1.0, 0.0, 1), "W": (2.0, 0.0, 1),
    "9": (2.0, 0.0, 1), "8": (1.0, 1.0, 1), "u": (0.0, 2.0, 1), "U": (0.6, 1.6, 1),
    "o": (1.0, 2.0, 1), "O": (2.0, 2.0, 1), "0": (3.0, 2.0, 1),
}  # fmt: skip

# ARPAbet monophthongs in the same space (ER is reached only through "3"/"@r").
_ARPABET_VOWELS: dict[str, tuple[float, float, float]] = {
    "IY": (0.0, 0.0, 0), "IH": (0.6, 0.4, 0), "EY": (1.0, 0.0, 0), "EH": (2.0, 0.0, 0),
    "AE": (2.6, 0.0, 0), "AA": (3.0, 1.6, 0), "AH": (1.8, 1.2, 0), "AO": (2.0, 2.0, 1),
    "OW": (1.0, 2.0, 1), "UH": (0.5, 1.7, 1), "UW": (0.0, 2.0, 1),
}  # fmt: skip
# What the lips show weighs most: rounding, then jaw height; backness is mostly hidden.
_FEATURE_WEIGHTS = (1.0, 0.4, 2.5)  # height, backness, rounding

# Falling diphthongs by their first two vowel letters (after dropping modifiers).
_DIPHTHONGS: dict[str, str] = {
    "aI": "AY", "ai": "AY", "aE": "AY", "ae": "AY", "AI": "AY", "Ai": "AY", "aY": "AY",
    "ay": "AY", "aU": "AW", "au": "AW", "Au": "AW", "AU": "AW", "ao": "AW", "aO": "AW",
    "eI": "EY", "ei": "EY", "EI": "EY", "Ei": "EY", "OI": "OY", "Oi": "OY", "oI": "OY",
    "oi": "OY", "OY": "OY", "Oy": "OY", "oU": "OW", "ou": "OW", "OU": "OW", "Ou": "OW",
    "@U": "OW", "@u": "OW",
}  # fmt: skip
_UNKNOWN = "AH"  # a letter nobody classified: some neutral mouth motion rather than none
_ONSET_GLIDES = "iuyj"  # "iE", "uo", "ja": a glide into the vowel that carries the syllable


def _nearest_vowel(features: tuple[float, float, float]) -> str:
    """The ARPAbet monophthong nearest to (height, backness, rounded)."""

    def distance(target: tuple[float, float, float]) -> float:
        return math.hypot(*(w * (a - b) for w, a, b in zip(_FEATURE_WEIGHTS, features, target)))

    return min(_ARPABET_VOWELS, key=lambda name: distance(_ARPABET_VOWELS[name]))


_VOWELS: dict[str, str] = {letter: _nearest_vowel(f) for letter, f in _VOWEL_FEATURES.items()}


def _vowel_letters(name: str) -> str:
    """The vowel letters of a vowel phoneme name: its first character plus any later
    non-digit vowel letters ("a:I" -> "aI", "e2" -> "e", "iou" -> "iou")."""
    rest = "".join(c for c in name[1:] if c in _VOWEL_FEATURES and not c.isdigit())
    return name[0] + rest


def _classify_vowel(name: str) -> str:
    """ARPAbet for a vowel-initial espeak-ng name, by its letters' height/backness/rounding."""
    letters = _vowel_letters(name)
    if len(letters) >= 2 and letters[0] in _ONSET_GLIDES and letters[1] != letters[0]:
        if letters[1] not in _ONSET_GLIDES or len(letters) == 2:
            letters = letters[1:]  # rising diphthong: the second vowel is the nucleus
    if letters[:2] in _DIPHTHONGS:
        return _DIPHTHONGS[letters[:2]]
    return _VOWELS[letters[0]]


def _classify(name: str) -> str:
    """Fallback for names outside the English table: clusters, then vowel or consonant
    by the leading letter."""
    for cluster in _CLUSTERS_LONGEST_FIRST:
        if name.startswith(cluster):
            return _CLUSTERS[cluster]
    if len(name) > 1 and name[0] == "?":  # glottal onset on a vowel: "?a"
        name = name[1:]
    if name[0] == "j" and len(name) > 1 and name[1] in _VOWEL_FEATURES:
        return _classify_vowel(name[1:])  # "ja", "ju": glide + vowel, one phoneme
    if name[0] in _VOWEL_FEATURES:
        return _classify_vowel(name)
    if name[0] in _CONSONANTS:
        return _CONSONANTS[name[0]]
    stripped = name.lstrip(_MODIFIERS)
    if stripped and stripped != name:
        return _classify(stripped)
    return _UNKNOWN


@functools.lru_cache(maxsize=4096)
def espeak_to_arpabet(mnemonic: str) -> str:
    """ARPAbet phone (no stress digit) for an espeak-ng phoneme mnemonic, any language.

    English names come from a table; other languages' names are classified by their
    letters (vowels by height/backness/rounding, consonants by place/manner), so that
    e.g. bilabials map to P/B/M and rounded vowels (o, u, y, ø) to OW/UW. Pauses and
    boundary marks ("_", "_:", "_!", "_|") become "SIL".
    """
    name = mnemonic.strip().lstrip(_STRESS_MARKS)
    if not name or (name[0] == "_" and not name.strip(_PAUSE_MARKS)):
        return SILENCE
    if name in _ENGLISH:
        return _ENGLISH[name]
    return _classify(name)


# ---------------------------------------------------------------------------------------
# Segments
# ---------------------------------------------------------------------------------------


def contiguous_segments(
    onsets: Iterable[tuple[float, str]], duration: float
) -> list[PhoneSegment]:
    """Phone segments covering [0, duration] from (onset seconds, phone) pairs.

    Each phone lasts until the next onset; the last until `duration`. Time before the
    first onset is silence, empty segments are dropped and neighbouring silences merged,
    so times strictly increase and the segments tile [0, duration] exactly.
    """
    if duration <= 0:
        return []
    points = sorted(((min(max(t, 0.0), duration), p) for t, p in onsets), key=lambda x: x[0])
    points.insert(0, (0.0, SILENCE))
    segments: list[PhoneSegment] = []
    for (start, phone), (end, _) in zip(points, points[1:] + [(duration, SILENCE)]):
        if end <= start:
            continue
        if segments and segments[-1].phone == phone == SILENCE:
            start = segments.pop().start
        segments.append(PhoneSegment(phone, start, end))
    return segments


# ---------------------------------------------------------------------------------------
# Forced alignment (pocketsphinx)
# ---------------------------------------------------------------------------------------
