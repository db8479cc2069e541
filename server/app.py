"""`create_app(settings)`: the FastAPI app, whose lifespan loads the codec once."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, Response
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codec.errors import CodecError
from server import errors, ws
from server.config import Settings
from server.decoders import Reconstructions
from server.deps import get_service, require_write
from server.encode_jobs import EncodeJobs
from server.errors import as_api_error, error_body, error_response
from server.job_queue import open_job_store
from server.metrics import MetricsMiddleware
from server.pool import ModelPool, PoolBusy
from server.routers import ROUTERS, viewer
from server.service import Service
from server.storage import StorageError
from server.storage_factory import describe, open_storage
from server.web_decoder import WebDecoderFiles
from server.worker import worker_name

if TYPE_CHECKING:
    from codec.model import ScalableCodec

log = logging.getLogger("server")

EXPOSED_HEADERS = ["Content-Range", "ETag", "Accept-Ranges", "Content-Length", "Retry-After", "Location", "X-Layers"]
MULTIPART_ALLOWANCE = 64 * 1024  # boundaries and part headers around the file
DECODER_PIXELS = 64_000_000
JOB_STORE_FILE = "jobs.sqlite"

DESCRIPTION = """
Stores every uploaded image once as a layered bitstream (a container whose every
prefix ending at a layer boundary is itself a valid file) and delivers it
progressively: HTTP byte ranges, decoded pictures, or a WebSocket stream at
`/ws/image/{id}` (protocol in docs/server.md). Every error answers
`{"error": {"code", "message"}}`.
"""


def choose_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


class DeviceUnavailable(Exception):
    """The configured device cannot be used (e.g. `cuda` without a GPU)."""


def load_codec(settings: Settings) -> tuple[ScalableCodec, str]:
    """Torch settings, then the model on its device: WeightsError or DeviceUnavailable when it cannot be."""
    import torch

    from codec.api import load_model

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = choose_device(settings.device)
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("device cuda was requested but torch sees no GPU")
    return load_model(settings.weights, device), device


def _load(service: Service) -> None:
    """Blocking start-up work: the model (unless `create_app` was given it), the storage."""
    settings = service.settings
    if service.model is None:
        service.model, service.device = load_codec(settings)
    model = service.model
    log.info(
        "codec model %s (%s, %d layers) on %s",
        model.model_id.hex(),
        "trained" if model.trained else "UNTRAINED",
        model.config.layers,
        service.device,
    )
    storage = open_storage(settings)
    swept = storage.sweep()
    if swept:
        log.info("removed %d orphaned blobs from %s", swept, settings.blob_url or settings.data_dir)
    log.info("data in %s: %d images", describe(settings), storage.count())
    service.storage = storage


class RedactQueryKeys(logging.Filter):
    """Masks the value of every `…key=` or `…token=` query parameter in uvicorn's log lines (the access
    line of each request, the `WebSocket … [accepted]` line of each stream). The service reads keys from
    headers only, but an old viewer or a hand-written URL may still carry one."""

    PATTERN = re.compile(r"([?&][^=&#\s\"]*(?:key|token)=)[^&#\s\"]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.PATTERN.sub(r"\1[redacted]", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        return True


class ClientFaultsInOneLine(logging.Filter):
    """uvicorn logs some faults of the client with `logger.exception`: a traceback per bad frame. Those
    become one warning line without the traceback (the client gets its close code as before)."""

    LINES = {
        # websockets_sansio_impl: a text frame that is not UTF-8; uvicorn closes with 1007
        "Invalid UTF-8 sequence received from client.": (
            "a WebSocket client sent a text message that is not UTF-8; closed with 1007"
        ),
    }

    def filter(self, record: logging.LogRecord) -> bool:
        line = self.LINES.get(record.msg) if isinstance(record.msg, str) else None
        if line is not None:
            record.msg, record.args = line, ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def redact_uvicorn_logs() -> None:
    """The filters of uvicorn's loggers: query keys masked, client faults in one line (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        for kind in (RedactQueryKeys, ClientFaultsInOneLine):
            if not any(isinstance(f, kind) for f in logger.filters):
                logger.addFilter(kind())


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    settings = service.settings
    redact_uvicorn_logs()  # here, not in create_app: uvicorn configures its loggers after create_app
    try:
        await run_in_threadpool(_load, service)
        assert service.storage is not None
        job_store = await run_in_threadpool(
            open_job_store, service.storage, settings.data_dir / JOB_STORE_FILE, settings.job_lease_seconds
        )
    except (CodecError, StorageError, DeviceUnavailable) as error:  # a clear line in the log, then uvicorn exits
        log.error("cannot start: %s", error)
        raise
    assert service.storage is not None
    service.pool = ModelPool(settings.workers, settings.queue_size, settings.retry_after, service.metrics)
    service.reconstructions = Reconstructions(
        service.model,
        service.storage,
        service.pool,
        service.metrics,
        settings.decoder_cache,
        DECODER_PIXELS,
        settings.picture_cache_bytes,
    )
    service.encode_jobs = EncodeJobs(
        job_store,
        service.model,
        service.storage,
        service.pool,
        service.reconstructions,
        service.metrics,
        settings.effort,
    )
    await run_in_threadpool(service.encode_jobs.recover)
    service.web_decoder = WebDecoderFiles(service.model)
    stop_claiming = asyncio.Event()
    claiming = None
    if service.encode_jobs.queue is not None and settings.claim_jobs:  # its model workers take queued jobs too
        claiming = asyncio.create_task(service.encode_jobs.serve_queue(worker_name(), stop_claiming))
    try:
        yield
    finally:
        pool, storage, jobs = service.pool, service.storage, service.encode_jobs
        service.model = service.pool = service.reconstructions = service.encode_jobs = service.web_decoder = None
        stop_claiming.set()
        if claiming is not None:
            await claiming
        pool.shutdown()
        await jobs.drain()
        job_store.close()
        storage.close()
        service.storage = None


