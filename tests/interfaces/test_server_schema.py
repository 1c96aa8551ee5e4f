"""Schemathesis against the server's own OpenAPI description: generated (valid and invalid) requests on every
operation never get a 5xx. Random bytes never make a valid portrait, so a second test puts a real portrait and
real speech into schema-generated submissions: fuzzed controls then reach the renderer, and every accepted job
must render. The server runs with tight limits (small uploads, short audio, a short queue, few kept jobs,
a short TTL) and every call has a timeout, so fuzzing can neither fill the disk nor hang the suite."""
from __future__ import annotations

import time

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from talkinghead.interfaces.server import Settings, create_app

LIMITS = Settings(workers=1, queue_size=2, max_jobs=4, max_upload_mb=1, max_audio_seconds=2, ttl_seconds=2)
APP = create_app(LIMITS)  # schemathesis reads the schema when this module is collected
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
MAX_SIZE = 128  # px: fuzzed sizes above this are brought down so that renders stay tiny


@pytest.fixture(scope="module")
def fuzzed_app():
    """The fuzzed app; its jobs, threads and temp folder are closed when the module is done."""
    yield APP
    APP.state.service.close()
    assert not APP.state.service.root.exists()


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_a_server_error(case, fuzzed_app):
    """Schemathesis' generated requests (valid and invalid) never get a 5xx."""
    case.call_and_validate(checks=[not_a_server_error], timeout=30)
    assert_bounded(fuzzed_app)


def assert_bounded(app) -> None:
    """The jobs and bytes the server keeps stay under the bounds its settings promise."""
    service = app.state.service
    kept = sum(p.stat().st_size for p in service.root.rglob("*") if p.is_file())
    assert kept <= (LIMITS.queue_size + LIMITS.max_jobs) * LIMITS.max_upload_bytes
    assert sum(service.counts().values()) <= LIMITS.max_jobs


@pytest.fixture(scope="module")
def real_media(portrait_png, make_wav, hello_speech) -> dict:
    """A real portrait and 0.3 s of real speech, as the `image` and `audio` parts."""
    return {"image": portrait_png, "audio": make_wav(hello_speech.samples[:4800])}


def _tiny(body: dict) -> dict:
    """Keep fuzzed geometry small (a valid but large size would only make the test slow)."""
    try:
        if float(body.get("size", 0)) > MAX_SIZE:
            body["size"] = MAX_SIZE
    except (TypeError, ValueError):
        pass
    body.pop("text", None)  # a random transcript only makes pocketsphinx slow
    return body


def test_fuzzed_controls_with_real_media_render_or_are_refused(fuzzed_app, real_media, wait_status):
    """Generated controls with a real portrait and speech: 202 (and it renders), 422 or 429."""
    poll = TestClient(fuzzed_app)
    outcomes: dict[int, int] = {}

    @given(case=schema["/v1/videos"]["POST"].as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def submit(case):
        """One generated submission with the real media in it."""
        if not isinstance(case.body, dict):
            return
        case.body = _tiny({**case.body, **real_media})
        response = case.call_and_validate(checks=[not_a_server_error], timeout=30)
        outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
        assert_bounded(fuzzed_app)
        assert response.status_code in (202, 422, 429), response.text
        if response.status_code == 202:  # accepted means it renders: no internal error behind the 202
            job_id = response.json()["id"]
            assert wait_status(poll, job_id, timeout=30)["status"] == "done", {**case.body, **real_media}.keys()
            assert poll.delete(f"/v1/videos/{job_id}").status_code == 204
        elif response.status_code == 429:
            time.sleep(0.2)

    submit()
    print(f"\nschema: real media + fuzzed controls -> status counts {outcomes}")
    assert outcomes.get(202) and outcomes.get(422)  # both accepted renders and refusals were exercised

