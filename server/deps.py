"""Typed dependencies of the routes: the running service's parts and the access checks.

A route names what it needs (`StorageDep`, `ModelDep`, ...) and gets it, or the
request is answered 503 `not_ready` while the service starts or stops.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from server.decoders import Reconstructions
from server.encode_jobs import EncodeJobs
from server.errors import ApiError
from server.schemas import ErrorBody
from server.service import Service
from server.storage import Storage

if TYPE_CHECKING:
    from codec.model import ScalableCodec


def get_service(connection: HTTPConnection) -> Service:
    return connection.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def _not_ready() -> ApiError:
    return ApiError(503, "not_ready", "the service is starting or stopping")


def _storage(service: ServiceDep) -> Storage:
    if service.storage is None:
        raise _not_ready()
    return service.storage


def _model(service: ServiceDep) -> ScalableCodec:
    if service.model is None:
        raise _not_ready()
    return service.model


def _reconstructions(service: ServiceDep) -> Reconstructions:
    if service.reconstructions is None:
        raise _not_ready()
    return service.reconstructions


def _encode_jobs(service: ServiceDep) -> EncodeJobs:
    if service.encode_jobs is None:
        raise _not_ready()
    return service.encode_jobs


def _root(request: Request) -> str:
    return request.scope.get("root_path", "")


StorageDep = Annotated[Storage, Depends(_storage)]
ModelDep = Annotated["ScalableCodec", Depends(_model)]
ReconstructionsDep = Annotated[Reconstructions, Depends(_reconstructions)]
EncodeJobsDep = Annotated[EncodeJobs, Depends(_encode_jobs)]
# The path prefix a proxy put in front of this server: every URL in an answer starts with it.
RootDep = Annotated[str, Depends(_root)]


def error_responses(*statuses: int) -> dict:
    """The OpenAPI `responses` entry of a route's error statuses."""
    return {status: {"model": ErrorBody} for status in statuses}


# -- access ------------------------------------------------------------------------------------------


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
