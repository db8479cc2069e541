"""Hostile WebSocket clients against the shared real server: oversized, binary or pathological messages
close the stream with the documented code, and clients that vanish mid-layer free their slot.
(A client that never reads is covered by tests/server/test_server_ws.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time

import httpx
import pytest
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from server.config import Settings
from tests.harness import WRITE_KEY, RunningServer, ServerFactory, make_image, raw_websocket, upload

from . import hostile

MAX_MESSAGE = Settings.model_fields["ws_max_message_bytes"].default  # the shared server keeps the default
POLICY, UNSUPPORTED_DATA, TOO_BIG = 1008, 1003, 1009

MESSAGES = [
    ("binary", b"\x00\x01\x02", UNSUPPORTED_DATA),
    ("text above the limit", "x" * (MAX_MESSAGE + 1), TOO_BIG),
    ("1 MiB binary", os.urandom(1 << 20), TOO_BIG),
    ("1 MiB text", '{"type": "credit", "layers": 1}' + " " * (1 << 20), TOO_BIG),
    ("deeply nested json", hostile.nested_json(MAX_MESSAGE // 2), POLICY),
    ("nul bytes", '{"type": "credit\\u0000", "layers": 1}', POLICY),
    ("infinite credit", '{"type": "credit", "layers": 1e999}', POLICY),
    ("4000-digit credit", '{"type": "credit", "layers": ' + "9" * 4000 + "}", POLICY),
    ("negative layer", '{"type": "request", "layer": -3}', POLICY),
    ("layer as a float", '{"type": "request", "layer": 1.0}', POLICY),
    ("type missing", '{"layers": 1}', POLICY),
    ("json string", '"credit"', POLICY),
]


def close_of(ws, timeout: float = 30.0) -> int:
    """Read until the server closes; its close code."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            ws.recv(timeout=max(0.1, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the connection dropped without a close frame"
        return closed.rcvd.code


