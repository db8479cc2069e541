"""Every error answers `{"error": {"code", "message"}}` (`protocol.error_body`); no traceback ever reaches a client.

The table of codes is in docs/server.md. Library exceptions are mapped here,
so routes can let them propagate.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from codec.errors import CodecError, InvalidImageError, ModelMismatchError
from codec.imageio import NonFinitePixels
from protocol import error_body
from server.encoding import TooManyPixels, UnsupportedFormat, VerificationError
from server.pool import PoolBusy
from server.storage import ImageDeleted, StorageError, StorageFullError

log = logging.getLogger("server")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    412: "precondition_failed",
    413: "content_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_error",
    429: "busy",
    500: "internal_error",
    503: "unavailable",
    507: "insufficient_storage",
}


class ApiError(Exception):
    """An answer with a status, a stable machine-readable code and a human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def code_for_status(status: int) -> str:
    return _STATUS_CODES.get(status, "error" if status < 500 else "internal_error")


def as_api_error(error: Exception) -> ApiError | None:
    """The answer for a library or storage exception, or None for a bug."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, PoolBusy):
        return ApiError(429, "busy", "the server is busy; retry later", {"Retry-After": str(error.retry_after)})
    if isinstance(error, UnsupportedFormat):
        return ApiError(415, "unsupported_format", str(error))
    if isinstance(error, TooManyPixels):
        return ApiError(413, "too_many_pixels", str(error))
    if isinstance(error, ImageDeleted):
        return ApiError(404, "image_not_found", "no image with this id")
    if isinstance(error, StorageFullError):
        return ApiError(507, "insufficient_storage", str(error))
    if isinstance(error, StorageError):
        return ApiError(503, "storage_unavailable", str(error))
    if isinstance(error, NonFinitePixels):  # the one invalid_image whose reason is the client's to know
        return ApiError(400, "invalid_image", f"{error}; float pixels must be finite")
    if isinstance(error, InvalidImageError):
        return ApiError(400, "invalid_image", "the upload is damaged or cannot be decoded as an image")
    if isinstance(error, VerificationError):
        log.error("a new bitstream failed its verification: %s", error)
        return ApiError(
            500, "verification_failed", "the new bitstream did not decode back to the upload; nothing was stored"
        )
    if isinstance(error, ModelMismatchError):
        return ApiError(409, "model_mismatch", "the bitstream was written with other weights than the ones loaded")
    if isinstance(error, CodecError):
        log.error("stored bitstream fails to decode: %s", error)
        return ApiError(500, "corrupt_bitstream", "the stored bitstream is damaged and cannot be decoded")
    return None


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the JSON error shape."""

    async def mapped(_: Request, error: Exception) -> JSONResponse:
        answer = as_api_error(error)
        assert answer is not None
        return error_response(answer.status, answer.code, answer.message, answer.headers)

    for kind in (ApiError, PoolBusy, UnsupportedFormat, TooManyPixels, StorageError, CodecError):
        app.add_exception_handler(kind, mapped)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        status = error.status_code
        message = error.detail if isinstance(error.detail, str) else HTTPStatus(status).phrase
        if status == 404 and message == "Not Found":
            message = "no such path"
        return error_response(status, code_for_status(status), message, getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors()[:10]:
            where = ".".join(str(part) for part in item.get("loc", ()) if part not in ("query", "path", "body"))
            problems.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
        return error_response(422, "validation_error", "; ".join(problems) or "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        mapped = as_api_error(error)
        if mapped is not None:
            return error_response(mapped.status, mapped.code, mapped.message, mapped.headers)
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