class UploadLimit:
    """413 for a POST /encode whose body exceeds the upload limit, before it is parsed or buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.upload_bytes = max_bytes
        self.max_bytes = max_bytes + MULTIPART_ALLOWANCE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the framework made of the error, the answer is our 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(error_body("upload_too_large", f"uploads are limited to {self.upload_bytes} bytes")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class UploadGate:
    """POST /encode: 401 for a missing or wrong write key, then 429 for a full model pool, decided from
    the request head before a byte of the body is read (the route's own checks come only after the
    multipart body, up to `max_upload_bytes`, has been received and parsed). The answer is sent while
    the client may still be sending; uvicorn reads and discards the rest of that body."""

    def __init__(self, app: ASGIApp, path: str = "/encode") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and _route_path(scope) == self.path:
            connection = HTTPConnection(scope)
            try:
                require_write(connection)
                get_service(connection).refuse_if_busy()
            except (errors.ApiError, PoolBusy) as error:
                answer = as_api_error(error)
                assert answer is not None
                response = error_response(answer.status, answer.code, answer.message, answer.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the root path a proxy may put in front."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class HeadLikeGet:
    """HEAD wherever GET works (RFC 9110 9.3.2): a HEAD that no route declares is answered as the GET
    would be, status and headers (Content-Length included), without the body. Routes that declare HEAD
    themselves (the bitstream, static files) answer it as they do."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    def _matches(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in self.router.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or self._matches(scope):
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET"}
        if not self._matches(as_get):
            await self.app(scope, receive, send)  # no GET either: 404 or 405 as usual
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(as_get, receive, headers_only)


class ViewerFiles(StaticFiles):
    """static/ with the viewer's policy on every answer (304s too): the CSP of `/` (frame-ancestors
    'none' among it) and nosniff."""

    def file_response(self, *args, **kwargs) -> Response:  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        response.headers.update(viewer.VIEWER_HEADERS)
        return response


DOCS_ASSETS = "/docs/assets"


def docs_assets_dir() -> Path:
    """Swagger UI and ReDoc as the pinned `fastapi-offline` package ships them (no CDN at run time)."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def add_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc` whose scripts, styles and icon come from this server, under
    `/docs/assets/`: FastAPI's own pages load them from a CDN and stay blank on an air-gapped machine."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets_dir(), check_dir=False), name="docs-assets")

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "")
        return f"{root}{app.openapi_url}", f"{root}{DOCS_ASSETS}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi, assets = urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        openapi, assets = urls(request)
        return get_redoc_html(
            openapi_url=openapi,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )


class ExplicitCORS(CORSMiddleware):
    """Starlette's CORS, except that a refused preflight answers the JSON error shape like every other error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        kept = {name: value for name, value in response.headers.items() if not name.startswith("content-")}
        return error_response(400, "bad_request", bytes(response.body).decode(), kept)


def create_app(settings: Settings | None = None, codec: tuple[ScalableCodec, str] | None = None) -> FastAPI:
    """`codec`: the model and its device, already loaded by `load_codec` (else the lifespan loads them)."""
    settings = settings or Settings()
    app = FastAPI(
        title="Scalable codec progressive-decoding service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # add_docs: the same pages without a CDN
        redoc_url=None,
    )
    app.state.service = Service(settings)
    if codec is not None:
        app.state.service.model, app.state.service.device = codec
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(ws.router)
    add_docs(app)
    app.mount("/static", ViewerFiles(directory=settings.static_dir, check_dir=False), name="static")
    app.add_middleware(HeadLikeGet, router=app.router)
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(UploadGate)  # outside UploadLimit: a refused upload's body is never counted or read
    if settings.cors_origins:
        app.add_middleware(
            ExplicitCORS,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Range", "If-Range", "If-None-Match", "If-Match", "Content-Type"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    app.add_middleware(MetricsMiddleware, metrics=app.state.service.metrics)
    return app
