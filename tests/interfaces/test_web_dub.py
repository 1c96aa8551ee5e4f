"""The web app's "Dub a video" tab: its function dubs an uploaded video, and mistakes are one message."""
from __future__ import annotations

import gradio as gr
import pytest

from talkinghead.assets import speech_path
from talkinghead.dub.testsrc import make_source
from talkinghead.interfaces import web
from talkinghead.io import load_audio, probe
from talkinghead.types import Speech


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    speech = load_audio(speech_path("librivox_0880")[0])
    return make_source(tmp_path_factory.mktemp("webdub") / "talk.mp4", Speech(speech.samples[:16000]), 256, 192, 160)


def test_dub_tab_is_on_the_page():
    demo = web.build_app()
    ids = {b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert {"animate-tab", "dub-tab", "dub-video", "dub-speech", "dub-fit", "dub-face", "dub", "dub-result"} <= ids


def test_dub_video_returns_the_video_a_sheet_and_a_summary(talk, tmp_path):
    wav = str(speech_path("librivox_0880")[0])
    video, sheet, summary = web.dub_video(str(talk), wav, "", {"fit": "trim", "mouth-scale": 1.2}, tmp_path)
    info = probe(video)
    assert (info["width"], info["height"], info["n_frames"]) == (256, 192, 25)
    assert sheet.endswith(".png") and "fit trim" in summary


def test_dub_mistakes_are_one_message(talk, tmp_path):
    wav = str(speech_path("librivox_0880")[0])
    with pytest.raises(gr.Error, match="no speech"):
        web.dub_video(str(talk), None, "", {}, tmp_path)
    with pytest.raises(gr.Error, match="face-index needs a whole number"):
        web.dub_video(str(talk), wav, "", {"face-index": "1.5"}, tmp_path)
    with pytest.raises(gr.Error, match="no picture") as e:
        web.dub_video(wav, wav, "", {}, tmp_path)
    assert str(speech_path("librivox_0880")[0].parent) not in str(e.value)  # named by file name only
