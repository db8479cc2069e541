"""Fault injection on an in-process app (Starlette's TestClient runs the same lifespan as uvicorn):
damaged blobs, full or unwritable storage, other weights, bugs, read keys, the viewer."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from starlette.websockets import WebSocketDisconnect

from server.storage import StorageError, StorageFullError
from tests.harness import WRITE_KEY, make_image
from tests.in_process import TestClient, running

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}


def store(client: TestClient, width: int = 32, height: int = 24) -> dict:
    response = client.post(
        "/encode?wait=true", files={"file": ("a.png", make_image(width, height), "image/png")}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    return response.json()


def blob_path(client: TestClient, image_id: str) -> Path:
    return client.app.state.service.storage.blobs.path(image_id)


def error_of(response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert "Traceback" not in response.text
    return body["error"]["code"]


def test_a_damaged_layer_is_reported_not_decoded(tmp_path: Path, weights_path: Path) -> None:
    with running(tmp_path, weights_path, decoder_cache=0, picture_cache_bytes=0) as client:
        document = store(client)
        second = document["layers"][1]
        path = blob_path(client, document["id"])
        data = bytearray(path.read_bytes())
        data[second["offset"] + 5] ^= 0xFF
        path.write_bytes(bytes(data))
        url = f"/image/{document['id']}"
        assert client.get(url, params={"layers": 1}).status_code == 200  # layer 1 is intact
        damaged = client.get(url, params={"layers": 2})
        assert damaged.status_code == 500 and error_of(damaged) == "corrupt_bitstream"
        assert client.get(url + "/bitstream").content == bytes(data)  # the bytes are served as stored
        with client.websocket_connect(f"/ws/image/{document['id']}?credit=255") as ws:
            assert json.loads(ws.receive_text())["type"] == "info"
            assert len(ws.receive_bytes()) == document["header_bytes"]
            assert len(ws.receive_bytes()) == document["layers"][0]["size"]
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_bytes()
            assert (closed.value.code, closed.value.reason) == (1011, "corrupt_bitstream")


def test_a_damaged_header_or_a_short_blob(tmp_path: Path, weights_path: Path) -> None:
    with running(tmp_path, weights_path, decoder_cache=0, picture_cache_bytes=0) as client:
        first, second = store(client), store(client, 16, 16)
        path = blob_path(client, first["id"])
        data = bytearray(path.read_bytes())
        data[20] ^= 0x01  # inside the header, which has its own CRC
        path.write_bytes(bytes(data))
        response = client.get(f"/image/{first['id']}", params={"layers": 1})
        assert response.status_code == 500 and error_of(response) == "corrupt_bitstream"

        path = blob_path(client, second["id"])
        path.write_bytes(path.read_bytes()[:-10])
        for url in (f"/image/{second['id']}/bitstream", f"/image/{second['id']}"):
            response = client.get(url)
            assert response.status_code == 500 and error_of(response) == "corrupt_bitstream", url


def test_storage_failures(tmp_path: Path, weights_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running(tmp_path, weights_path) as client:
        storage = client.app.state.service.storage
        upload = {"file": ("a.png", make_image(16, 16), "image/png")}

        def full(key: str, data: bytes) -> None:
            raise StorageFullError("no space left to write the bitstream")

        monkeypatch.setattr(storage.blobs, "put", full)
        response = client.post("/encode?wait=true", files=upload, headers=AUTH)
        assert response.status_code == 507 and error_of(response) == "insufficient_storage"

        def read_only(*args) -> None:
            raise StorageError("storage cannot write the bitstream")

        monkeypatch.setattr(storage.blobs, "put", read_only)
        monkeypatch.setattr(storage.blobs, "check_writable", read_only)
        response = client.post("/encode?wait=true", files=upload, headers=AUTH)
        assert response.status_code == 503 and error_of(response) == "storage_unavailable"
        response = client.get("/ready")
        assert response.status_code == 503 and error_of(response) == "not_ready"
        assert client.get("/health").status_code == 200
        assert client.get("/images").json()["count"] == 0  # nothing half-stored is visible


def test_a_bitstream_that_fails_verification_is_never_stored(
    tmp_path: Path, weights_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encode writes a container of the wrong size (a bug the verification exists for)."""
    import server.encoding

    real_encode = server.encoding.encode
    monkeypatch.setattr(server.encoding, "encode", lambda pixels, model, **kw: real_encode(pixels[:-8], model, **kw))
    with running(tmp_path, weights_path) as client:
        upload = {"file": ("a.png", make_image(32, 24), "image/png")}
        response = client.post("/encode?wait=true", files=upload, headers=AUTH)
        assert response.status_code == 500 and error_of(response) == "verification_failed"
        job = client.get(client.post("/encode", files=upload, headers=AUTH).json()["urls"]["job"], headers=AUTH)
        while job.json()["state"] not in ("done", "failed"):
            job = client.get(job.json()["urls"]["job"], headers=AUTH)
        assert job.json()["error"] == {
            "status": 500,
            "code": "verification_failed",
            "message": "the new bitstream did not decode back to the upload; nothing was stored",
        }
        assert client.get("/images").json()["count"] == 0


