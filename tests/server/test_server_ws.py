"""The WebSocket protocol against the shared real server, with the `websockets` client."""

from __future__ import annotations

import contextlib
import io
import json
import time

import httpx
import psutil
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.harness import RunningServer, make_image, raw_websocket, upload


def close_code(ws, timeout: float = 20.0) -> tuple[int, str, list]:
    """Read until the server closes; returns its close code, reason and what arrived before."""
    received = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            received.append(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the connection dropped without a close frame"
        return closed.rcvd.code, closed.rcvd.reason, received


def stream_url(ws_base: str, image_id: str, query: str = "") -> str:
    return f"{ws_base}/ws/image/{image_id}{query}"


@pytest.fixture(scope="module")
def bitstream(client: httpx.Client, uploaded: dict) -> bytes:
    return client.get(uploaded["urls"]["bitstream"]).content


def test_every_layer_in_order(ws_base: str, uploaded: dict, bitstream: bytes) -> None:
    with connect(stream_url(ws_base, uploaded["id"])) as ws:
        info = json.loads(ws.recv(timeout=30))
        assert info["type"] == "info" and info["protocol"] == 1
        assert info["credit"] == 0 and info["previews"] is None
        assert {key: info[key] for key in uploaded} == uploaded  # the info document, unchanged
        header = ws.recv(timeout=30)
        assert isinstance(header, bytes) and len(header) == uploaded["header_bytes"]
        ws.send(json.dumps({"type": "credit", "layers": 100}))  # more than there are: capped
        parts = [header]
        for layer in uploaded["layers"]:
            message = ws.recv(timeout=30)
            assert isinstance(message, bytes)
            assert message == bitstream[layer["offset"] : layer["end"]], f"layer {layer['index']}"
            parts.append(message)
        done = json.loads(ws.recv(timeout=30))
        assert done == {"type": "done", "layers": len(uploaded["layers"]), "bytes": uploaded["bytes"]}
        code, reason, rest = close_code(ws)
    assert (code, rest) == (1000, [])
    assert b"".join(parts) == bitstream


def test_no_layer_without_credit(ws_base: str, uploaded: dict, bitstream: bytes) -> None:
    layers = uploaded["layers"]
    with connect(stream_url(ws_base, uploaded["id"])) as ws:
        ws.recv(timeout=30)  # info
        ws.recv(timeout=30)  # header
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.7)
        ws.send(json.dumps({"type": "credit", "layers": 1}))
        assert ws.recv(timeout=30) == bitstream[layers[0]["offset"] : layers[0]["end"]]
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.7)
        ws.send(json.dumps({"type": "request", "layer": 3}))  # everything up to layer 3
        assert ws.recv(timeout=30) == bitstream[layers[1]["offset"] : layers[1]["end"]]
        assert ws.recv(timeout=30) == bitstream[layers[2]["offset"] : layers[2]["end"]]
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.7)
        ws.send(json.dumps({"type": "request", "layer": 2}))  # already sent: nothing happens
        ws.send(json.dumps({"type": "credit", "layers": len(layers)}))
        code, _, rest = close_code(ws)
    assert code == 1000
    assert [len(m) for m in rest[:-1]] == [layer["size"] for layer in layers[3:]]
    assert json.loads(rest[-1])["type"] == "done"


def test_initial_credit_and_previews(ws_base: str, client: httpx.Client, uploaded: dict) -> None:
    with connect(stream_url(ws_base, uploaded["id"], "?previews=png&credit=2")) as ws:
        info = json.loads(ws.recv(timeout=30))
        assert info["credit"] == 2 and info["previews"] == "png"
        ws.recv(timeout=30)  # header
        for index in (1, 2):
            assert isinstance(ws.recv(timeout=30), bytes)  # the layer
            announce = json.loads(ws.recv(timeout=30))
            assert announce["type"] == "preview" and announce["layer"] == index
            assert announce["format"] == "png" and announce["mime"] == "image/png"
            picture = ws.recv(timeout=30)
            assert len(picture) == announce["bytes"]
            with Image.open(io.BytesIO(picture)) as image:
                assert image.size == (48, 40)
            assert picture == client.get(f"/image/{uploaded['id']}", params={"layers": index}).content
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/ws/image/" + "0" * 32, 4404),
        ("/ws/image/not-an-id", 4404),
        ("/ws/image/{id}?previews=gif", 1008),
        ("/ws/image/{id}?credit=abc", 1008),
        ("/ws/image/{id}?credit=-1", 1008),
        ("/ws/image/{id}?credit=1000", 1008),
    ],
)
def test_refused_streams(ws_base: str, uploaded: dict, path: str, code: int) -> None:
    with connect(ws_base + path.format(id=uploaded["id"])) as ws:
        assert close_code(ws)[0] == code


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", 1008),
        ("[1, 2]", 1008),
        ('{"type": "dance"}', 1008),
        ('{"type": "credit", "layers": 0}', 1008),
        ('{"type": "credit", "layers": "3"}', 1008),
        ('{"type": "credit", "layers": true}', 1008),
        ('{"type": "request", "layer": 99}', 1008),
        (b"\x00\x01binary", 1003),
        ("x" * 5000, 1009),  # the shared server allows 4096 bytes
    ],
)
def test_bad_client_messages(ws_base: str, uploaded: dict, message: str | bytes, code: int) -> None:
    with connect(stream_url(ws_base, uploaded["id"])) as ws:
        ws.recv(timeout=30)
        ws.send(message)
        assert close_code(ws)[0] == code


