"""Text to speech with phone timings: espeak-ng through ctypes.

espeak-ng reports a phoneme event (its mnemonic and the sample it starts at) for every
phoneme it speaks, so the timings come from the synthesizer itself, not from a guess.

espeak-ng keeps its state in C globals: `_LOCK` serialises every use of it. Some of that
state (the pitch-flutter phase, the gain control) carries over from one utterance to the
next and no API resets it, so the same text would come out a few samples different each
time. Each call therefore loads the library afresh and unloads it afterwards (< 1 ms):
the same text and voice always give the same samples.
"""
from __future__ import annotations

import _ctypes
import ctypes
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.audio.phoneset import SILENCE, contiguous_segments, espeak_to_arpabet
from talkinghead.errors import InputError
from talkinghead.types import SAMPLE_RATE, AudioTrack, Speech

# espeak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_EE_OK = 0
_INT16_FULL_SCALE = 32768.0

# espeak-ng reports a voiceless stop at its burst; the closure before it is digital
# silence inside the previous phone. The lips shut at the closure, so the stop starts there.
_VOICELESS_STOPS = frozenset({"P", "T", "K", "CH"})
_CLOSURE_LEVEL = 2  # int16 LSBs: espeak-ng's closures are exact zeros
_MAX_CLOSURE_S = 0.06  # s, caps how far a stop reaches back into a pause
_EDGE_SILENCE_S = 0.05  # s, least silence before the first and after the last phone

_EXAMPLE_VOICES = ("en", "en-us", "de", "fr", "es", "cmn")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT. `sample` is the event's position in samples at the native rate."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    """espeak_VOICE. `languages` is a run of (priority byte, NUL-terminated code), then 0."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass
class _Engine:
    """The loaded library and what the synth callback collects for the current call."""

    lib: ctypes.CDLL
    data_path: Path
    native_rate: int  # Hz
    chunks: list[np.ndarray] = field(default_factory=list)
    phonemes: list[tuple[int, str]] = field(default_factory=list)  # (sample, mnemonic)
    callback: object = None  # keeps the ctypes callback alive

    def on_synth(self, wav, n_samples: int, events) -> int:
        """espeak-ng's synth callback: keep the audio chunk and the phoneme events."""
        if n_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                name = event.id.string.decode("utf-8", "replace")
                self.phonemes.append((event.sample, name))
            i += 1
        return 0  # 0 = continue synthesis


_LOCK = threading.Lock()
_voices: dict[str, str] | None = None  # lower-case language code -> code, built once


def _declare(lib: ctypes.CDLL) -> None:
    """ctypes signatures of the espeak-ng functions used here."""
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_Synth.restype = ctypes.c_int


def _unload(lib: ctypes.CDLL) -> None:
    """Drop our reference to the shared library; the loader unmaps it (and its globals)
    when no one else holds it."""
    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(lib._handle)


@contextmanager
def _espeak() -> Iterator[_Engine]:
    """A freshly loaded and initialised espeak-ng, unloaded on exit. Hold `_LOCK`."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    try:
        _declare(lib)
        data_path = Path(espeakng_loader.get_data_path())
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), options)
        if rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise (data at {data_path})")
        try:
            engine = _Engine(lib=lib, data_path=data_path, native_rate=rate)
            engine.callback = _SynthCallback(engine.on_synth)
            lib.espeak_SetSynthCallback(engine.callback)
            yield engine
        finally:
            lib.espeak_Terminate()
    finally:
        _unload(lib)


# ---------------------------------------------------------------------------------------
# Voices
# ---------------------------------------------------------------------------------------


def _languages(voice: _Voice) -> list[str]:
    """The language codes a voice speaks, best first."""
    codes, address = [], voice.languages
    while address and ctypes.string_at(address, 1) != b"\0":  # priority byte; 0 ends
        code = ctypes.string_at(address + 1)
        codes.append(code.decode("ascii", "replace"))
        address += len(code) + 2
    return codes


def _dictionary_installed(data_path: Path, voice: _Voice, language: str) -> bool:
    """Whether the pronunciation dictionary this voice loads exists (a few voices name
    dictionaries the espeakng_loader wheel does not ship)."""
    name = language.split("-")[0]
    voice_file = data_path / "lang" / voice.identifier.decode()
    if voice_file.is_file():
        for line in voice_file.read_text("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "dictionary":
                name = parts[1]
    return (data_path / f"{name}_dict").is_file()


def _voice_table(engine: _Engine) -> dict[str, str]:
    """Lower-case language code -> code, for every voice whose dictionary is installed."""
    global _voices
    if _voices is None:
        table: dict[str, str] = {}
        voices = engine.lib.espeak_ListVoices(None)
        i = 0
        while voices[i]:
            voice = voices[i].contents
            codes = _languages(voice)
            if codes and _dictionary_installed(engine.data_path, voice, codes[0]):
                for code in codes:
                    table.setdefault(code.lower(), code)
            i += 1
        _voices = table
    return _voices


def list_voices() -> list[str]:
    """Language codes espeak-ng can speak ("en", "en-us", "de", "cmn", "fr", ...), sorted."""
    with _LOCK:
        if _voices is None:
            with _espeak() as engine:
                _voice_table(engine)
        return sorted(_voices.values())


def _unknown_voice(voice: str, known: dict[str, str]) -> InputError:
    examples = ", ".join(v for v in _EXAMPLE_VOICES if v in known)
    return InputError(
        f"{voice!r} is not a known voice",
        f"use a language code such as {examples}; `talkinghead voices` lists all", field="voice",
    )


def _select_voice(engine: _Engine, voice: str) -> str:
    """Make `voice` (a language code, any case) espeak-ng's current voice; its code."""
    known = _voice_table(engine)
    code = known.get(voice.strip().lower())
    if code is None:
        raise _unknown_voice(voice, known)
    language = ctypes.create_string_buffer(code.encode())  # alive until the call returns
    spec = _Voice()
    spec.languages = ctypes.cast(language, ctypes.c_void_p)
    if engine.lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) != _EE_OK:
        raise _unknown_voice(voice, known)
    return code