def test_previews_the_busy_pool_cannot_make_close_the_stream_with_1013(tmp_path: Path, weights_path: Path) -> None:
    """One worker, no queue, no caches: while an encode job holds the worker, a preview waits
    `ws_send_timeout` for it and then the stream closes with TRY_LATER."""
    settings = {"workers": 1, "queue_size": 0, "decoder_cache": 0, "picture_cache_bytes": 0, "ws_send_timeout": 0.2}
    with running(tmp_path, weights_path, **settings) as client:
        document = store(client)
        busy = client.post("/encode", files={"file": ("b.png", make_image(800, 600, noise=True))}, headers=AUTH)
        assert busy.status_code == 202
        with client.websocket_connect(f"/ws/image/{document['id']}?credit=255&previews=png") as ws:
            assert json.loads(ws.receive_text())["type"] == "info"
            assert len(ws.receive_bytes()) == document["header_bytes"]
            assert len(ws.receive_bytes()) == document["layers"][0]["size"]
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == 1013 and "busy" in closed.value.reason
        state = client.get(busy.json()["urls"]["job"], headers=AUTH).json()["state"]
        assert state in ("running", "verifying"), "the encode did not hold the worker for the whole test"


def test_a_bug_answers_500_without_details(tmp_path: Path, weights_path: Path, monkeypatch) -> None:
    with running(tmp_path, weights_path) as client:

        def broken(image_id: str) -> None:
            raise RuntimeError("secret internal detail")

        monkeypatch.setattr(client.app.state.service.storage, "get", broken)
        response = client.get("/image/" + "a" * 32 + "/info")
        assert response.status_code == 500 and error_of(response) == "internal_error"
        assert "secret" not in response.text


def test_other_weights_answer_409(tmp_path: Path, weights_path: Path) -> None:
    from codec.api import fresh_model, save_weights

    with running(tmp_path, weights_path) as client:
        document = store(client, 16, 16)
    other = tmp_path / "other.pt"
    save_weights(fresh_model(seed=1), other)
    with running(tmp_path, other) as client:
        response = client.get(f"/image/{document['id']}")
        assert response.status_code == 409 and error_of(response) == "model_mismatch"
        assert client.get(f"/image/{document['id']}/bitstream").status_code == 200


def test_read_key(tmp_path: Path, weights_path: Path) -> None:
    with running(tmp_path, weights_path, read_key="reader") as client:
        document = store(client, 16, 16)
        info = f"/image/{document['id']}/info"
        refused = client.get(info)
        assert refused.status_code == 401 and error_of(refused) == "unauthorized"
        assert client.get(info, headers={"Authorization": "Bearer reader"}).status_code == 200
        assert client.get(info, headers=AUTH).status_code == 401  # distinct roles: the write key does not read
        assert client.get("/images").status_code == 401
        assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
        with client.websocket_connect(f"/ws/image/{document['id']}") as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == 4401
        with client.websocket_connect(f"/ws/image/{document['id']}?key=reader") as ws:  # never in the URL
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == 4401
        key = base64.urlsafe_b64encode(b"reader").decode().rstrip("=")
        with client.websocket_connect(f"/ws/image/{document['id']}", subprotocols=["codec.v1", f"key.{key}"]) as ws:
            assert ws.accepted_subprotocol == "codec.v1"
            assert json.loads(ws.receive_text())["type"] == "info"


def test_listing_can_be_turned_off(tmp_path: Path, weights_path: Path) -> None:
    with running(tmp_path, weights_path, list_enabled=False) as client:
        response = client.get("/images")
        assert response.status_code == 403 and error_of(response) == "listing_disabled"


def test_viewer(tmp_path: Path, weights_path: Path) -> None:
    with running(tmp_path, weights_path) as client:
        missing = client.get("/")
        assert missing.status_code == 404 and error_of(missing) == "viewer_missing"
        (tmp_path / "static").mkdir()
        (tmp_path / "static" / "index.html").write_text("<!doctype html><title>viewer</title>")
        (tmp_path / "static" / "viewer.js").write_text("console.log(1)")
        page = client.get("/")
        assert page.status_code == 200 and "<title>viewer</title>" in page.text
        assert page.headers["content-type"].startswith("text/html")
        assert client.get("/static/viewer.js").text == "console.log(1)"
        absent = client.get("/static/none.js")
        assert absent.status_code == 404 and error_of(absent) == "not_found"
