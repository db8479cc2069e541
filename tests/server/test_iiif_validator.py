"""The official IIIF Image API validator (`iiif-validate.py` from the `iiif-validator` package) against a live
server, at the compliance level info.json claims, on the validator's own test picture."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from codec.api import DEFAULT_WEIGHTS
from server import iiif
from tests.harness import REPO, WRITE_KEY, ServerFactory

TEST_IMAGE = REPO / "tests" / "data" / "iiif-validator-test-image.png"
VALIDATOR = Path(sys.executable).parent / "iiif-validate.py"


@pytest.mark.timeout(900)
def test_the_iiif_validator_finds_no_failure_at_the_claimed_level(tmp_path: Path) -> None:
    if not VALIDATOR.exists():
        pytest.fail(f"{VALIDATOR} is missing: install the test extras (pip install -e '.[test]')")
    # the shipped weights: the validator reads colours back within ±5, which an untrained model cannot give
    factory = ServerFactory(tmp_path, DEFAULT_WEIGHTS)
    server = factory.start({"CODEC_SERVER_WRITE_KEY": WRITE_KEY, "CODEC_SERVER_TORCH_THREADS": "2"})
    try:
        stored = httpx.post(
            f"{server.url}/encode?wait=true",
            files={"file": ("validator.png", TEST_IMAGE.read_bytes(), "image/png")},
            headers={"Authorization": f"Bearer {WRITE_KEY}"},
            timeout=600,
        )
        assert stored.status_code == 201, stored.text
        image_id = stored.json()["id"]
        info = httpx.get(f"{server.url}/iiif/3/{image_id}/info.json", timeout=60).json()
        level = info["profile"].removeprefix("level")
        assert info["profile"] == iiif.PROFILE and int(level) >= 1
        result = subprocess.run(
            [sys.executable, str(VALIDATOR), "-s", f"127.0.0.1:{server.port}", "-p", "iiif/3", "-i", image_id,
             "--version=3.0", "--level", level],
            capture_output=True, text=True, timeout=800,
        )  # fmt: skip
        report = result.stdout + result.stderr  # it writes its summary to stderr
        summary = re.search(r"Done \((\d+) tests, (\d+) failures\)", report)
        assert summary is not None, report[-6000:]
        tests, failures = map(int, summary.groups())
        assert failures == 0 and tests >= 30 and result.returncode == 0, report[-6000:]
    finally:
        factory.stop_all()
