"""HTTP endpoints: validation and status codes; the work happens in storage, jobs, decoders and encoding."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from codec.api import check_region
from server import ranges
from server.decoders import PICTURE_FORMATS
from server.encoding import TooManySegments, coded_units, inspect_upload
from server.errors import ApiError
from server.job_store import EncodeJob
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.schemas import (
    ErrorBody,
    Health,
    ImageInfo,
    ImagePage,
    JobInfo,
    Ready,
    info_document,
    job_document,
    summary,
)
from server.service import Service, get_service, require_job_access, require_read, require_write
from server.storage import Storage, StorageError, StoredImage, valid_id

router = APIRouter()

IMMUTABLE = "public, max-age=31536000, immutable"
BITSTREAM_TYPE = "application/octet-stream"
STREAM_CHUNK = 1024 * 1024
SQLITE_INTEGER_MAX = 2**63 - 1  # a larger Python int raises OverflowError in the index query
ServiceDep = Annotated[Service, Depends(get_service)]


def _errors(*statuses: int) -> dict:
    return {status: {"model": ErrorBody} for status in statuses}


def _root(request: Request) -> str:
    return request.scope.get("root_path", "")


async def find_image(storage: Storage, image_id: str) -> StoredImage:
    """The stored image, or 404 for an unknown or malformed id (both look the same)."""
    image = await run_in_threadpool(storage.get, image_id) if valid_id(image_id) else None
    if image is None:
        raise ApiError(404, "image_not_found", "no image with this id")
    return image


@router.post(
    "/encode",
    status_code=202,
    response_model=JobInfo,
    dependencies=[Depends(require_write)],
    responses={201: {"model": ImageInfo, "description": "with ?wait=true: the stored image"}}
    | _errors(400, 401, 413, 415, 422, 429, 500, 503, 507),
    summary="Encode an upload into a layered bitstream",
)
async def encode_image(
    request: Request,
    service: ServiceDep,
    file: Annotated[UploadFile, File(description="PNG, JPEG, WebP, TIFF or BMP")],
    wait: Annotated[bool, Query(description="answer when the image is stored (201), as a plain upload")] = False,
) -> JSONResponse:
    """Accepts the upload as an encode job and answers 202 with the job document and its
    `Location`; follow it at `/jobs/{id}` or `/jobs/{id}/events`. The bitstream is decoded and
    checked before the image becomes visible. With `?wait=true` the answer waits for the image:
    201 with its info document, or the error the job ended with."""
    model, _, _, _ = service.parts()
    jobs = service.encode_jobs
    assert jobs is not None
    settings = service.settings
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise ApiError(413, "upload_too_large", f"uploads are limited to {settings.max_upload_bytes} bytes")
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ApiError(413, "upload_too_large", f"uploads are limited to {settings.max_upload_bytes} bytes")
    service.refuse_if_busy()  # the pool may have filled while the body arrived: 429 before the inspection
    try:
        facts = await run_in_threadpool(inspect_upload, data, settings.allowed_formats, settings.max_pixels)
    except TooManySegments as error:
        raise ApiError(400, "too_many_segments", str(error)) from None
    job = await jobs.start(data, facts, coded_units(facts.width, facts.height, model))
    root = _root(request)
    if not wait:
        document = job_document(job, None, root)
        return JSONResponse(document.model_dump(), status_code=202, headers={"Location": document.urls.job})
    job = await jobs.wait(job.id)
    if job.error is not None:
        retry = {"Retry-After": str(settings.retry_after)} if job.error.status in (429, 503) else None
        raise ApiError(job.error.status, job.error.code, job.error.message, retry)
    image = await find_image(service.storage, job.image_id or "")
    document = info_document(image, root)
    return JSONResponse(document.model_dump(), status_code=201, headers={"Location": document.urls.info})


async def find_job(service: Service, job_id: str) -> EncodeJob:
    jobs = service.encode_jobs
    if jobs is None:
        raise ApiError(503, "not_ready", "the service is starting or stopping")
    job = await jobs.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", "no encode job with this id")
    return job


async def job_with_image(service: Service, job: EncodeJob, root: str) -> JobInfo:
    image = None
    if job.image_id is not None and service.storage is not None:
        image = await run_in_threadpool(service.storage.get, job.image_id)
    return job_document(job, image, root)


@router.get(
    "/jobs/{job_id}",
    response_model=JobInfo,
    dependencies=[Depends(require_job_access)],
    responses=_errors(401, 404, 503),
    summary="One encode job: state, progress, and the image once done",
)
async def get_job(request: Request, service: ServiceDep, job_id: str) -> JSONResponse:
    job = await find_job(service, job_id)
    document = await job_with_image(service, job, _root(request))
    return JSONResponse(document.model_dump(), headers={"Cache-Control": "no-store"})


EVENT_KEEPALIVE_SECONDS = 15.0


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    dependencies=[Depends(require_job_access)],
    responses={200: {"content": {"text/event-stream": {}}}} | _errors(401, 404, 503),
    summary="The job document as server-sent events, one `job` event per change, until it ends",
)
async def job_events(request: Request, service: ServiceDep, job_id: str) -> StreamingResponse:
    await find_job(service, job_id)  # 404 before the stream starts
    jobs = service.encode_jobs
    assert jobs is not None
    root = _root(request)

    async def events() -> AsyncIterator[bytes]:
        changes = jobs.watch(job_id).__aiter__()
        pending: asyncio.Task | None = None
        try:
            while True:
                pending = pending or asyncio.ensure_future(changes.__anext__())
                done, _ = await asyncio.wait({pending}, timeout=EVENT_KEEPALIVE_SECONDS)
                if not done:
                    yield b": keep-alive\n\n"
                    continue
                try:
                    job = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                document = await job_with_image(service, job, root)
                yield f"event: job\ndata: {document.model_dump_json()}\n\n".encode()
        finally:
            if pending is not None:
                pending.cancel()
            await changes.aclose()

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


REGION = re.compile(r"[0-9]{1,7}(,[0-9]{1,7}){3}")


def parse_region(text: str | None, width: int, height: int) -> tuple[int, int, int, int] | None:
    """`x,y,w,h` inside the picture, or None for the whole picture; 400 for malformed, 422 for outside."""
    if text is None:
        return None
    if not REGION.fullmatch(text):
        raise ApiError(400, "bad_region", "region must be x,y,w,h: four non-negative integers")
    try:
        return check_region(tuple(int(p) for p in text.split(",")), width, height)
    except ValueError as error:
        raise ApiError(422, "region_out_of_bounds", str(error)) from None


@router.get(
    "/image/{image_id}",
    dependencies=[Depends(require_read)],
    responses={
        200: {"content": {mime: {} for _, mime in PICTURE_FORMATS.values()}},
        304: {"description": "If-None-Match matched"},
        **_errors(400, 404, 409, 422, 429, 500),
    },
    response_class=Response,
    summary="The reconstruction from the first n layers",
)
async def get_picture(
    request: Request,
    service: ServiceDep,
    image_id: str,
    layers: Annotated[int | None, Query(description="layers to decode, 1..layer count (default: all)")] = None,
    format: Annotated[Literal["png", "webp", "jpeg"], Query(description="picture format")] = "png",
    region: Annotated[
        str | None,
        Query(
            description="x,y,w,h in pixels: only this rectangle, decoding only the tiles it touches",
            max_length=64,
        ),
    ] = None,
) -> Response:
    """Decoding is incremental and cached: asking for n+1 layers after n costs one layer."""
    _, storage, _, reconstructions = service.parts()
    image = await find_image(storage, image_id)
    count = image.layer_count if layers is None else layers
    if not 1 <= count <= image.layer_count:
        raise ApiError(422, "layers_out_of_range", f"layers must be within 1..{image.layer_count}")
    rectangle = parse_region(region, image.width, image.height)
    etag = f'"{image.sha256[:32]}-{count}-{format}{"-" + ",".join(map(str, rectangle)) if rectangle else ""}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "X-Layers": str(count)}
    condition = request.headers.get("if-none-match")
    if condition is not None and ranges.if_none_match(condition, etag):
        return Response(status_code=304, headers=headers)
    data = await reconstructions.picture(image, count, format, region=rectangle)
    return Response(data, media_type=PICTURE_FORMATS[format][1], headers=headers)


@router.get(
    "/image/{image_id}/info",
    response_model=ImageInfo,
    dependencies=[Depends(require_read)],
    responses=_errors(404),
    summary="The discovery document: size, model, layer table and URLs",
)
async def get_info(request: Request, service: ServiceDep, image_id: str) -> Response:
    _, storage, _, _ = service.parts()
    image = await find_image(storage, image_id)
    etag = f'"{image.sha256[:32]}-info"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    condition = request.headers.get("if-none-match")
    if condition is not None and ranges.if_none_match(condition, etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(info_document(image, _root(request)).model_dump(), headers=headers)


_BITSTREAM_ROUTE = {
    "dependencies": [Depends(require_read)],
    "response_class": Response,
    "responses": {
        200: {"content": {BITSTREAM_TYPE: {}}, "description": "the whole container"},
        206: {"description": "one range, or multipart/byteranges for several"},
        304: {"description": "If-None-Match matched"},
        **_errors(404, 412, 416),
    },
}


# Two registrations, not one api_route: each method needs its own OpenAPI operation id.
@router.head("/image/{image_id}/bitstream", summary="The headers of the bitstream", **_BITSTREAM_ROUTE)
@router.get("/image/{image_id}/bitstream", summary="The container bytes, with RFC 9110 byte ranges", **_BITSTREAM_ROUTE)
async def get_bitstream(request: Request, service: ServiceDep, image_id: str) -> Response:
    """Any prefix ending at a layer boundary (`cumulative_bytes` in the info document) is a valid file."""
    _, storage, _, _ = service.parts()
    image = await find_image(storage, image_id)
    size = image.total_bytes
    headers = {"Accept-Ranges": "bytes", "ETag": image.etag, "Cache-Control": IMMUTABLE}
    selection = ranges.select(
        request.method,
        size,
        image.etag,
        range_header=request.headers.get("range"),
        if_range_header=request.headers.get("if-range"),
        if_none_match_header=request.headers.get("if-none-match"),
        if_match_header=request.headers.get("if-match"),
        max_ranges=service.settings.max_ranges,
    )
    if selection.status == 304:
        return Response(status_code=304, headers=headers)
    if selection.status == 412:
        raise ApiError(412, "precondition_failed", "If-Match does not match the current entity tag")
    if selection.status == 416:
        message = (
            f"at most {service.settings.max_ranges} ranges per request"
            if selection.too_many
            else f"no satisfiable range: the bitstream has {size} bytes"
        )
        raise ApiError(
            416, "range_not_satisfiable", message, {**headers, "Content-Range": ranges.unsatisfied_range(size)}
        )
    head_only = request.method == "HEAD"
    if selection.status == 200:
        headers["Content-Length"] = str(size)
        if head_only:
            return Response(status_code=200, headers=headers, media_type=BITSTREAM_TYPE)
        if size <= STREAM_CHUNK:
            body = await _read_exact(storage, image, 0, size)
            return Response(body, status_code=200, headers=headers, media_type=BITSTREAM_TYPE)
        return StreamingResponse(_stream(storage, image, 0, size), headers=headers, media_type=BITSTREAM_TYPE)
    if len(selection.ranges) == 1:
        (only,) = selection.ranges
        body = await _read_exact(storage, image, only.start, only.end + 1)
        headers["Content-Range"] = only.content_range(size)
        return Response(body, status_code=206, headers=headers, media_type=BITSTREAM_TYPE)
    plan = ranges.multipart_body(selection.ranges, size, BITSTREAM_TYPE, secrets.token_hex(16))
    pieces = []
    for part in plan.parts:
        pieces.append(part.head)
        pieces.append(await _read_exact(storage, image, part.range.start, part.range.end + 1))
    pieces.append(plan.tail)
    body = b"".join(pieces)
    assert len(body) == plan.content_length
    return Response(body, status_code=206, headers=headers, media_type=plan.content_type)


async def _read_exact(storage: Storage, image: StoredImage, start: int, end: int) -> bytes:
    data = await run_in_threadpool(storage.read, image, start, end)
    if len(data) != end - start:
        raise ApiError(500, "corrupt_bitstream", "the stored bitstream is shorter than its index says")
    return data


async def _stream(storage: Storage, image: StoredImage, start: int, end: int) -> AsyncIterator[bytes]:
    position = start
    while position < end:
        chunk = await _read_exact(storage, image, position, min(end, position + STREAM_CHUNK))
        position += len(chunk)
        yield chunk


@router.delete(
    "/image/{image_id}",
    status_code=204,
    dependencies=[Depends(require_write)],
    responses=_errors(401, 404),
    summary="Delete an image and its bitstream",
)
async def delete_image(service: ServiceDep, image_id: str) -> Response:
    _, storage, _, reconstructions = service.parts()
    deleted = await run_in_threadpool(storage.delete, image_id)
    if not deleted:
        raise ApiError(404, "image_not_found", "no image with this id")
    reconstructions.forget(image_id)
    return Response(status_code=204)


@router.get(
    "/images",
    response_model=ImagePage,
    dependencies=[Depends(require_read)],
    responses=_errors(403, 422),
    summary="Stored images, newest first, a page at a time",
)
async def list_images(
    request: Request,
    service: ServiceDep,
    limit: Annotated[int | None, Query(description="page size (default and maximum: settings)")] = None,
    cursor: Annotated[str | None, Query(description="`next` of the previous page", max_length=20)] = None,
) -> JSONResponse:
    settings = service.settings
    if not settings.list_enabled:
        raise ApiError(403, "listing_disabled", "listing images is turned off on this server")
    _, storage, _, _ = service.parts()
    size = settings.list_page_size if limit is None else limit
    if not 1 <= size <= settings.list_max_page_size:
        raise ApiError(422, "validation_error", f"limit must be within 1..{settings.list_max_page_size}")
    after = None
    if cursor is not None:
        if not cursor.isascii() or not cursor.isdigit() or int(cursor) > SQLITE_INTEGER_MAX:  # SQLite overflows
            raise ApiError(422, "invalid_cursor", "cursor must be the `next` value of a previous page")
        after = int(cursor)
    images, following = await run_in_threadpool(storage.page, size, after)
    total = await run_in_threadpool(storage.count)
    root = _root(request)
    page = ImagePage(
        images=[summary(image, root) for image in images],
        count=total,
        next=None if following is None else f"{root}/images?limit={size}&cursor={following}",
    )
    return JSONResponse(page.model_dump())


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Ready, responses=_errors(503), summary="Readiness: model loaded, storage writable")
async def ready(service: ServiceDep) -> Ready:
    if not service.ready or service.model is None or service.storage is None:
        raise ApiError(503, "not_ready", "the model is not loaded")
    try:
        await run_in_threadpool(service.storage.check_writable)
    except StorageError as error:
        raise ApiError(503, "not_ready", f"storage is not writable: {error}") from error
    model = service.model
    return Ready(
        status="ready",
        model=model.model_id.hex(),
        trained=bool(getattr(model, "trained", False)),
        device=service.device,
        layers=model.config.layers,
    )


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(service: ServiceDep) -> Response:
    return Response(service.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


# The viewer may talk to this server only: no other origin is fetched, framed or scripted.
VIEWER_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


@router.get("/", response_class=FileResponse, include_in_schema=False)
async def viewer(service: ServiceDep) -> FileResponse:
    index = service.settings.static_dir / "index.html"
    if not index.is_file():
        raise ApiError(404, "viewer_missing", "the viewer (static/index.html) is not installed")
    return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache", **VIEWER_HEADERS})
