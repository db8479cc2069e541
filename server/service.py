"""What one running app holds (model, storage, pool, caches), and the access checks routes depend on."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from server.config import Settings
from server.decoders import Reconstructions
from server.errors import ApiError
from server.metrics import Metrics
from server.pool import ModelPool, PoolBusy
from server.storage import Storage

if TYPE_CHECKING:
    from codec.model import ScalableCodec
    from server.encode_jobs import EncodeJobs


@dataclass
class Service:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    model: ScalableCodec | None = None
    device: str = "cpu"
    storage: Storage | None = None
    pool: ModelPool | None = None
    reconstructions: Reconstructions | None = None
    encode_jobs: EncodeJobs | None = None
    streams: int = 0  # open WebSocket streams

    @property
    def ready(self) -> bool:
        return self.model is not None and self.storage is not None and self.pool is not None

    def parts(self) -> tuple[ScalableCodec, Storage, ModelPool, Reconstructions]:
        if self.model is None or self.storage is None or self.pool is None or self.reconstructions is None:
            raise ApiError(503, "not_ready", "the service is starting or stopping")
        return self.model, self.storage, self.pool, self.reconstructions

    def refuse_if_busy(self) -> None:
        """PoolBusy (429) while every worker and queue slot is taken: an upload asks before its body is
        read and before it is inspected, not only when its encode job would be refused."""
        pool = self.pool
        if pool is not None and pool.admitted >= pool.capacity:
            self.metrics.rejected.inc()
            raise PoolBusy(pool.retry_after)


def get_service(connection: HTTPConnection) -> Service:
    return connection.app.state.service


def _bearer(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def _matches(token: str | None, *keys: object) -> bool:
    return token is not None and any(
        key is not None and hmac.compare_digest(token.encode(), key.get_secret_value().encode())  # type: ignore[attr-defined]
        for key in keys
    )


def _refuse(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="codec-server"'})


def require_write(connection: HTTPConnection) -> None:
    """POST /encode and DELETE: `Authorization: Bearer <write_key>` when a write key is set."""
    settings = get_service(connection).settings
    if settings.write_key is not None and not _matches(_bearer(connection), settings.write_key):
        raise _refuse("this request needs the write key: Authorization: Bearer <key>")


def read_allowed(connection: HTTPConnection, offered_key: str | None = None) -> bool:
    """Reads are public unless a read key is set; then only the read key reads (the write key does not:
    distinct roles). The key comes from `Authorization: Bearer`, or `offered_key` (a WebSocket's
    `Sec-WebSocket-Protocol`); never from the URL, which access logs keep."""
    settings = get_service(connection).settings
    if settings.read_key is None:
        return True
    return _matches(offered_key if offered_key is not None else _bearer(connection), settings.read_key)


def require_job_access(connection: HTTPConnection) -> None:
    """An encode job is read with the key that started it (the write key) or whatever reads images."""
    settings = get_service(connection).settings
    if not read_allowed(connection) and not _matches(_bearer(connection), settings.write_key):
        raise _refuse("this job needs the write key or the read key: Authorization: Bearer <key>")


def require_read(connection: HTTPConnection) -> None:
    """Reads need `Authorization: Bearer <read_key>` when a read key is set."""
    if not read_allowed(connection):
        raise _refuse("this request needs the read key: Authorization: Bearer <key>")
