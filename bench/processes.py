"""Loopback processes for benchmarks and tests: a free port, start, wait until ready, stop.

The one launcher of `python -m server`, its encode workers, and of the static file servers bench/ measures
beside it (Starlette's StaticFiles, nginx); tests/harness.py, bench/service_measure.py
and bench/soak.py all start their processes through `launch`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 240.0  # the machine may be shared with a training run: start-up can be slow
STATIC_DIR_ENV = "BENCH_STATIC_DIR"
NGINX_CONFIG = """\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    types {{ image/png png; application/octet-stream sric; }}
    server {{
        listen 127.0.0.1:{port};
        root {static};
    }}
}}
"""


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


def start_worker(data_dir: Path, env: dict[str, str], log_path: Path, weights: Path | None) -> subprocess.Popen:
    """`python -m server worker` (no HTTP listener), once its log says it waits for jobs."""
    weights_args = ["--weights", str(weights)] if weights is not None else []
    command = [sys.executable, "-m", "server", "worker", "--data-dir", str(data_dir), *weights_args]
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            command, cwd=REPO, env=server_environment({**env, "CODEC_SERVER_LOG_LEVEL": "info"}),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT
    while "waiting for encode jobs" not in log_path.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            stop(worker)
            raise RuntimeError(f"the worker did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.2)
    return worker


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


@dataclass
class LoopbackServer:
    """A server process on a loopback port: the part the benchmarks and tests/harness.py share."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        return stop(self.process, timeout)


@dataclass
class Running(LoopbackServer):
    """A benchmarked server, named in the report."""

    name: str = ""

    def rss(self) -> int:
        import psutil  # only the benchmarks read it; the test harness starts servers without it

        return psutil.Process(self.process.pid).memory_info().rss


def start(
    name: str, command_for: Callable[[int], list[str]], root: Path, probe: str, env: dict[str, str] | None = None
) -> Running:
    """Start the command that listens on the given port, and wait until `probe` answers 200.

    Its log goes to `root`/`name`.log; `env` is added to this process's environment.
    """
    log_path = root / f"{name}.log"
    try:
        process, port = launch(command_for, log_path, {**os.environ, **(env or {})}, probe)
    except RuntimeError as error:
        raise RuntimeError(f"{name} {error}") from None
    return Running(process, port, log_path, name)


def static_files_app():
    """Starlette's StaticFiles alone (`uvicorn --factory`): the same bytes, no application logic."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    return Starlette(routes=[Mount("/", StaticFiles(directory=os.environ[STATIC_DIR_ENV]))])


def start_starlette(root: Path, static: Path, probe: str) -> Running:
    """The files of `static` served by `static_files_app` under uvicorn: the service's stack without the service."""

    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "--factory", "bench.processes:static_files_app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip

    return start("starlette", command, root, probe, {STATIC_DIR_ENV: str(static)})


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def start_nginx(root: Path, static: Path, probe: str) -> Running | None:
    """nginx with one worker and sendfile serving `static`, or None when it is not installed."""
    nginx = nginx_binary()
    if nginx is None:
        return None
    home = root / "nginx"
    home.mkdir()
    for folder in (root, static):  # nginx's worker runs as nobody when started by root
        folder.chmod(0o755)

    def command(port: int) -> list[str]:
        config = home / "nginx.conf"
        config.write_text(NGINX_CONFIG.format(root=home, port=port, static=static))
        return [nginx, "-p", str(home), "-c", str(config), "-e", str(home / "error.log")]

    return start("nginx", command, root, probe)


def nginx_version() -> str:
    try:
        answer = subprocess.run([nginx_binary() or "nginx", "-v"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    return answer.stderr.strip().removeprefix("nginx version: nginx/")
