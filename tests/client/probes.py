"""Probes for the client tests: a transport that counts what the client receives, the server's own
pictures, and the `python -m client fetch` command in a subprocess."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.harness import REPO


class CountedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, tally: Counter, path: str) -> None:
        self.inner = inner
        self.tally = tally
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.tally[self.path] += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class CountingTransport(httpx.BaseTransport):
    """Counts the body bytes that reach the client, per URL path, and records every Range header sent."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.received: Counter = Counter()
        self.ranges: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.ranges.append(request.headers.get("range"))
        response = self.inner.handle_request(request)
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=CountedStream(response.stream, self.received, request.url.path),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


def picture(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def server_pixels(client: httpx.Client, info: dict, layers: int) -> np.ndarray:
    """What `GET /image/{id}?layers=n&format=png` shows."""
    response = client.get(info["urls"]["image"], params={"layers": layers, "format": "png"})
    assert response.status_code == 200, response.text
    return picture(response.content)


def end_of_layer(info: dict, n: int) -> int:
    """Bytes of the header and layers 1..n, from the info document."""
    return info["layers"][n - 1]["end"]


def run_fetch(weights_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m client fetch ARGS --weights WEIGHTS` in a fresh process."""
    # one torch thread, like the test server: other thread counts may round a few values differently (±1)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "client", "fetch", *args, "--weights", str(weights_path)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
