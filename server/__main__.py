"""`python -m server [serve|migrate]`: parse flags (which override CODEC_SERVER_* variables), then run
uvicorn (`serve`, the default) or apply the PostgreSQL index's schema migrations and exit (`migrate`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from server.config import ENV_PREFIX, Settings

if TYPE_CHECKING:
    from codec import ScalableCodec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description=f"Progressive-decoding image service. Every setting also reads {ENV_PREFIX}<NAME>; "
        "flags win over the environment. See docs/server.md.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("serve", "migrate", "worker"),
        default="serve",
        help="serve (default): run the service; migrate: apply the schema migrations of the PostgreSQL index "
        f"({ENV_PREFIX}INDEX_URL) and exit (serve applies them at start-up too); worker: run encode jobs from "
        "the queue in that database, with no HTTP listener",
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


def bounded_http_protocol(max_header_bytes: int, max_headers: int) -> type:
    """uvicorn's h11 protocol with a bounded request head, refused before the app sees the request.

    h11 refuses a head still incomplete past `max_incomplete_event_size` (uvicorn passes
    `h11_max_incomplete_event_size`: `max_header_bytes`); this class also refuses a complete head that
    arrived in one read with more bytes than that or more than `max_headers` fields, and answers those
    refusals 431 (a target longer than the bound alone: 414) in the service's JSON error shape, then
    closes. (uvicorn's default httptools parser has no bound: a 64 MiB header was read, and concatenated
    chunk by chunk.) WebSocket handshakes go through the same check before any upgrade.
    """
    import json
    from http import HTTPStatus

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from server.errors import error_body

    refusals = {
        414: ("uri_too_long", f"the request target is limited to {max_header_bytes} bytes"),
        431: (
            "headers_too_large",
            f"request headers are limited to {max_header_bytes} bytes and {max_headers} fields",
        ),
    }

    class HeadBoundedConnection(h11.Connection):
        refusal: int | None = None

        def next_event(self):  # type: ignore[no-untyped-def]
            try:
                event = super().next_event()
            except h11.RemoteProtocolError as error:  # 431: h11's buffer bound; else a malformed request
                self.refusal = error.error_status_hint if error.error_status_hint in refusals else None
                raise
            if isinstance(event, h11.Request):
                size = len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers)
                if len(event.target) > max_header_bytes:
                    self.refusal = 414
                elif size > max_header_bytes or len(event.headers) > max_headers:
                    self.refusal = 431
                if self.refusal is not None:
                    raise h11.RemoteProtocolError(refusals[self.refusal][1], error_status_hint=self.refusal)
            return event

    class HeadBoundedH11Protocol(H11Protocol):
        def __init__(self, config, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(config, *args, **kwargs)
            self.conn = HeadBoundedConnection(h11.SERVER, config.h11_max_incomplete_event_size)

        def send_400_response(self, msg: str) -> None:
            status = self.conn.refusal
            if status is None:
                super().send_400_response(msg)
                return
            body = json.dumps(error_body(*refusals[status])).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            reason = HTTPStatus(status).phrase.encode()
            for event in (h11.Response(status_code=status, headers=headers, reason=reason), h11.Data(data=body)):
                self.transport.write(self.conn.send(event))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
            self.transport.close()

    return HeadBoundedH11Protocol


def settings_from(argv: list[str] | None) -> Settings:
    args = vars(build_parser().parse_args(argv))
    args.pop("command")
    return Settings(**{name: value for name, value in args.items() if value is not None})


def migrate(settings: Settings) -> int:
    """`python -m server migrate`: one line on stdout (the versions applied), or one error line and 2."""
    url = settings.index_url.get_secret_value()
    if not url:
        print(f"error: migrate needs a PostgreSQL index: set {ENV_PREFIX}INDEX_URL", file=sys.stderr)
        return 2
    from server.postgres import MIGRATIONS, redacted, run_migrations
    from server.storage import StorageError

    try:
        applied = run_migrations(url)
    except StorageError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
    print(f"index at {redacted(url)}: schema version {len(MIGRATIONS)} ({done})")
    return 0


def work(settings: Settings, model: ScalableCodec) -> int:
    """`python -m server worker`: serve the job queue until SIGTERM or SIGINT."""
    import asyncio

    from server.job_queue import PostgresJobQueue
    from server.postgres import PostgresIndex
    from server.storage_factory import open_storage
    from server.worker import run_worker

    storage = open_storage(settings)
    try:
        assert isinstance(storage.index, PostgresIndex)  # index_url is set
        queue = PostgresJobQueue(storage.index.pool, settings.job_lease_seconds)
        asyncio.run(run_worker(settings, model, storage, queue))
    finally:
        storage.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    command = build_parser().parse_args(argv).command
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
    if settings.log_level not in ("debug", "trace"):  # not "Found credentials in environment variables." each start
        logging.getLogger("botocore.credentials").setLevel(logging.WARNING)
    if command == "migrate":
        return migrate(settings)
    if command == "worker" and not settings.index_url.get_secret_value():
        print(f"error: a worker takes its jobs from a PostgreSQL index: set {ENV_PREFIX}INDEX_URL", file=sys.stderr)
        return 2
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

    from server.storage import StorageError
    from server.storage_factory import open_storage

    try:  # the data directory, the bucket when blob_url names one, the database (migrated) when index_url does
        open_storage(settings).close()
    except StorageError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2

    from codec.errors import CodecError
    from server.app import DeviceUnavailable, create_app, load_codec

    try:  # before uvicorn starts: a damaged or foreign weights file is one line, not a traceback
        codec = load_codec(settings)
    except (CodecError, DeviceUnavailable) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    if command == "worker":
        return work(settings, codec[0])

    import socket

    import uvicorn

    config = uvicorn.Config(
        create_app(settings, codec),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        http=bounded_http_protocol(settings.max_header_bytes, settings.max_headers),
        h11_max_incomplete_event_size=settings.max_header_bytes,
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
