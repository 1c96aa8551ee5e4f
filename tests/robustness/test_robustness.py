"""The robustness corpus (benchmarks/robustness.py): every hard portrait either renders and passes the
eval card's sync check, or is refused with a clear InputError; each case says which it must do.

Portraits: astronaut and Grace Hopper and variants (rotated +-20 deg, off-centre in a 4:1 frame,
grayscale, 80 px and 5000 px, JPEG quality 15, a gloved hand and a bare skin-coloured hand over the
cheek (also in deep shadow, and only the fingers of a hand whose palm is outside the picture), glasses, sunglasses, an open mouth, a wide-open one, ones with the tongue out and a turned head
made by our own warp, the astronaut's smile with her own and with drawn teeth), plus skimage's
cameraman (a real three-quarter face looking down). A wide-open mouth and a tongue out are refused. Speech: espeak-ng English with its phone timings, and French,
Italian, Russian and Mandarin with the mouth following the sound alone. Frames stay in memory and
are scored by the card's own aperture and sync code; small frames keep the whole corpus fast.
"""
from __future__ import annotations

import functools

import pytest

from talkinghead.errors import InputError
from benchmarks import robustness as C

SIZE = 192  # px: FaceMesh still reads the mouth reliably, rendering and scoring stay fast


CASES = {case.name: case for case in C.cases()}


@functools.lru_cache(maxsize=None)
def _speech(voice: str):
    return C.speech(voice)


def test_corpus_covers_the_hard_cases_and_languages():
    assert {"rotated_+20", "rotated_-20", "off_centre", "grayscale", "tiny_80px", "huge_5000px", "jpeg_q15",
            "gloved_hand", "bare_hand", "fingers_from_edge", "hand_in_shadow", "glasses", "sunglasses", "open_mouth", "wide_open_mouth", "tongue_out",
            "own_teeth", "drawn_teeth", "cameraman"} <= set(CASES)
    assert CASES["tongue_out"].expect == CASES["wide_open_mouth"].expect == "refuse"
    voices = {case.voice for case in CASES.values()}
    assert len(voices) >= 4 and "cmn" in voices  # a tonal language among them
    assert {case.expect for case in CASES.values()} == {"render", "refuse"}


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.expect == "render"])
def test_case_renders_in_sync(name):
    case = CASES[name]
    sp = _speech(case.voice)
    frames = C.render_frames(case.build(), sp, SIZE, case.teeth)
    assert len(frames) == C.n_frames(sp.duration, 25.0)
    assert frames[0].shape[:2] == (SIZE, SIZE)
    sync = C.sync_check(frames, sp)
    assert sync["passed"], f"{name} ({case.voice}): {sync}"
    assert abs(sync["offset_frames"]) <= 1, f"{name} ({case.voice}): {sync}"


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.expect == "refuse"])
def test_case_is_refused_with_a_clear_message(name):
    case = CASES[name]
    with pytest.raises(InputError) as e:
        C.render_frames(case.build(), _speech(case.voice), SIZE, case.teeth)
    # one line saying what is wrong, and how to fix it
    assert e.value.message and "\n" not in e.value.message
    assert e.value.hint
    if name.startswith("tongue_out"):  # about the image, naming what was found
        assert e.value.field == "image" and "tongue" in e.value.message


def test_acoustic_mouth_follows_mandarin_as_well_as_english():
    """Without a transcript, syllables of a tonal language drive the mouth as well as English ones do."""
    image = C.bundled("astronaut")
    confidence = {}
    for voice in ("en-us", "cmn"):
        sp = C.speech(voice, phones=False)
        assert sp.phones is None
        sync = C.sync_check(C.render_frames(image, sp, SIZE), sp)
        assert sync["passed"] and abs(sync["offset_frames"]) <= 1, f"{voice}: {sync}"
        confidence[voice] = sync["confidence"]
    assert confidence["cmn"] >= 0.8 * confidence["en-us"], confidence
