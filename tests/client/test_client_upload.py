"""`client.upload` and `python -m client upload` against the shared server: the encode job followed to the image."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from client.errors import ServerError
from client.uploads import upload
from tests.harness import REPO, WRITE_KEY, make_image


def test_upload_follows_the_job_to_the_stored_image(base_url: str, client: httpx.Client) -> None:
    seen: list[dict] = []
    info = upload(base_url, make_image(200, 100, seed=3), "a.png", WRITE_KEY, seen.append)
    assert (info["width"], info["height"]) == (200, 100)
    assert client.get(info["urls"]["info"]).json() == info
    assert seen[-1]["state"] == "done" and seen[-1]["image_id"] == info["id"]
    done = [job["progress"]["done"] for job in seen]
    assert done == sorted(done) and done[-1] == seen[-1]["progress"]["total"] == 1 * 6  # one tile


def test_a_failed_job_raises_the_uploads_error(base_url: str) -> None:
    damaged = bytearray(make_image(64, 48, noise=True))
    damaged[100:400] = bytes(300)
    with pytest.raises(ServerError) as failed:
        upload(base_url, bytes(damaged), "damaged.png", WRITE_KEY)
    assert (failed.value.status, failed.value.code) == (400, "invalid_image")
    with pytest.raises(ServerError) as refused:
        upload(base_url, make_image(8, 8), "a.png", "wrong key")
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


def test_the_upload_command(base_url: str, tmp_path) -> None:
    picture = tmp_path / "picture.png"
    picture.write_bytes(make_image(40, 30, seed=8))
    command = [sys.executable, "-m", "client", "upload", base_url, str(picture)]
    stored = subprocess.run([*command, "--key", WRITE_KEY], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert stored.returncode == 0, stored.stderr
    image_id = stored.stdout.split()[0]
    assert len(image_id) == 32 and f"{base_url}/image/{image_id}" in stored.stdout
    assert "done: 6/6 tile-layers" in stored.stderr
    refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "401 unauthorized" in refused.stderr
    missing = subprocess.run([*command[:-1], str(tmp_path / "absent.png")], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