# ---------------------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------------------


def _synthesize_native(engine: _Engine, text: str) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """int16 audio at the native rate and (sample, mnemonic) phoneme events."""
    engine.chunks, engine.phonemes = [], []
    data = text.encode("utf-8")
    rc = engine.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if rc != _EE_OK:
        raise RuntimeError(f"espeak-ng synthesis failed (error {rc})")
    audio = np.concatenate(engine.chunks) if engine.chunks else np.zeros(0, np.int16)
    return audio, sorted(engine.phonemes, key=lambda event: event[0])


def _closure_start(audio: np.ndarray, sample: int, earliest: int, max_samples: int) -> int:
    """Start of the silent run that ends at `sample` (no earlier than `earliest`)."""
    start = sample
    limit = max(earliest, sample - max_samples, 0)
    while start > limit and abs(int(audio[start - 1])) <= _CLOSURE_LEVEL:
        start -= 1
    return start


def _phone_onsets(
    audio: np.ndarray, events: list[tuple[int, str]], native_rate: int
) -> list[tuple[float, str]]:
    """(onset seconds, ARPAbet) per phoneme event, voiceless stops moved back to the start
    of their closure (swallowing a pause mark that sits inside the closure)."""
    onsets: list[tuple[int, str]] = []  # (sample, phone)
    max_closure = int(_MAX_CLOSURE_S * native_rate)
    for sample, name in events:
        phone = espeak_to_arpabet(name)
        if phone in _VOICELESS_STOPS:
            spoken = [s for s, p in onsets if p != SILENCE]
            earliest = spoken[-1] + 1 if spoken else 0
            sample = _closure_start(audio, min(sample, len(audio)), earliest, max_closure)
            while onsets and onsets[-1][1] == SILENCE and onsets[-1][0] >= sample:
                onsets.pop()
        onsets.append((sample, phone))
    return [(sample / native_rate, phone) for sample, phone in onsets]


def _pad_edges(
    audio: np.ndarray, onsets: list[tuple[float, str]], native_rate: int
) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Pad with digital silence so speech starts and ends with _EDGE_SILENCE_S of SIL
    (espeak-ng starts some voices, e.g. cmn, at sample 0 and ends others mid-decay)."""
    duration = len(audio) / native_rate
    spoken = [t for t, phone in onsets if phone != SILENCE]
    first = spoken[0] if spoken else duration
    after_last = [t for t, phone in onsets if phone == SILENCE and spoken and t > spoken[-1]]
    trailing = duration - after_last[0] if after_last else 0.0
    lead = round(max(0.0, _EDGE_SILENCE_S - first) * native_rate)
    trail = round(max(0.0, _EDGE_SILENCE_S - trailing) * native_rate)
    padded = np.concatenate([np.zeros(lead, audio.dtype), audio, np.zeros(trail, audio.dtype)])
    shift = lead / native_rate
    onsets = [(t + shift, phone) for t, phone in onsets]
    if trail:
        onsets.append((duration + shift, SILENCE))
    return padded, onsets


def _to_model_rate(audio: np.ndarray, native_rate: int) -> np.ndarray:
    """int16 audio at `native_rate` -> float32 in [-1, 1] at SAMPLE_RATE."""
    samples = audio.astype(np.float32) / _INT16_FULL_SCALE
    if native_rate != SAMPLE_RATE:
        from scipy.signal import resample_poly  # imported here: scipy.signal costs ~0.6 s at start-up

        g = math.gcd(native_rate, SAMPLE_RATE)
        samples = resample_poly(samples, SAMPLE_RATE // g, native_rate // g)
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def synthesize(text: str, voice: str = "en") -> Speech:
    """Speak `text` with espeak-ng's `voice` (a language code, see `list_voices`).

    Returns mono float32 speech at SAMPLE_RATE with ARPAbet phone segments that tile
    [0, duration], taken from the synthesizer's own phoneme events; `original` holds the same
    speech at the synthesizer's own rate, for the output video.
    Raises InputError for empty text, an unknown voice, or text with nothing to say.
    """
    if not text or not text.strip():
        raise InputError("is empty", "give some words to speak, e.g. \"Hello there.\"", field="text")
    with _LOCK, _espeak() as engine:
        code = _select_voice(engine, voice)
        audio, events = _synthesize_native(engine, text)
        native_rate = engine.native_rate
    onsets = _phone_onsets(audio, events, native_rate)
    if audio.size == 0 or all(phone == SILENCE for _, phone in onsets):
        raise InputError(
            f"{text!r} has nothing espeak-ng can say", "give some words to speak", field="text"
        )
    audio, onsets = _pad_edges(audio, onsets, native_rate)
    samples = _to_model_rate(audio, native_rate)
    original = None
    if native_rate != SAMPLE_RATE:
        native = (audio.astype(np.float32) / _INT16_FULL_SCALE)[None]
        original = AudioTrack(native, native_rate, "mono")
    return Speech(
        samples=samples,
        sample_rate=SAMPLE_RATE,
        transcript=text,
        phones=contiguous_segments(onsets, len(samples) / SAMPLE_RATE),
        source=f"espeak-ng:{code}",
        original=original,
    )


__all__ = ["list_voices", "synthesize"]
