"""SIGKILL in the middle of an encode, and at each step of storing its bitstream (the blob write, the
rename, the index insert), then a restart on the same data directory: every earlier image is listed
and byte-identical, and nothing of the interrupted upload (nor any other crash leftover) is listed or
served."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import WRITE_KEY, RunningServer, ServerFactory, make_image, upload

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
ENV = {"CODEC_SERVER_WRITE_KEY": WRITE_KEY, "CODEC_SERVER_WORKERS": "1"}


def snapshot(http: httpx.Client) -> dict[str, tuple[dict, str]]:
    """id -> (info document, SHA-256 of the bitstream) for every listed image."""
    listed = http.get("/images", params={"limit": 500}).json()["images"]
    return {
        image["id"]: (
            http.get(image["urls"]["info"]).json(),
            hashlib.sha256(http.get(image["urls"]["bitstream"]).content).hexdigest(),
        )
        for image in listed
    }


def wait_for_an_encode(server: RunningServer, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while server.metric("codec_server_model_jobs_running") < 1:
        assert time.monotonic() < deadline, "the encode never started"
        time.sleep(0.05)


def plant_crash_leftovers(data_dir: Path, bitstream: bytes) -> str:
    """What a crash between the storage steps leaves: a temp file, and a whole blob with no index row."""
    orphan = secrets.token_hex(16)
    folder = data_dir / "blobs" / orphan[:2]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{orphan}.sric").write_bytes(bitstream)
    (folder / f"{secrets.token_hex(16)}.sric.1.2.partial").write_bytes(bitstream[: len(bitstream) // 2])
    return orphan


def test_kill_9_during_an_encode_loses_nothing(server_factory: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = server_factory.start(ENV, data_dir=data_dir)
    with httpx.Client(base_url=first.url, timeout=120, headers=AUTH) as http:
        for seed in range(3):
            assert upload(http, make_image(40 + 8 * seed, 32, seed=seed)).status_code == 201
        before = snapshot(http)
        some_bitstream = http.get(next(iter(before.values()))[0]["urls"]["bitstream"]).content

    big = make_image(1024, 768, noise=True)  # seconds of encoding on this machine
    outcome: list[object] = []

    def interrupted_upload() -> None:
        with httpx.Client(base_url=first.url, timeout=300, headers=AUTH) as http:
            try:
                outcome.append(upload(http, big).status_code)
            except httpx.TransportError as error:
                outcome.append(error)

    uploader = threading.Thread(target=interrupted_upload)
    uploader.start()
    wait_for_an_encode(first)
    os.kill(first.pid, signal.SIGKILL)
    uploader.join(60)
    assert first.process.wait(30) == -signal.SIGKILL
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError), outcome

    orphan = plant_crash_leftovers(data_dir, some_bitstream)
    second = server_factory.start(ENV, data_dir=data_dir)
    with httpx.Client(base_url=second.url, timeout=120, headers=AUTH) as http:
        after = snapshot(http)
        assert after == before  # the same ids, info documents and bytes
        assert http.get("/images").json()["count"] == len(before)
        for suffix in ("/info", "/bitstream", ""):
            assert http.get(f"/image/{orphan}{suffix}").status_code == 404
        for document, _ in after.values():
            assert http.get(document["urls"]["image"]).status_code == 200
        assert upload(http, make_image(24, 16, seed=9)).status_code == 201  # and it takes new work
    assert "Traceback" not in second.log()
    second.stop()


CRASH_POINTS = Path(__file__).resolve().parent / "crash_points"


@pytest.mark.parametrize("step", ["blob-write", "rename", "index-insert"])
def test_kill_9_at_each_storage_step_loses_nothing(server_factory: ServerFactory, tmp_path: Path, step: str) -> None:
    data_dir = tmp_path / "data"
    first = server_factory.start(ENV, data_dir=data_dir)
    with httpx.Client(base_url=first.url, timeout=120, headers=AUTH) as http:
        for seed in range(2):
            assert upload(http, make_image(40 + 8 * seed, 32, seed=seed)).status_code == 201
        before = snapshot(http)
    first.stop()
    blobs_before = set((data_dir / "blobs").rglob("*"))

    path = os.pathsep.join(filter(None, [str(CRASH_POINTS), os.environ.get("PYTHONPATH", "")]))
    crashing = server_factory.start({**ENV, "PYTHONPATH": path, "CODEC_TEST_CRASH_AT": step}, data_dir=data_dir)
    with httpx.Client(base_url=crashing.url, timeout=120, headers=AUTH) as http:
        with pytest.raises(httpx.TransportError):
            upload(http, make_image(48, 40, seed=7))
    assert crashing.process.wait(30) == -signal.SIGKILL
    left = {path.name for path in set((data_dir / "blobs").rglob("*")) - blobs_before if path.is_file()}
    expected_suffix = ".partial" if step in ("blob-write", "rename") else ".sric"
    assert len(left) == 1 and next(iter(left)).endswith(expected_suffix), left  # the crash came at that step

    second = server_factory.start(ENV, data_dir=data_dir)
    with httpx.Client(base_url=second.url, timeout=120, headers=AUTH) as http:
        assert snapshot(http) == before
        orphan = next(iter(left)).split(".")[0]
        assert http.get(f"/image/{orphan}/info").status_code == 404
        assert upload(http, make_image(24, 16, seed=9)).status_code == 201
    assert "Traceback" not in second.log()
    second.stop()