@pytest.mark.parametrize(("message", "code"), [m[1:] for m in MESSAGES], ids=[m[0] for m in MESSAGES])
def test_bad_client_message(ws_base: str, uploaded: dict, message: str | bytes, code: int) -> None:
    with connect(f"{ws_base}/ws/image/{uploaded['id']}", max_size=None) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "info"
        ws.send(message)
        assert close_of(ws) == code


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a crashed client or a dropped network would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_for_no_streams(server: RunningServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while server.metric("codec_server_ws_streams") != 0:
        assert time.monotonic() < deadline, "a vanished client still holds its stream slot"
        time.sleep(0.2)


def test_clients_that_vanish_mid_layer(writer: httpx.Client, server: RunningServer) -> None:
    document = upload(writer, make_image(384, 320, noise=True, seed=11)).json()
    assert min(layer["size"] for layer in document["layers"]) > 50_000  # a client reading 20 kB is inside layer 1
    bitstream = writer.get(document["urls"]["bitstream"]).content
    log_start = len(server.log())
    path = f"/ws/image/{document['id']}?credit=255"
    for _ in range(3):  # a reset in the middle of layer 1
        sock = raw_websocket(server.port, path)
        received = 0
        while received < document["header_bytes"] + 20_000:  # the info, the header and part of layer 1
            received += len(sock.recv(4096))
        reset(sock)
    # A client that hangs up after one layer. Credit for one layer only: with more, the server may have
    # sent everything and closed before the hang-up, and there is nothing left to hang up on.
    with connect(f"{server.ws_url}/ws/image/{document['id']}?credit=1", max_size=None) as ws:
        ws.recv(timeout=30), ws.recv(timeout=30), ws.recv(timeout=30)
        ws.socket.shutdown(socket.SHUT_RDWR)
    wait_for_no_streams(server)

    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    with connect(server.ws_url + path, max_size=None) as ws:  # the next client gets everything
        parts = []
        try:
            while True:
                parts.append(ws.recv(timeout=60))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1000
    assert b"".join(part for part in parts if isinstance(part, bytes)) == bitstream
    assert "Traceback" not in server.log()[log_start:]
    assert writer.delete(document["urls"]["image"]).status_code == 204


def test_a_refused_stream_frees_its_slot_at_once(server_factory: ServerFactory) -> None:
    """One stream slot and a long idle timeout: a stream that ends on a bad message must give its slot
    back at once, every time, not when its sender's credit wait runs out (a cancel swallowed by
    `asyncio.wait_for` used to keep it for the whole idle timeout)."""
    env = {"CODEC_SERVER_WRITE_KEY": WRITE_KEY, "CODEC_SERVER_WS_MAX_STREAMS": "1",
           "CODEC_SERVER_WS_IDLE_TIMEOUT": "600"}  # fmt: skip
    server = server_factory.start(env)
    with httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {WRITE_KEY}"}) as http:
        image_id = upload(http, make_image(24, 16)).json()["id"]
    for _ in range(30):  # the race (header sent as the cancel arrives) is hit about one time in three
        with connect(f"{server.ws_url}/ws/image/{image_id}") as ws:
            assert json.loads(ws.recv(timeout=30))["type"] == "info"  # not refused with 4429: the slot is free
            ws.send("not json")
            assert close_of(ws, timeout=30) == POLICY
        wait_for_no_streams(server, timeout=30)
    server.stop()


def test_simultaneous_connects_never_exceed_the_stream_limit(server_factory: ServerFactory) -> None:
    """40 clients connect at the same moment to a server allowing 3 streams: at most 3 get their `info`,
    every other one is closed with 4429, and the streams gauge never reads more than 3. (The slot used to
    be taken only after the storage lookup, so every handler passed the check before any counted.)"""
    limit, clients = 3, 40
    env = {"CODEC_SERVER_WRITE_KEY": WRITE_KEY, "CODEC_SERVER_WS_MAX_STREAMS": str(limit),
           "CODEC_SERVER_WS_IDLE_TIMEOUT": "600"}  # fmt: skip
    server = server_factory.start(env)
    with httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {WRITE_KEY}"}) as http:
        image_id = upload(http, make_image(24, 16)).json()["id"]
    url = f"{server.ws_url}/ws/image/{image_id}"

    async def first_message(ws) -> str | int:
        """The type of the first message ("info": the stream was admitted), else the close code."""
        try:
            return json.loads(await asyncio.wait_for(ws.recv(), 60))["type"]
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "the connection dropped without a close frame"
            return closed.rcvd.code

    async def run() -> tuple[list[str | int], float, float]:
        sockets = await asyncio.gather(*(connect_async(url, open_timeout=60) for _ in range(clients)))
        try:
            outcomes = await asyncio.gather(*(first_message(ws) for ws in sockets))
            # every admitted stream is still open (no credit, a long idle timeout): the gauge at its peak
            gauge = await asyncio.to_thread(server.metric, "codec_server_ws_streams")
            rejected = await asyncio.to_thread(server.metric, "codec_server_ws_rejected_total")
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))
        return outcomes, gauge, rejected

    outcomes, gauge, rejected = asyncio.run(run())
    admitted = outcomes.count("info")
    assert admitted <= limit, f"{admitted} of {clients} simultaneous clients got a stream; the limit is {limit}"
    assert gauge <= limit
    assert admitted >= 1 and gauge == admitted
    assert sorted(set(outcomes) - {"info"}) == [4429] and rejected == clients - admitted
    wait_for_no_streams(server, timeout=30)
    with connect(url + "?credit=255") as ws:  # every slot came back
        assert close_of(ws) == 1000
    server.stop()


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked, as RFC 6455 requires of clients) of < 126 bytes."""
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_invalid_utf8_closes_1007_without_a_traceback(server: RunningServer, uploaded: dict) -> None:
    """A text frame that is not UTF-8 (which websockets clients refuse to send, hence a raw socket) closes
    the stream with 1007, and the log keeps one line per frame, not uvicorn's UnicodeDecodeError traceback."""
    log_start = len(server.log())
    for payload in (
        b"\xff\xfe\xc3",
        b'{"type": "credit", "layers": 1\xc3}',
        b"\xed\xa0\x80",
    ):  # \xed\xa0\x80: a surrogate
        sock = raw_websocket(server.port, f"/ws/image/{uploaded['id']}")
        sock.sendall(masked_frame(0x1, payload))
        sock.settimeout(30)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if b"\x88\x02\x03\xef" in received:  # a close frame, code 1007
                break
        assert b"\x88\x02\x03\xef" in received, received[-16:]
        sock.close()
    wait_for_no_streams(server)
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    log = server.log()[log_start:]
    assert "Traceback" not in log and "UnicodeDecodeError" not in log, log
    assert log.count("a WebSocket client sent a text message that is not UTF-8; closed with 1007") == 3, log
