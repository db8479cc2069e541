"""A data directory that fills up or turns read-only under a running server: clear 507/503 answers,
/ready turns 503, stored images stay readable and intact, nothing half-written becomes visible, and
the server recovers by itself once the space or write access is back. Real filesystems (tmpfs and a
read-only bind mount, see mounts.py), not injected exceptions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import WRITE_KEY, RunningServer, ServerFactory, make_image, upload

from .answers import error_code
from .mounts import fill, read_only, small_filesystem

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with small_filesystem(tmp_path_factory.mktemp("tmpfs") / "disk", "2m") as mountpoint:
        yield mountpoint


@pytest.fixture(scope="module")
def on_disk(server_factory: ServerFactory, disk: Path) -> Iterator[RunningServer]:
    """A server whose data directory is the whole small filesystem."""
    running = server_factory.start({"CODEC_SERVER_WRITE_KEY": WRITE_KEY}, data_dir=disk / "data")
    yield running
    running.stop()


@pytest.fixture()
def http(on_disk: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=on_disk.url, timeout=120, headers=AUTH) as session:
        yield session


def stored_state(http: httpx.Client) -> dict[str, str]:
    """Every listed image and the SHA-256 of its bitstream."""
    listed = http.get("/images", params={"limit": 500}).json()["images"]
    return {image["id"]: hashlib.sha256(http.get(image["urls"]["bitstream"]).content).hexdigest() for image in listed}


def leftovers(data_dir: Path) -> list[Path]:
    return [path for path in (data_dir / "blobs").rglob("*") if path.name.endswith(".partial")]


def assert_intact(http: httpx.Client, before: dict[str, str]) -> None:
    assert stored_state(http) == before
    for image_id in before:
        assert http.get(f"/image/{image_id}", params={"layers": 2}).status_code == 200


def test_a_read_only_data_directory_answers_503(http: httpx.Client, on_disk: RunningServer) -> None:
    kept, doomed = (upload(http, make_image(24, 16, seed=i)).json() for i in range(2))
    before = stored_state(http)
    with read_only(on_disk.data_dir):
        refused = upload(http, make_image(24, 16, seed=5))
        assert refused.status_code == 503 and error_code(refused, str(on_disk.data_dir)) == "storage_unavailable"
        ready = http.get("/ready")
        assert ready.status_code == 503 and error_code(ready, str(on_disk.data_dir)) == "not_ready"
        assert http.get("/health").status_code == 200
        assert_intact(http, before)
        # the index row goes first, so the image is gone; its blob stays for the next start's sweep
        assert http.delete(doomed["urls"]["image"]).status_code == 204
        assert http.get(doomed["urls"]["info"]).status_code == 404
        assert leftovers(on_disk.data_dir) == []
    assert http.get("/ready").status_code == 200  # write access is back: no restart needed
    again = upload(http, make_image(24, 16, seed=6))
    assert again.status_code == 201, again.text
    after = stored_state(http)
    assert set(after) == set(before) - {doomed["id"]} | {again.json()["id"]}
    assert after[kept["id"]] == before[kept["id"]]
    assert "Traceback" not in on_disk.log()


def test_a_full_data_directory_answers_507(http: httpx.Client, on_disk: RunningServer, disk: Path) -> None:
    upload(http, make_image(24, 16, seed=9))
    before = stored_state(http)
    filler = fill(disk)
    try:
        for size in ((24, 16), (64, 48)):
            refused = upload(http, make_image(*size, seed=10))
            assert refused.status_code == 507, refused.text
            assert error_code(refused, str(on_disk.data_dir)) == "insufficient_storage"
        ready = http.get("/ready")
        assert ready.status_code == 503 and error_code(ready, str(on_disk.data_dir)) == "not_ready"
        assert http.get("/health").status_code == 200
        assert_intact(http, before)
        assert leftovers(on_disk.data_dir) == []  # the failed writes cleaned up after themselves
    finally:
        filler.unlink()
    assert http.get("/ready").status_code == 200
    stored = upload(http, make_image(24, 16, seed=11))
    assert stored.status_code == 201, stored.text
    assert set(stored_state(http)) == {*before, stored.json()["id"]}
    assert "Traceback" not in on_disk.log()
