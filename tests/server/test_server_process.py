"""Whole-process behaviour: restart keeps every image, a saturated pool answers 429, start-up errors."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.harness import REPO, WRITE_KEY, ServerFactory, make_image, upload

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}


def test_restart_keeps_every_image(server_factory: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = server_factory.start({"CODEC_SERVER_WRITE_KEY": WRITE_KEY}, data_dir=data_dir)
    with httpx.Client(base_url=first.url, timeout=120, headers=AUTH) as http:
        documents = [upload(http, make_image(24 + 8 * i, 16, seed=i)).json() for i in range(3)]
        http.delete(f"/image/{documents[2]['id']}")
        kept = documents[:2]
        before = {d["id"]: http.get(d["urls"]["bitstream"]).content for d in kept}
        pictures = {d["id"]: http.get(d["urls"]["image"], params={"layers": 2}).content for d in kept}
    assert first.stop() in (0, -15)  # uvicorn shuts down gracefully, then re-raises SIGTERM
    assert "Traceback" not in first.log()

    second = server_factory.start({"CODEC_SERVER_WRITE_KEY": WRITE_KEY}, data_dir=data_dir)
    with httpx.Client(base_url=second.url, timeout=120) as http:
        listed = {image["id"] for image in http.get("/images").json()["images"]}
        assert listed == set(before)
        for document in kept:
            assert http.get(document["urls"]["info"]).json() == document
            assert http.get(document["urls"]["bitstream"]).content == before[document["id"]]
        assert http.get(documents[2]["urls"]["info"]).status_code == 404

        # a fresh process has no decoder: layer n+1 after layer n costs one more layer, a layer shown before
        # none (one only passed through on the way is decoded again: codec.api.Decoder)
        image = kept[0]
        url = image["urls"]["image"]
        decoded = second.metric("codec_server_layers_decoded_total")
        assert http.get(url, params={"layers": 2}).content == pictures[image["id"]]
        assert second.metric("codec_server_layers_decoded_total") == decoded + 2
        http.get(url, params={"layers": 3})
        assert second.metric("codec_server_layers_decoded_total") == decoded + 3
        http.get(url, params={"layers": 5})
        assert second.metric("codec_server_layers_decoded_total") == decoded + 5
        http.get(url, params={"layers": 3, "format": "webp"})
        assert second.metric("codec_server_layers_decoded_total") == decoded + 5
    second.stop()


def test_saturated_pool_answers_429(server, writer: httpx.Client) -> None:
    """The shared server runs 1 worker with 1 queue slot; 8 simultaneous uploads cannot all fit."""
    data = make_image(256, 192, noise=True)
    with ThreadPoolExecutor(8) as threads:
        responses = list(threads.map(lambda _: upload(writer, data), range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 429} and statuses.count(201) >= 1 and statuses.count(429) >= 1, statuses
    for response in responses:
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "busy"
            assert int(response.headers["retry-after"]) >= 1
        else:
            writer.delete(f"/image/{response.json()['id']}")
    assert server.metric("codec_server_model_rejected_total") >= statuses.count(429)
    assert writer.get("/health").status_code == 200  # the event loop stayed responsive


def test_missing_weights_fail_fast(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "--weights", str(tmp_path / "none.pt"), "--data-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no weights at" in result.stderr and "Traceback" not in result.stderr


def test_the_server_encodes_at_its_effort_level(server_factory: ServerFactory, codec_model) -> None:
    """CODEC_SERVER_EFFORT=2: the stored bitstream is the searched one, not effort 1's, and reads as any other."""
    from codec.api import Decoder, encode
    from codec.imageio import read_image

    picture = make_image(96, 64, noise=True)  # the untrained test weights' search finds nothing on a gradient
    server = server_factory.start({"CODEC_SERVER_WRITE_KEY": WRITE_KEY, "CODEC_SERVER_EFFORT": "2"})
    with httpx.Client(base_url=server.url, timeout=300, headers=AUTH) as http:
        document = upload(http, picture).json()
        stored = http.get(document["urls"]["bitstream"]).content
        shown = http.get(document["urls"]["image"], params={"layers": 6})
    assert shown.status_code == 200
    assert stored != encode(read_image(picture), codec_model, effort=1)
    assert Decoder(stored, codec_model).decode(6).shape == (64, 96, 3)


def test_invalid_setting_fails_fast(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "--workers", "0"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "invalid settings" in result.stderr and "workers" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=REPO,
        env={**os.environ, "CODEC_SERVER_EFFORT": "7"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "effort must be within 1..2" in result.stderr


def test_unusable_data_dir_fails_fast(tmp_path: Path, weights_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "server", "--weights", str(weights_path), "--data-dir", str(not_a_dir / "data")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "cannot use the data directory" in result.stderr and "Traceback" not in result.stderr
