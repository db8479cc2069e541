"""Loopback processes for benchmarks and tests: a free port, start, wait until ready, stop.

The one launcher of `python -m server` (and of the alternatives bench/ measures
beside it); tests/harness.py, bench/service.py and bench/soak.py all start
their processes through `launch`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 240.0  # the machine may be shared with a training run: start-up can be slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_environment(settings: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its `CODEC_SERVER_*` settings, quiet, plus `settings`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CODEC_SERVER_")}
    return {**clean, "CODEC_SERVER_LOG_LEVEL": "warning", "PYTHONWARNINGS": "ignore", **(settings or {})}


def server_command(port: int, data_dir: Path, weights: Path | None, *args: str) -> list[str]:
    """`python -m server` on `port` with its data in `data_dir`."""
    weights_args = ["--weights", str(weights)] if weights is not None else []
    return [sys.executable, "-m", "server", "--port", str(port), "--data-dir", str(data_dir), *weights_args, *args]


def launch(
    command_for: Callable[[int], list[str]],
    log_path: Path,
    env: dict[str, str] | None = None,
    probe: str = "/ready",
    timeout: float = READY_TIMEOUT,
) -> tuple[subprocess.Popen, int]:
    """Start the command that listens on the port it is given; return once `probe` answers 200.

    The process's output goes to `log_path`, which a start-up failure quotes.
    """
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command_for(port), cwd=REPO, env=env or dict(os.environ), stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}{probe}"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return process, port
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"not ready after {timeout:g} s:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.2)


def stop(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it does not end within `timeout`; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode
