"""Who may open a WebSocket stream, and what of it the log keeps (issue 18, defect 2).

A real server with a read key, a write key and one CORS origin, logging at `info` so that uvicorn's
access lines are written: the read key travels in the `Sec-WebSocket-Protocol` header (the subprotocol
`key.<base64url>`, next to `codec.v1`, which the server selects) or `Authorization: Bearer`; never in the
URL. Keys have distinct roles; a page on a foreign origin cannot open a stream."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.harness import RunningServer, ServerFactory, make_image, upload

READ_KEY = "reader-Secret-1234"
WRITE_KEY = "writer-Secret-5678"
ALLOWED_ORIGIN = "http://viewer.example"
UNAUTHORIZED = 4401


def key_protocol(key: str) -> str:
    return "key." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def keyed(server_factory: ServerFactory) -> Iterator[tuple[RunningServer, str]]:
    env = {
        "CODEC_SERVER_READ_KEY": READ_KEY,
        "CODEC_SERVER_WRITE_KEY": WRITE_KEY,
        "CODEC_SERVER_CORS_ORIGINS": ALLOWED_ORIGIN,
        "CODEC_SERVER_LOG_LEVEL": "info",  # uvicorn's access lines are written at info
    }
    server = server_factory.start(env)
    with httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {WRITE_KEY}"}) as http:
        response = upload(http, make_image(24, 16))
    assert response.status_code == 201, response.text
    yield server, response.json()["id"]
    server.stop()


def first_message(ws) -> str | int:
    """The type of the first message (`info`: the stream was admitted), else the close code."""
    try:
        return json.loads(ws.recv(timeout=30))["type"]
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the connection dropped without a close frame"
        return closed.rcvd.code


def stream(server: RunningServer, image_id: str, query: str = "", **options) -> str | int:
    with connect(f"{server.ws_url}/ws/image/{image_id}{query}", open_timeout=30, **options) as ws:
        outcome = first_message(ws)
        if outcome == "info" and "subprotocols" in options:
            assert ws.subprotocol == "codec.v1"  # a selected subprotocol, as browsers require
        return outcome


def test_the_read_key_travels_in_a_header_and_never_reaches_the_log(
    keyed: tuple[RunningServer, str], codec_model
) -> None:
    server, image_id = keyed
    assert stream(server, image_id, subprotocols=["codec.v1", key_protocol(READ_KEY)]) == "info"
    assert stream(server, image_id, additional_headers={"Authorization": f"Bearer {READ_KEY}"}) == "info"
    # a key in the URL no longer opens a stream (and is not logged either: an old viewer still sends it)
    assert stream(server, image_id, f"?key={READ_KEY}") == UNAUTHORIZED
    assert stream(server, image_id, f"?previews=png&key={READ_KEY}&credit=1") == UNAUTHORIZED
    assert stream(server, image_id) == UNAUTHORIZED
    assert stream(server, image_id, subprotocols=["codec.v1", key_protocol(READ_KEY + "x")]) == UNAUTHORIZED
    assert stream(server, image_id, subprotocols=["codec.v1", "key.%%%"]) == UNAUTHORIZED
    # the Python client sends `Authorization: Bearer`
    try:  # the client package is moving out of codec/
        from client import WebSocketFetch
    except ImportError:
        from codec.client import WebSocketFetch

    with WebSocketFetch(f"{server.url}/image/{image_id}", codec_model, key=READ_KEY) as fetch:
        assert len(list(fetch.refine(max_layers=1))) == 1
    httpx.get(f"{server.url}/image/{image_id}/info?key={READ_KEY}", timeout=30)  # an HTTP query key too

    log = server.log()
    assert f"/ws/image/{image_id}" in log, "the access log is not written: the test would prove nothing"
    assert "[accepted]" in log
    for secret in (READ_KEY, WRITE_KEY, key_protocol(READ_KEY)[4:]):
        assert secret not in log, f"{secret!r} is in the server log"
    assert "Traceback" not in log


def test_read_and_write_keys_have_distinct_roles(keyed: tuple[RunningServer, str]) -> None:
    server, image_id = keyed
    info = f"{server.url}/image/{image_id}/info"
    assert httpx.get(info, headers={"Authorization": f"Bearer {READ_KEY}"}, timeout=30).status_code == 200
    assert httpx.get(info, headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=30).status_code == 401
    assert (
        httpx.get(f"{server.url}/images", headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=30).status_code
        == 401
    )
    assert stream(server, image_id, subprotocols=["codec.v1", key_protocol(WRITE_KEY)]) == UNAUTHORIZED
    assert stream(server, image_id, additional_headers={"Authorization": f"Bearer {WRITE_KEY}"}) == UNAUTHORIZED
    files = {"file": ("a.png", make_image(8, 8), "image/png")}
    refused = httpx.post(
        f"{server.url}/encode", files=files, headers={"Authorization": f"Bearer {READ_KEY}"}, timeout=60
    )
    assert refused.status_code == 401
    doomed = httpx.post(
        f"{server.url}/encode?wait=true", files=files, headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=120
    ).json()["id"]
    reader = {"Authorization": f"Bearer {READ_KEY}"}
    assert httpx.delete(f"{server.url}/image/{doomed}", headers=reader, timeout=30).status_code == 401
    writer = {"Authorization": f"Bearer {WRITE_KEY}"}
    assert httpx.delete(f"{server.url}/image/{doomed}", headers=writer, timeout=30).status_code == 204


def test_a_foreign_origin_cannot_open_a_stream(keyed: tuple[RunningServer, str]) -> None:
    server, image_id = keyed
    key = key_protocol(READ_KEY)
    own = f"http://127.0.0.1:{server.port}"
    for origin in ("http://evil.example", "null", ALLOWED_ORIGIN + ".evil.example", "http://viewer.example:8080",
                   f"http://127.0.0.1:{server.port + 1}", "https://evil.example"):  # fmt: skip
        with pytest.raises(InvalidStatus) as refused:
            stream(server, image_id, origin=origin, subprotocols=["codec.v1", key])
        assert refused.value.response.status_code == 403, origin
    for origin in (ALLOWED_ORIGIN, own):  # a configured origin, and the server's own (its viewer)
        assert stream(server, image_id, origin=origin, subprotocols=["codec.v1", key]) == "info", origin
    assert stream(server, image_id, subprotocols=["codec.v1", key]) == "info"  # no Origin: not a browser
