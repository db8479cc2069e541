"""Encode jobs through the queue on PostgreSQL (server/job_queue.py), against a real PostgreSQL started
by the tests (the fixture of test_postgres_index.py): claims are exclusive, a lease that runs out
hands the job to another worker, a job cut off MAX_ATTEMPTS times fails visibly; end to end, an API
server that does not encode and `python -m server worker` processes, one of them killed mid-encode."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from bench import processes
from bench.engines import Postgres
from server.encoding import UploadFacts
from server.job_queue import MAX_ATTEMPTS, PostgresJobQueue
from server.job_store import EncodeJob
from server.postgres import PostgresIndex
from tests.harness import WRITE_KEY, ServerFactory, make_image

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
FACTS = UploadFacts("PNG", 64, 48)


@pytest.fixture
def queue(postgres: Postgres) -> Iterator[PostgresJobQueue]:
    index = PostgresIndex(postgres.database())  # migrated: the images and the encode_jobs tables
    yield PostgresJobQueue(index.pool, lease_seconds=30.0)
    index.close()


def queued(n: int) -> EncodeJob:
    return EncodeJob(f"{n:032x}", "queued", 0, 36, 1000.0 + n, 1000.0 + n)


def expire_leases(queue: PostgresJobQueue) -> None:
    with queue.pool.connection() as connection:
        connection.execute("UPDATE encode_jobs SET lease_until = lease_until - 3600 WHERE lease_until IS NOT NULL")


def test_claims_take_the_oldest_job_once(queue: PostgresJobQueue) -> None:
    for n in (2, 1, 3):
        assert queue.enqueue(queued(n), f"upload {n}".encode(), FACTS, limit=10)
    claimed = queue.claim("a")
    assert claimed is not None and claimed.job.id == queued(1).id and claimed.upload == b"upload 1"
    assert claimed.facts == FACTS and claimed.attempt == 1 and claimed.job.state == "running"
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(queue.claim("b").job.id)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [queued(2).id, queued(3).id]  # SKIP LOCKED: each job to one claimer
    assert queue.claim("c") is None


def test_progress_and_the_end_are_recorded_by_the_lease_holder(queue: PostgresJobQueue) -> None:
    queue.enqueue(queued(1), b"x", FACTS, limit=10)
    claimed = queue.claim("a")
    assert claimed is not None and queue.renew(claimed, "a", "running", 12, 36)
    assert queue.get(claimed.job.id).done == 12  # what a poller on any server reads
    done = claimed.job.moved("done", time.time(), done=36, image_id="f" * 32)
    assert not queue.finish(claimed, "someone else", done)
    assert queue.finish(claimed, "a", done)
    assert queue.get(claimed.job.id).state == "done" and queue.get(claimed.job.id).image_id == "f" * 32
    assert not queue.renew(claimed, "a", "running", 36, 36)  # finished: no lease left to renew
    assert queue.claim("b") is None


def test_an_expired_lease_passes_the_job_on_then_it_fails_visibly(queue: PostgresJobQueue) -> None:
    queue.enqueue(queued(1), b"x", FACTS, limit=10)
    first = queue.claim("a")
    assert queue.claim("b") is None  # the lease holds
    expire_leases(queue)
    second = queue.claim("b")
    assert second is not None and second.job.id == first.job.id and second.attempt == 2
    assert not queue.renew(first, "a", "running", 1, 36)  # the first worker learns it lost the job
    assert not queue.finish(first, "a", first.job.moved("done", time.time(), image_id="e" * 32))
    expire_leases(queue)
    assert queue.claim("c") is None  # cut off MAX_ATTEMPTS times: failed instead of run again
    failed = queue.get(first.job.id)
    assert MAX_ATTEMPTS == 2 and failed.state == "failed" and failed.error.code == "interrupted"


def test_a_full_queue_refuses(queue: PostgresJobQueue) -> None:
    assert queue.enqueue(queued(1), b"x", FACTS, limit=1)
    assert not queue.enqueue(queued(2), b"x", FACTS, limit=1)
    assert queue.get(queued(2).id) is None


def job_row(url: str, job_id: str) -> tuple:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT state, worker, attempts FROM encode_jobs WHERE id = %s", (job_id,)).fetchone()


def test_a_worker_killed_mid_encode_hands_the_job_to_another(
    postgres: Postgres, server_factory: ServerFactory, weights_path: Path, tmp_path: Path
) -> None:
    url = postgres.database()
    data_dir = tmp_path / "data"  # one host: the API server and the workers share the blob folder
    env = {
        "CODEC_SERVER_INDEX_URL": url,
        "CODEC_SERVER_WRITE_KEY": WRITE_KEY,
        "CODEC_SERVER_JOB_LEASE_SECONDS": "3",
    }
    api = server_factory.start({**env, "CODEC_SERVER_CLAIM_JOBS": "false"}, data_dir=data_dir)
    first = processes.start_worker(data_dir, env, tmp_path / "worker1.log", weights_path)
    second = None
    try:
        with httpx.Client(base_url=api.url, timeout=60, headers=AUTH) as http:
            big = make_image(1024, 768, noise=True)  # 24 tiles x 6 layers: seconds of work
            accepted = http.post("/encode", files={"file": ("a.png", big, "image/png")})
            assert accepted.status_code == 202, accepted.text
            job = accepted.json()
            deadline = time.monotonic() + 120
            while (
                job_row(url, job["id"])[0] != "running" or http.get(job["urls"]["job"]).json()["progress"]["done"] < 1
            ):
                assert time.monotonic() < deadline, "the worker never took the job"
                time.sleep(0.1)
            assert job_row(url, job["id"])[1].endswith(f":{first.pid}")
            first.send_signal(signal.SIGKILL)
            assert first.wait(30) == -signal.SIGKILL
            second = processes.start_worker(data_dir, env, tmp_path / "worker2.log", weights_path)
            deadline = time.monotonic() + 300
            while (document := http.get(job["urls"]["job"]).json())["state"] not in ("done", "failed"):
                assert time.monotonic() < deadline, document
                time.sleep(0.2)
            assert document["state"] == "done", document
            state, worker, attempts = job_row(url, job["id"])
            assert worker.endswith(f":{second.pid}") and attempts == 2
            listed = http.get("/images").json()
            assert listed["count"] == 1 and listed["images"][0]["id"] == document["image_id"]
            assert http.get(f"/image/{document['image_id']}?layers=1").status_code == 200
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                worker.wait(60)


def test_a_worker_needs_a_postgres_index(tmp_path: Path, weights_path: Path) -> None:
    command = [sys.executable, "-m", "server", "worker", "--data-dir", str(tmp_path), "--weights", str(weights_path)]
    result = subprocess.run(
        command, cwd=processes.REPO, env=processes.server_environment(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "CODEC_SERVER_INDEX_URL" in result.stderr
