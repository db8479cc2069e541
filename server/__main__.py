"""`python -m server`: parse flags (which override CODEC_SERVER_* variables), then run uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from server.config import ENV_PREFIX, Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description=f"Progressive-decoding image service. Every setting also reads {ENV_PREFIX}<NAME>; "
        "flags win over the environment. See docs/server.md.",
    )
    parser.add_argument("--host", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8000)")
    parser.add_argument("--data-dir", type=Path, help="bitstreams and index (default ./data)")
    parser.add_argument("--weights", type=Path, help="weights file (default $CODEC_WEIGHTS or weights/codec.pt)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto")
    parser.add_argument("--workers", type=int, help="model worker threads (default 1)")
    parser.add_argument("--queue-size", type=int, help="model jobs that may wait (default 8)")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug", "trace"))
    return parser


def settings_from(argv: list[str] | None) -> Settings:
    args = vars(build_parser().parse_args(argv))
    return Settings(**{name: value for name, value in args.items() if value is not None})


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from(argv)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG",
        format="%(levelname)s:     %(name)s: %(message)s",
    )
    weights = settings.weights
    if weights is None:
        from codec.api import default_weights_path

        weights = default_weights_path()
    if not weights.is_file():
        print(
            f"error: no weights at {weights}: train and export them (python -m codec train / export), "
            f"or pass --weights / set {ENV_PREFIX}WEIGHTS",
            file=sys.stderr,
        )
        return 2

    from server.storage import Storage, StorageError

    try:
        Storage.local(settings.data_dir).close()
    except StorageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from codec.errors import CodecError
    from server.app import DeviceUnavailable, create_app, load_codec

    try:  # before uvicorn starts: a damaged or foreign weights file is one line, not a traceback
        codec = load_codec(settings)
    except (CodecError, DeviceUnavailable) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2

    import socket

    import uvicorn

    config = uvicorn.Config(
        create_app(settings, codec),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        ws_max_size=settings.ws_max_message_bytes,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    listener = config.bind_socket()
    if settings.socket_send_buffer:
        # accepted connections inherit it: caps what the kernel queues for a client that stops reading
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.socket_send_buffer)
    uvicorn.Server(config).run(sockets=[listener])
    return 0


if __name__ == "__main__":
    sys.exit(main())
