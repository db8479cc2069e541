"""A read that loses the race against a delete (found by bench/soak.py): the request found the index row,
then another client deleted the image before its bytes were read. The answer is the image's absence
(404 `image_not_found`, WebSocket 4404), not a storage failure (503, 1011). In-process app, caches off."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.websockets import WebSocketDisconnect

from server.storage import StoredImage
from tests.harness import WRITE_KEY, make_image
from tests.in_process import TestClient, running

from .answers import error_code


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Iterator[TestClient]:
    with running(tmp_path_factory.mktemp("races"), weights_path, decoder_cache=0, picture_cache_bytes=0) as client:
        yield client


@pytest.fixture()
def deleted_after_lookup(app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A stored image that another client deletes right after the next request has looked it up."""
    files = {"file": ("a.png", make_image(24, 16), "image/png")}
    document = app_client.post(
        "/encode?wait=true", files=files, headers={"Authorization": f"Bearer {WRITE_KEY}"}
    ).json()
    storage = app_client.app.state.service.storage
    look_up: Callable[[str], StoredImage | None] = storage.get

    def look_up_then_lose_the_race(image_id: str) -> StoredImage | None:
        image = look_up(image_id)
        if image is not None:
            storage.delete(image_id)
        return image

    monkeypatch.setattr(storage, "get", look_up_then_lose_the_race)
    return document


@pytest.mark.parametrize(
    ("path", "headers"),
    [("", {}), ("?layers=2&format=webp", {}), ("/bitstream", {}), ("/bitstream", {"Range": "bytes=0-9,50-60"})],
)
def test_http_reads_answer_404(app_client: TestClient, deleted_after_lookup: dict, path: str, headers: dict) -> None:
    response = app_client.get(f"/image/{deleted_after_lookup['id']}{path}", headers=headers)
    assert response.status_code == 404 and error_code(response) == "image_not_found"


def test_the_stream_closes_with_4404(app_client: TestClient, deleted_after_lookup: dict) -> None:
    with app_client.websocket_connect(f"/ws/image/{deleted_after_lookup['id']}?credit=255") as ws:
        assert json.loads(ws.receive_text())["type"] == "info"
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                ws.receive_bytes()
    assert closed.value.code == 4404
