"""A byte flipped on disk in any layer, or in the header, of a stored bitstream: the layers before the
damage still give exactly their pictures, every picture that needs the damaged layer answers 500
`corrupt_bitstream` (never a garbage picture), and the WebSocket stops with 1011 at the damage.
In-process app (the same lifespan as uvicorn) with the caches off, so every request reads the disk."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.harness import WRITE_KEY, make_image
from tests.in_process import TestClient, running

from .answers import error_code

CORRUPT, SERVER_ERROR = "corrupt_bitstream", 1011


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Iterator[TestClient]:
    with running(tmp_path_factory.mktemp("corruption"), weights_path, decoder_cache=0, picture_cache_bytes=0) as client:
        yield client


@pytest.fixture(scope="module")
def stored(app_client: TestClient) -> dict:
    files = {"file": ("a.png", make_image(40, 32, noise=True, seed=4), "image/png")}
    response = app_client.post("/encode?wait=true", files=files, headers={"Authorization": f"Bearer {WRITE_KEY}"})
    assert response.status_code == 201, response.text
    return response.json()


def streamed(client: TestClient, image_id: str) -> tuple[list[bytes], int | None, str]:
    """The binary messages of a full-credit stream, and its close code and reason."""
    messages: list[bytes] = []
    with client.websocket_connect(f"/ws/image/{image_id}?credit=255") as ws:
        assert json.loads(ws.receive_text())["type"] == "info"
        try:
            while True:
                message = ws.receive()
                if message["type"] == "websocket.close":
                    return messages, message.get("code"), message.get("reason", "")
                if message.get("bytes") is not None:
                    messages.append(message["bytes"])
        except WebSocketDisconnect as closed:
            return messages, closed.code, closed.reason


def damaged_at(data: bytes, position: int) -> bytes:
    corrupted = bytearray(data)
    corrupted[position] ^= 1 << random.Random(position).randrange(8)
    return bytes(corrupted)


def test_damage_in_any_layer_is_caught_exactly_there(app_client: TestClient, stored: dict) -> None:
    blob = app_client.app.state.service.storage.blobs.path(stored["id"])
    original = blob.read_bytes()
    url = stored["urls"]["image"]
    count = len(stored["layers"])
    reference = {n: app_client.get(url, params={"layers": n}).content for n in range(1, count + 1)}
    chooser = random.Random(7)
    try:
        for layer in stored["layers"]:
            position = chooser.randrange(layer["offset"], layer["end"])
            blob.write_bytes(damaged_at(original, position))
            for n in range(1, count + 1):
                response = app_client.get(url, params={"layers": n})
                if n < layer["index"]:
                    assert response.status_code == 200 and response.content == reference[n]
                else:
                    assert response.status_code == 500 and error_code(response) == CORRUPT, (layer["index"], n)
            messages, code, reason = streamed(app_client, stored["id"])
            assert (code, reason) == (SERVER_ERROR, CORRUPT)
            assert len(messages) == layer["index"]  # the header and the intact layers before the damage
            assert app_client.get(stored["urls"]["bitstream"]).content == damaged_at(original, position)
    finally:
        blob.write_bytes(original)
    assert app_client.get(url).content == reference[count]


def test_damage_in_the_header_is_caught_before_any_layer(app_client: TestClient, stored: dict) -> None:
    blob = app_client.app.state.service.storage.blobs.path(stored["id"])
    original = blob.read_bytes()
    try:
        for position in (5, 30, stored["header_bytes"] - 1):  # version/flags, model id, header CRC
            blob.write_bytes(damaged_at(original, position))
            for n in (1, len(stored["layers"])):
                response = app_client.get(stored["urls"]["image"], params={"layers": n})
                assert response.status_code == 500 and error_code(response) == CORRUPT, position
            messages, code, reason = streamed(app_client, stored["id"])
            assert (messages, code, reason) == ([], SERVER_ERROR, CORRUPT)
    finally:
        blob.write_bytes(original)
