"""Request heads are bounded, against the shared real server: header bytes (`max_header_bytes`) and
header count (`max_headers`) answer 431 (or, when the server stops reading a head mid-way, a closed
connection), long conditional and Range headers are not parsed element by element, and the server keeps
answering other clients. (The probe of issue 18: a 64 MiB header and 100,000 headers were accepted, and
an 8 MiB If-None-Match held the event loop for 2 s.)"""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from server.config import Settings
from tests.harness import RunningServer

MAX_HEADER_BYTES = Settings.model_fields["max_header_bytes"].default  # the shared server keeps the defaults
MAX_HEADERS = Settings.model_fields["max_headers"].default


def exchange(port: int, head: bytes, chunk: int = 1 << 16, timeout: float = 60.0) -> tuple[int | None, bytes]:
    """Send a request head (as much of it as the server takes), then read the answer until the server
    closes: (status, whole answer), or (None, b"") when it closed or reset without answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            for start in range(0, len(head), chunk):
                sock.sendall(head[start : start + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: it refused the head
        received = b""
        try:
            while data := sock.recv(1 << 16):
                received += data
        except ConnectionResetError:
            pass
    if not received:
        return None, b""
    return int(received.split(b" ", 2)[1]), received


def request(path: str, headers: list[tuple[str, str]], websocket: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if websocket:
        lines[-1] = "Connection: Upgrade"
        lines += ["Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def assert_refused(answer: tuple[int | None, bytes], statuses: tuple[int, ...] = (431,)) -> None:
    status, raw = answer
    assert status in (*statuses, None), raw[:300]
    if status is not None:
        body = json.loads(raw.partition(b"\r\n\r\n")[2])
        assert body["error"]["code"] in ("headers_too_large", "uri_too_long"), body
        assert b"connection: close" in raw.lower()


def assert_healthy(server: RunningServer, log_start: int) -> None:
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    assert "Traceback" not in server.log()[log_start:]


def test_an_oversized_header_is_refused(server: RunningServer, uploaded: dict) -> None:
    log_start = len(server.log())
    tags = ", ".join(f'"{i:032x}"' for i in range(8 * 1024 * 1024 // 36))  # 8 MiB of entity tags
    assert_refused(exchange(server.port, request(uploaded["urls"]["bitstream"], [("If-None-Match", tags)])))
    huge = request("/health", [("X-Filler", "a" * (64 * 1024 * 1024))])  # 64 MiB in one header
    assert_refused(exchange(server.port, huge))
    just_over = request("/health", [("X-Filler", "a" * (MAX_HEADER_BYTES + 1))])
    assert_refused(exchange(server.port, just_over))
    assert_healthy(server, log_start)


def test_too_many_headers_are_refused(server: RunningServer, uploaded: dict) -> None:
    log_start = len(server.log())
    flood = request("/health", [("X", "y")] * 100_000)  # 600 kB: over the byte bound too
    assert_refused(exchange(server.port, flood))
    over = [(f"X-H{i}", "1") for i in range(MAX_HEADERS + 1)]  # a few kB: within the byte bound, over the count
    assert exchange(server.port, request("/health", over))[0] == 431  # the whole head was read: a clean 431
    stream = f"/ws/image/{uploaded['id']}"
    assert exchange(server.port, request(stream, over, websocket=True))[0] == 431  # before any upgrade
    assert_healthy(server, log_start)


def test_a_long_target_is_refused(server: RunningServer) -> None:
    log_start = len(server.log())
    assert_refused(exchange(server.port, request("/health?" + "a" * (MAX_HEADER_BYTES + 1), [])), (414, 431))
    assert_healthy(server, log_start)


@pytest.mark.parametrize("count", [1, MAX_HEADERS - 4])  # 4: Host, Connection and the two of the test
def test_heads_within_the_bounds_are_answered(server: RunningServer, uploaded: dict, count: int) -> None:
    filler = "a" * (MAX_HEADER_BYTES // 2)
    headers = [("X-Filler", filler), *[(f"X-H{i}", "1") for i in range(count)]]
    status, raw = exchange(server.port, request(uploaded["urls"]["info"], headers))
    assert status == 200, raw[:300]
    tags = ", ".join(f'"{i:032x}"' for i in range(20))  # an ordinary If-None-Match list: evaluated, no match
    assert exchange(server.port, request(uploaded["urls"]["info"], [("If-None-Match", tags)]))[0] == 200