def test_idle_stream_is_closed(ws_base: str, uploaded: dict) -> None:
    with connect(stream_url(ws_base, uploaded["id"])) as ws:
        code, _, received = close_code(ws, timeout=30)
    assert code == 4408 and len(received) == 2  # info and header, then nothing: the shared server waits 3 s


def test_a_stream_granting_credit_is_not_idle(ws_base: str, uploaded: dict) -> None:
    """The control of the test above: credit every 2 s, for longer than the 3 s idle limit in all, keeps
    the stream open, so what closes an idle stream is the missing credit, not the stream's age."""
    with connect(stream_url(ws_base, uploaded["id"])) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "info"
        ws.recv(timeout=30)  # the header
        for layer in range(1, 4):
            time.sleep(2.0)
            ws.send(json.dumps({"type": "credit", "layers": 1}))
            assert len(ws.recv(timeout=30)) == uploaded["layers"][layer - 1]["size"]
        ws.send(json.dumps({"type": "credit", "layers": len(uploaded["layers"])}))
        code, _, received = close_code(ws, timeout=30)
    assert json.loads(received[-1])["type"] == "done" and code == 1000


def test_concurrent_streams_are_bounded(ws_base: str, uploaded: dict, server: RunningServer) -> None:
    url = stream_url(ws_base, uploaded["id"])
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(url)) for _ in range(4)]  # the shared server allows 4
        for ws in held:
            assert json.loads(ws.recv(timeout=30))["type"] == "info"
        with connect(url) as refused:
            assert close_code(refused)[0] == 4429
        assert server.metric("codec_server_ws_streams") == 4
    deadline = time.monotonic() + 20
    while server.metric("codec_server_ws_streams") != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    with connect(url + "?credit=255") as ws:
        assert close_code(ws)[0] == 1000


def test_a_client_that_stops_reading_is_dropped_without_buffering(writer: httpx.Client, server: RunningServer) -> None:
    document = upload(writer, make_image(512, 384, noise=True)).json()  # ~0.6 MB bitstream
    stream = f"/ws/image/{document['id']}?credit=255&previews=png"  # plus ~0.6 MB of preview per layer
    with connect(server.ws_url + stream, max_size=None) as ws:  # what a reading client receives
        total = sum(len(m) for m in close_code(ws, timeout=120)[2])
    assert total > 3_000_000

    process = psutil.Process(server.pid)
    rss_before = process.memory_info().rss
    sent_before = server.metric("codec_server_ws_sent_bytes_total")
    timeouts_before = server.metric("codec_server_ws_send_timeouts_total")
    sock = raw_websocket(server.port, stream)
    try:
        deadline = time.monotonic() + 60  # the shared server gives up after a 3 s send timeout
        while server.metric("codec_server_ws_send_timeouts_total") == timeouts_before:
            assert time.monotonic() < deadline, "the server never gave up on the stalled client"
            time.sleep(0.5)
        sent = server.metric("codec_server_ws_sent_bytes_total") - sent_before
        grown = process.memory_info().rss - rss_before
        while server.metric("codec_server_ws_streams") != 0:  # the slot is freed after a short close attempt
            assert time.monotonic() < deadline, "the stalled stream still holds its slot"
            time.sleep(0.2)
    finally:
        sock.close()
    # what the server handed to the connection: what the socket buffers took plus one message, not the stream
    assert sent < total / 3, (sent, total)
    assert grown < 64 * 1024 * 1024, grown
    assert httpx.get(f"{server.url}/health").status_code == 200
    writer.delete(f"/image/{document['id']}")
