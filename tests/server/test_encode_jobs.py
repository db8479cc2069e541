"""Encodes as jobs: 202 and a job document, progress by polling and by server-sent events, the upload's
errors on a failed job, `?wait=true` as before, and no job left running after a kill -9."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from protocol import JOB_STATES
from server.job_store import EncodeJob, JobError, SqliteJobStore
from tests.harness import WRITE_KEY, ServerFactory, make_image
from tests.in_process import running

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}


def post(client, data: bytes, query: str = "") -> httpx.Response:
    return client.post(f"/encode{query}", files={"file": ("a.png", data, "image/png")}, headers=AUTH)


def poll(client, path: str, headers: dict | None = None, timeout: float = 120.0) -> list[dict]:
    """Every distinct job document seen until the job ends."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = client.get(path, headers=headers or AUTH).json()
        if not seen or (document["state"], document["progress"]) != (seen[-1]["state"], seen[-1]["progress"]):
            seen.append(document)
        if document["state"] in ("done", "failed"):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"the job did not end: {seen[-1]}")


def damaged_png() -> bytes:
    """A PNG whose header inspects fine and whose pixel data does not decode: the encode itself fails."""
    data = bytearray(make_image(64, 48, noise=True))
    data[100:400] = bytes(300)
    return bytes(data)


def test_an_upload_answers_202_and_its_job_ends_with_the_image(tmp_path: Path, weights_path: Path) -> None:
    with running(tmp_path, weights_path) as client:
        accepted = post(client, make_image(400, 200))  # 2 x 1 tiles of 256
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert accepted.headers["location"] == job["urls"]["job"] == f"/jobs/{job['id']}"
        assert job["state"] in ("queued", "running") and job["image"] is None and job["error"] is None
        assert job["progress"]["total"] == 2 * 6
        seen = poll(client, job["urls"]["job"])
        states = [document["state"] for document in seen]
        assert states == sorted(states, key=JOB_STATES.index), states  # never goes back
        done = [document["progress"]["done"] for document in seen]
        assert done == sorted(done) and done[-1] == 2 * 6
        final = seen[-1]
        assert final["state"] == "done" and final["error"] is None
        info = client.get(f"/image/{final['image_id']}/info").json()
        assert final["image"] == info and info["width"] == 400 and len(info["layers"]) == 6
        assert client.get(final["image"]["urls"]["image"], params={"layers": 6}).status_code == 200


def test_the_job_document_is_pushed_as_server_sent_events(tmp_path: Path, weights_path: Path) -> None:
    with running(tmp_path, weights_path) as client:
        job = post(client, make_image(400, 200)).json()
        documents = []
        with client.stream("GET", job["urls"]["events"], headers=AUTH) as events:
            assert events.status_code == 200
            assert events.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in events.iter_lines():
                if line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: "):
                    assert kind == "job"
                    documents.append(json.loads(line[len("data: ") :]))
        assert documents[-1]["state"] == "done" and documents[-1]["image"]["id"] == documents[-1]["image_id"]
        progress = [d["progress"]["done"] for d in documents]
        assert progress == sorted(progress) and len(documents) >= 3  # progress arrives while it runs
        # a finished job's stream is its final document, then the end
        again = client.get(job["urls"]["events"], headers=AUTH)
        assert again.text.count("event: job") == 1 and '"state":"done"' in again.text


def test_a_failed_job_reports_what_the_upload_would_have_answered(tmp_path: Path, weights_path: Path) -> None:
    with running(tmp_path, weights_path) as client:
        job = post(client, damaged_png()).json()
        final = poll(client, job["urls"]["job"])[-1]
        assert final["state"] == "failed" and final["image_id"] is None and final["image"] is None
        assert final["error"]["status"] == 400 and final["error"]["code"] == "invalid_image"
        waited = post(client, damaged_png(), "?wait=true")
        assert waited.status_code == 400 and waited.json()["error"]["code"] == "invalid_image"
        assert client.get("/images").json()["count"] == 0


def test_wait_true_answers_201_with_the_info_document(tmp_path: Path, weights_path: Path) -> None:
    with running(tmp_path, weights_path) as client:
        stored = post(client, make_image(40, 30), "?wait=true")
        assert stored.status_code == 201
        assert stored.headers["location"] == f"/image/{stored.json()['id']}/info"


def test_unknown_jobs_and_job_access(tmp_path: Path, weights_path: Path) -> None:
    with running(tmp_path, weights_path, read_key="reader") as client:
        job = post(client, make_image(40, 30)).json()
        for path in (job["urls"]["job"], job["urls"]["events"]):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        poll(client, job["urls"]["job"], headers=AUTH)
        assert client.get(job["urls"]["job"], headers={"Authorization": "Bearer reader"}).status_code == 200
        for unknown in ("0" * 32, "not-a-job", "A" * 32):
            for path in (f"/jobs/{unknown}", f"/jobs/{unknown}/events"):
                missing = client.get(path, headers=AUTH)
                assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"


def test_jobs_cut_off_by_a_stop_read_as_failed_after_a_restart(tmp_path: Path) -> None:
    """The job store's recovery, on rows a killed process left behind."""
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    for state in JOB_STATES:
        store.save(EncodeJob(state.ljust(32, "0")[:32], state, 1, 6, 1.0, 2.0))
    assert store.fail_unfinished(JobError(503, "interrupted", "cut off"), 3.0) == 3
    states = {state: store.get(state.ljust(32, "0")[:32]) for state in JOB_STATES}
    assert {s: job.state for s, job in states.items()} == {
        "queued": "failed", "running": "failed", "verifying": "failed", "done": "done", "failed": "failed"
    }  # fmt: skip
    assert states["running"].error == JobError(503, "interrupted", "cut off") and states["failed"].error is None
    assert store.prune(before=2.5) == 2  # finished rows older than the retention go: those that ended at 2.0
    assert store.prune(before=3.5) == 3 and store.get("running".ljust(32, "0")) is None
    store.close()


@pytest.mark.timeout(300)
def test_a_kill_9_mid_encode_leaves_a_failed_job_and_no_image(server_factory: ServerFactory) -> None:
    server = server_factory.start({"CODEC_SERVER_WRITE_KEY": WRITE_KEY})
    big = make_image(1600, 1200, noise=True)  # 35 tiles x 6 layers: seconds of work
    job = httpx.post(f"{server.url}/encode", files={"file": ("a.png", big, "image/png")}, headers=AUTH, timeout=60)
    assert job.status_code == 202
    path = f"{server.url}{job.json()['urls']['job']}"
    deadline = time.monotonic() + 120
    while httpx.get(path, headers=AUTH, timeout=10).json()["progress"]["done"] == 0:
        assert time.monotonic() < deadline, "the encode never started"
        time.sleep(0.05)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)
    again = server_factory.start({"CODEC_SERVER_WRITE_KEY": WRITE_KEY}, data_dir=server.data_dir)
    try:
        after = httpx.get(f"{again.url}{job.json()['urls']['job']}", headers=AUTH, timeout=10).json()
        assert after["state"] == "failed" and after["error"]["code"] == "interrupted", after
        assert httpx.get(f"{again.url}/images", timeout=10).json()["count"] == 0
    finally:
        again.stop()
