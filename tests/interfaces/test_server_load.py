"""`talkinghead serve` under load: a real uvicorn server on loopback, 100 tiny submissions from 8 client
threads. Every submission is either refused with 429 or completes with a valid mp4; no accepted job is lost;
deleting them leaves the temp folder empty; memory returns near its baseline. Prints throughput and RSS."""
from __future__ import annotations

import gc
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from talkinghead.audio.features import n_frames
from talkinghead.interfaces.server import Settings, create_app
from talkinghead.io import probe

SUBMISSIONS = 100
CONCURRENCY = 8
SIZE = 64  # px: the smallest render, so that 100 jobs take seconds
SECONDS = 0.5  # of speech per job
RSS_MARGIN_MB = 150  # allowed growth over the warmed-up baseline (allocator slack, not a leak)


def rss_mb() -> float:
    """This process's resident memory (the server runs in it), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def free_port() -> int:
    """A TCP port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """A real uvicorn on 127.0.0.1 in a thread: one render thread and 32 queue places, so that some
    of the 100 submissions are accepted and, on a machine that renders slower than it validates, some refused."""
    app = create_app(Settings(workers=1, queue_size=32, max_jobs=2 * SUBMISSIONS))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=srv.run, name="uvicorn", daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < end, "uvicorn did not start"
        time.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield app, f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(30)
    assert not thread.is_alive()
    assert not app.state.service.root.exists()  # clean shutdown deleted the temp folder


def test_100_submissions_at_concurrency_8(server, portrait_jpg, make_wav, hello_speech, wait_status, tmp_path):
    """Every submission is refused (429) or renders a valid mp4; nothing is lost or left behind."""
    app, url = server
    audio = make_wav(hello_speech.samples[:int(SECONDS * 16000)])
    files = {"image": ("face.jpg", portrait_jpg), "audio": ("speech.wav", audio)}
    form = {"size": str(SIZE)}
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
        warm = client.post("/v1/videos", files=files, data=form)  # one-off caches (face model, codecs) load here
        assert warm.status_code == 202, warm.text
        wait_status(client, warm.json()["id"])
        assert client.delete(f"/v1/videos/{warm.json()['id']}").status_code == 204
        gc.collect()
        baseline = rss_mb()

        t0 = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            replies = list(pool.map(lambda _: client.post("/v1/videos", files=files, data=form), range(SUBMISSIONS)))
        submitted = time.perf_counter() - t0
        statuses = Counter(r.status_code for r in replies)
        assert set(statuses) <= {202, 429}, {r.status_code: r.text for r in replies}
        assert all(r.json()["error"]["code"] == "queue_full" for r in replies if r.status_code == 429)
        ids = [r.json()["id"] for r in replies if r.status_code == 202]
        assert ids and len(set(ids)) == len(ids)
        for job_id in ids:  # nothing lost: every accepted job finishes, and finishes well
            assert wait_status(client, job_id, timeout=120) == {"id": job_id, "status": "done", "progress": 1.0,
                                                                "error": None}
        elapsed = time.perf_counter() - t0
        peak = rss_mb()

        expected = n_frames(SECONDS, 25.0)
        for job_id in ids:
            video = client.get(f"/v1/videos/{job_id}/file")
            assert video.status_code == 200
            path = tmp_path / f"{job_id}.mp4"
            path.write_bytes(video.content)
            info = probe(path)
            assert (info["width"], info["n_frames"], info["audio_codec"]) == (SIZE, expected, "aac")
            path.unlink()
            assert client.delete(f"/v1/videos/{job_id}").status_code == 204
        assert list(app.state.service.root.iterdir()) == []  # no leaked uploads, partial or finished videos
        assert client.get("/v1/health").json()["jobs"] == 0

    gc.collect()
    after = rss_mb()
    print(f"\nload: {SUBMISSIONS} submissions at concurrency {CONCURRENCY}: {statuses[202]} accepted, "
          f"{statuses[429]} refused (429) in {submitted:.1f} s; all accepted done after {elapsed:.1f} s = "
          f"{len(ids) / elapsed:.1f} videos/s ({len(ids) * expected / elapsed:.0f} frames/s at {SIZE}px)")
    print(f"load: RSS baseline {baseline:.0f} MB, peak {peak:.0f} MB, after deleting {after:.0f} MB "
          f"({after - baseline:+.0f} MB)")
    assert after - baseline < RSS_MARGIN_MB
