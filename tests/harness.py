"""Helpers that run the real service: `python -m server` under uvicorn on a free loopback port.

`ServerFactory.start(env)` starts one and waits for /ready; `make_image` and
`upload` make and send test pictures. The fixtures of conftest.py, reusable by
client and browser tests:

* `weights_path`   (session) a weights file of an untrained model, written once
* `server_factory` (session) `server_factory.start(env={...}, data_dir=...)` -> `RunningServer`;
                   every server it started is stopped at the end of the session
* `server`         (session) the session's server (settings in `SESSION_SERVER_ENV`: a write key, a small pool, ...)
* `base_url`, `ws_base`     its http:// and ws:// roots
* `client`         (session) `httpx.Client` on `base_url`, no credentials
* `writer`         (session) `httpx.Client` on `base_url` that sends the write key
* `uploaded`       (session) the info document of a 48x40 PNG stored on `server`
* `codec_model`    (session) the same weights loaded in the test process, to decode bitstreams
* `make_image(width, height, format="PNG", noise=False) -> bytes`
"""

from __future__ import annotations

import base64
import io
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench import processes

REPO = processes.REPO
WRITE_KEY = "test-write-key"
SESSION_SERVER_ENV = {
    "CODEC_SERVER_WRITE_KEY": WRITE_KEY,
    "CODEC_SERVER_WORKERS": "1",
    "CODEC_SERVER_QUEUE_SIZE": "1",
    "CODEC_SERVER_MAX_UPLOAD_BYTES": "1000000",
    "CODEC_SERVER_MAX_PIXELS": "200000",
    "CODEC_SERVER_MAX_RANGES": "8",
    "CODEC_SERVER_WS_SEND_TIMEOUT": "3",
    "CODEC_SERVER_WS_IDLE_TIMEOUT": "3",
    "CODEC_SERVER_WS_MAX_STREAMS": "4",
    "CODEC_SERVER_SOCKET_SEND_BUFFER": "65536",
    "CODEC_SERVER_CORS_ORIGINS": "http://viewer.example",
}


def make_image(width: int, height: int, format: str = "PNG", noise: bool = False, seed: int = 0) -> bytes:
    """A smooth gradient (or uniform noise) picture encoded in `format`."""
    if noise:
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack(
            [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y + seed * 37) % 256], axis=2
        ).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=format)
    return buffer.getvalue()


@dataclass
class RunningServer(processes.LoopbackServer):
    """`python -m server` as a test started it, with its data directory and environment."""

    data_dir: Path = Path()
    env: dict[str, str] = field(default_factory=dict)

    def metric(self, name: str, labels: str = "", default: float | None = None) -> float:
        """One sample of /metrics, e.g. metric("codec_server_cache_total", 'cache="picture",result="hit"').

        An absent sample raises LookupError (a renamed metric must not read as 0), unless `default` is
        given: a labelled counter has no sample before its first increment (unlabelled ones start at 0)."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        sample = name + (f"{{{labels}}}" if labels else "")
        match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
        if match:
            return float(match.group(1))
        if default is None:
            raise LookupError(f"no sample {sample} in /metrics")
        return default


class ServerFactory:
    def __init__(self, root: Path, weights: Path) -> None:
        self.root = root
        self.weights = weights
        self.running: list[RunningServer] = []
        self._count = 0

    def start(
        self, env: dict[str, str] | None = None, data_dir: Path | None = None, args: tuple[str, ...] = ()
    ) -> RunningServer:
        self._count += 1
        data_dir = data_dir or self.root / f"data-{self._count}"
        log_path = self.root / f"server-{self._count}.log"
        environment = processes.server_environment({"CODEC_SERVER_TORCH_THREADS": "1", **(env or {})})
        process, port = processes.launch(
            lambda port: processes.server_command(port, data_dir, self.weights, *args), log_path, environment
        )
        server = RunningServer(process, port, log_path, data_dir, env or {})
        self.running.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.running:
            server.stop()


def upload(writer: httpx.Client, data: bytes, name: str = "image.png", mime: str = "image/png") -> httpx.Response:
    return writer.post("/encode?wait=true", files={"file": (name, data, mime)})


def raw_websocket(port: int, path: str) -> socket.socket:
    """A WebSocket handshake on a socket with a tiny receive buffer, so that not reading stalls the sender."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock
