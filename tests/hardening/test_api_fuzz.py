"""Schemathesis against the OpenAPI schema of a running server (its own, so that generated deletes
cannot touch other tests' images): coverage, fuzzing and stateful phases, positive and negative
data, with the write key; not one 5xx. The request count is printed (pytest -rP shows it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.harness import WRITE_KEY, RunningServer, ServerFactory, make_image, upload

EXAMPLES_PER_OPERATION = 80
SEED = 20201026
SAMPLE = re.compile(r"^codec_server_requests_total\{(?P<labels>.*)\} (?P<value>\S+)$", re.MULTILINE)


def requests_by_status(server: RunningServer) -> dict[str, float]:
    """The server's own count of answered requests, by status."""
    counts: dict[str, float] = {}
    for sample in SAMPLE.finditer(httpx.get(f"{server.url}/metrics", timeout=30).text):
        status = re.search(r'status="(\d+)"', sample["labels"])
        assert status is not None
        counts[status[1]] = counts.get(status[1], 0.0) + float(sample["value"])
    return counts


def test_schemathesis_finds_no_server_error(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory.start({"CODEC_SERVER_WRITE_KEY": WRITE_KEY, "CODEC_SERVER_QUEUE_SIZE": "4"})
    with httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {WRITE_KEY}"}) as http:
        image_id = upload(http, make_image(24, 16)).json()["id"]
    config = tmp_path / "schemathesis.toml"  # reads of a real image, so that decoding paths are fuzzed too
    config.write_text(
        f'[[operations]]\ninclude-path-regex = "^/image/"\ninclude-method = ["GET", "HEAD"]\n'
        f'parameters = {{ "path.image_id" = "{image_id}" }}\n'
    )
    report = tmp_path / "report.json"
    before = requests_by_status(server)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")), "--config-file", str(config), "run",
            f"{server.url}/openapi.json", "--checks", "not_a_server_error",
            "--header", f"Authorization: Bearer {WRITE_KEY}", "--max-examples", str(EXAMPLES_PER_OPERATION),
            "--seed", str(SEED), "--workers", "1", "--warnings", "off", "--no-shrink",
            "--report", "json", "--report-json-path", str(report),
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,  # its crash cache lands there
    )  # fmt: skip
    after = requests_by_status(server)
    summary = json.loads(report.read_text())
    answered = {status: after[status] - before.get(status, 0.0) for status in after}
    sent = int(sum(answered.values()))
    print(f"schemathesis: {summary['test_cases']['generated']} test cases, {sent} requests answered: {answered}")
    assert result.returncode == 0, result.stdout[-3000:]
    assert summary["test_cases"]["with_failures"] == 0 and summary["errors"] == []
    assert summary["operations"]["tested"] == summary["operations"]["total"] >= 10
    assert sent >= summary["test_cases"]["generated"] > 500
    assert not [status for status in answered if status.startswith("5")], answered
    assert "Traceback" not in server.log()
    server.stop()
