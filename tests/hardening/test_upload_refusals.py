"""Uploads are refused cheaply first (issue 18, defect 4): a missing or wrong write key from the headers,
before the body is read; a full pool before the upload is inspected; and files whose structure would
make inspection or decoding walk millions of segments or chunks, from a cheap count."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.pool import ModelPool
from tests.harness import WRITE_KEY, RunningServer, ServerFactory, make_image, upload
from tests.in_process import running

from . import hostile
from .answers import error_code

BODY_BYTES = 30_000_000  # within the default upload limit (32 MiB): only the key can refuse it
SENT_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def roomy(server_factory: ServerFactory) -> Iterator[RunningServer]:
    """The default upload limit (32 MiB) and pixel limit, with a write key."""
    server = server_factory.start({"CODEC_SERVER_WRITE_KEY": WRITE_KEY})
    yield server
    server.stop()


def answer_to_a_partial_body(server: RunningServer, headers: str) -> tuple[int, bytes]:
    """Send a POST /encode head announcing a 30 MB body, then only its first 64 KiB, and wait for an
    answer: only a server that decides from the headers can give one."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        boundary = "b0undary"
        sock.sendall(
            f"POST /encode HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{headers}"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()
        body = part + b"\0" * (SENT_BYTES - len(part))
        if "chunked" in headers:  # one chunk of 64 KiB; the rest (and the last chunk) never comes
            body = f"{len(body):x}\r\n".encode() + body + b"\r\n"
        sock.sendall(body)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                assert chunk, "the server closed without an answer"
                answer += chunk
        except TimeoutError:
            raise AssertionError(
                f"no answer within 30 s to a body of which {SENT_BYTES} bytes were sent: the server waits for all of it"
            ) from None
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head


@pytest.mark.parametrize(
    "authorization", ["", "Authorization: Bearer wrong\r\n", f"Authorization: Basic {WRITE_KEY}\r\n"]
)
@pytest.mark.parametrize("framing", [f"Content-Length: {BODY_BYTES}\r\n", "Transfer-Encoding: chunked\r\n"])
def test_an_upload_without_the_key_is_refused_before_its_body(
    roomy: RunningServer, authorization: str, framing: str
) -> None:
    status, head = answer_to_a_partial_body(roomy, authorization + framing)
    assert status == 401, head
    assert b"www-authenticate: bearer" in head.lower()
    assert httpx.get(f"{roomy.url}/health", timeout=30).status_code == 200
    assert "Traceback" not in roomy.log()


def test_an_upload_without_the_key_is_refused_with_the_json_shape(roomy: RunningServer) -> None:
    files = {"file": ("a.png", make_image(8, 8), "image/png")}
    response = httpx.post(f"{roomy.url}/encode?wait=true", files=files, timeout=60)
    assert response.status_code == 401 and error_code(response, WRITE_KEY) == "unauthorized"
    with httpx.Client(base_url=roomy.url, timeout=120, headers={"Authorization": f"Bearer {WRITE_KEY}"}) as writer:
        assert upload(writer, make_image(8, 8)).status_code == 201  # the key still opens it


HOSTILE = [
    ("jpeg with 2,000,000 empty APP3 segments", lambda: hostile.jpeg_padded(2_000_000), "image/jpeg"),
    ("jpeg with 1001 empty APP3 segments", lambda: hostile.jpeg_padded(1001), "image/jpeg"),
    ("png with 400,000 private chunks before IDAT", lambda: hostile.png_padded(400_000), "image/png"),
    ("png with 400,000 private chunks after IDAT", lambda: hostile.png_padded(400_000, before_data=False), "image/png"),
    ("png with 12,000 private chunks", lambda: hostile.png_padded(12_000), "image/png"),
]


@pytest.mark.parametrize(("make", "mime"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_files_with_millions_of_segments_are_refused(roomy: RunningServer, make, mime: str) -> None:
    data = make()
    with httpx.Client(base_url=roomy.url, timeout=120, headers={"Authorization": f"Bearer {WRITE_KEY}"}) as writer:
        response = upload(writer, data, mime=mime)
        assert response.status_code == 400, response.text
        assert error_code(response) == "too_many_segments"
        assert httpx.get(f"{roomy.url}/health", timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("data", "mime"),
    [(hostile.jpeg_padded(990), "image/jpeg"), (hostile.png_padded(9_000), "image/png")],
    ids=["jpeg with 990 APP3 segments", "png with 9000 private chunks"],
)
def test_files_below_the_segment_limits_are_stored(roomy: RunningServer, data: bytes, mime: str) -> None:
    with httpx.Client(base_url=roomy.url, timeout=120, headers={"Authorization": f"Bearer {WRITE_KEY}"}) as writer:
        response = upload(writer, data, mime=mime)
        assert response.status_code == 201, response.text
        assert (response.json()["width"], response.json()["height"]) == (48, 40)


@pytest.fixture
def busy_app(tmp_path: Path, weights_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An app whose pool reports itself full (every worker and queue slot taken)."""
    monkeypatch.setattr(ModelPool, "admitted", property(lambda pool: pool.capacity))
    with running(tmp_path, weights_path, workers=1, queue_size=0) as client:
        yield client


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"not an image at all", "image/png"),
        (hostile.jpeg_padded(2_000_000), "image/jpeg"),
        (make_image(8, 8), "image/png"),
    ],
    ids=["not an image", "2,000,000 segments", "a valid png"],
)
def test_a_full_pool_answers_429_before_the_upload_is_inspected(busy_app, data: bytes, mime: str) -> None:
    response = busy_app.post(
        "/encode", files={"file": ("a", data, mime)}, headers={"Authorization": f"Bearer {WRITE_KEY}"}
    )
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "busy" and int(response.headers["retry-after"]) >= 1
    unauthenticated = busy_app.post("/encode?wait=true", files={"file": ("a", data, mime)})
    assert unauthenticated.status_code == 401  # the key first: a stranger learns nothing of the load
