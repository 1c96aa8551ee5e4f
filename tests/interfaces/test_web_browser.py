"""`talkinghead web` in a real browser: headless Debian Chromium uploads a portrait and a wav, moves a
control, presses Generate and plays the H.264 result. The screenshot lands in tmp_path and /tmp/web_screenshot.png."""
from __future__ import annotations

import shutil
import socket
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from talkinghead.assets import portrait_path
from talkinghead.audio.tts import synthesize
from talkinghead.interfaces import web

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; nothing can be downloaded here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RENDER_TIMEOUT_MS = 120_000  # a tiny render plus the eval card on 2 shared cores takes well under this
SCREENSHOT_COPY = Path("/tmp/web_screenshot.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app():
    """The app served on a free loopback port from this process (threads), closed afterwards."""
    port = _free_port()
    demo = web.launch(port=port, block=False)
    try:
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium with apt "
                    "(or run: sudo apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def hello_wav(tmp_path_factory) -> Path:
    """About a second of espeak-ng speech written as a 16-bit wav with the stdlib."""
    speech = synthesize("Hello there.", voice="en-us")
    path = tmp_path_factory.mktemp("browser_inputs") / "hello.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(speech.sample_rate)
        w.writeframes((np.clip(speech.samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def _set_number(page, elem_id: str, value: str) -> None:
    """Type into a slider's number box and leave it, as a user does."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Tab")


def test_upload_generate_and_play(app, browser, hello_wav, tmp_path):
    demo, app_url = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    outside = []  # the page must not reach beyond this machine (no fonts, analytics or CDNs)
    page.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
            else outside.append(r.url))
    page.goto(app_url)
    page.wait_for_selector("#generate", timeout=60_000)

    page.locator("#portrait input[type=file]").set_input_files(str(portrait_path("grace_hopper")))
    page.wait_for_selector("#portrait img", timeout=30_000)  # the upload is previewed
    page.locator("#speech input[type=file]").set_input_files(str(hello_wav))
    page.wait_for_selector("#speech audio, #speech [data-testid=waveform-Speech] button", timeout=30_000)
    _set_number(page, "head-motion", "0.5")
    _set_number(page, "size", "128")
    page.click("#generate")

    # The result: a <video> with a source the browser has decoded far enough to show a frame.
    page.wait_for_function("() => { const v = document.querySelector('#result video');"
                           " return v && v.src && v.readyState >= 2; }", timeout=RENDER_TIMEOUT_MS)
    played = page.evaluate("""async () => {
        const v = document.querySelector('#result video');
        v.muted = true;  // headless autoplay policy
        await v.play();
        await new Promise(r => setTimeout(r, 600));
        v.pause();
        return {time: v.currentTime, width: v.videoWidth, height: v.videoHeight, duration: v.duration,
                h264: v.canPlayType('video/mp4; codecs="avc1.64001F"')};
    }""")
    assert played["time"] > 0.1, played  # H.264 decodes and plays in Debian's chromium
    assert (played["width"], played["height"]) == (128, 128), played
    assert 0.5 < played["duration"] < 2.0, played
    page.wait_for_selector("#sheet img", timeout=30_000)

    # The card: the summary says the moved control was used; then the eval table (or why there is none).
    card = page.locator("#card")
    page.wait_for_function("() => { const t = document.querySelector('#card').innerText;"
                           " return t.includes('eval card unavailable') || !!document.querySelector('#card table'); }",
                           timeout=RENDER_TIMEOUT_MS)
    assert "engine warp; changed: head-motion 0.5, size 128\n" in card.inner_text()  # and nothing else
    assert not outside, outside

    page.locator("#result").scroll_into_view_if_needed()
    shot = tmp_path / "web.png"
    page.screenshot(path=str(shot), full_page=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    assert shot.stat().st_size > 10_000
    sessions = list(demo.sessions.root.iterdir())
    assert len(sessions) == 1 and list(sessions[0].glob("run-*/talkinghead.mp4"))
    page.close()  # closing the tab deletes the session's outputs
    deadline = time.monotonic() + 30
    while sessions[0].exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not sessions[0].exists()


def test_a_user_mistake_shows_one_message(app, browser):
    """Generate with no speech: an error toast with the fix, no traceback."""
    _, app_url = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.wait_for_selector("#generate", timeout=60_000)
    page.locator("#portrait input[type=file]").set_input_files(str(portrait_path("astronaut")))
    page.wait_for_selector("#portrait img", timeout=30_000)
    page.click("#generate")
    toast = page.get_by_text("no speech — how to fix: upload or record audio, or type text to speak")
    toast.wait_for(timeout=30_000)
    assert "Traceback" not in page.content()
    page.close()
