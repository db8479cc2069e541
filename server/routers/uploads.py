"""Uploads: `POST /encode` starts an encode job; `/jobs/{id}` and its events follow it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from server.deps import (
    EncodeJobsDep,
    ModelDep,
    RootDep,
    ServiceDep,
    StorageDep,
    error_responses,
    require_job_access,
    require_write,
)
from server.encoding import TooManySegments, coded_units, inspect_upload
from server.errors import ApiError
from server.job_store import EncodeJob
from server.routers.images import find_image
from server.schemas import ImageInfo, JobInfo, info_document, job_document
from server.storage import Storage

router = APIRouter()


@router.post(
    "/encode",
    status_code=202,
    response_model=JobInfo,
    dependencies=[Depends(require_write)],
    responses={201: {"model": ImageInfo, "description": "with ?wait=true: the stored image"}}
    | error_responses(400, 401, 413, 415, 422, 429, 500, 503, 507),
    summary="Encode an upload into a layered bitstream",
)
async def encode_image(
    service: ServiceDep,
    model: ModelDep,
    storage: StorageDep,
    jobs: EncodeJobsDep,
    root: RootDep,
    file: Annotated[UploadFile, File(description="PNG, JPEG, WebP, TIFF or BMP")],
    wait: Annotated[bool, Query(description="answer when the image is stored (201), as a plain upload")] = False,
) -> JSONResponse:
    """Accepts the upload as an encode job and answers 202 with the job document and its
    `Location`; follow it at `/jobs/{id}` or `/jobs/{id}/events`. The bitstream is decoded and
    checked before the image becomes visible. With `?wait=true` the answer waits for the image:
    201 with its info document, or the error the job ended with."""
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
    if not wait:
        document = job_document(job, None, root)
        return JSONResponse(document.model_dump(), status_code=202, headers={"Location": document.urls.job})
    job = await jobs.wait(job.id)
    if job.error is not None:
        retry = {"Retry-After": str(settings.retry_after)} if job.error.status in (429, 503) else None
        raise ApiError(job.error.status, job.error.code, job.error.message, retry)
    image = await find_image(storage, job.image_id or "")
    document = info_document(image, root)
    return JSONResponse(document.model_dump(), status_code=201, headers={"Location": document.urls.info})


async def find_job(jobs: EncodeJobsDep, job_id: str) -> EncodeJob:
    """The job of the path, or 404."""
    job = await jobs.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", "no encode job with this id")
    return job


async def job_with_image(storage: Storage, job: EncodeJob, root: str) -> JobInfo:
    image = await run_in_threadpool(storage.get, job.image_id) if job.image_id is not None else None
    return job_document(job, image, root)


@router.get(
    "/jobs/{job_id}",
    response_model=JobInfo,
    dependencies=[Depends(require_job_access)],
    responses=error_responses(401, 404, 503),
    summary="One encode job: state, progress, and the image once done",
)
async def get_job(job: Annotated[EncodeJob, Depends(find_job)], storage: StorageDep, root: RootDep) -> JSONResponse:
    document = await job_with_image(storage, job, root)
    return JSONResponse(document.model_dump(), headers={"Cache-Control": "no-store"})


EVENT_KEEPALIVE_SECONDS = 15.0


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    dependencies=[Depends(require_job_access)],
    responses={200: {"content": {"text/event-stream": {}}}} | error_responses(401, 404, 503),
    summary="The job document as server-sent events, one `job` event per change, until it ends",
)
async def job_events(
    job: Annotated[EncodeJob, Depends(find_job)], jobs: EncodeJobsDep, storage: StorageDep, root: RootDep
) -> StreamingResponse:
    """404 before the stream starts; then the document at once and at every change."""

    async def events() -> AsyncIterator[bytes]:
        changes = jobs.watch(job.id).__aiter__()
        pending: asyncio.Task | None = None
        try:
            while True:
                pending = pending or asyncio.ensure_future(changes.__anext__())
                done, _ = await asyncio.wait({pending}, timeout=EVENT_KEEPALIVE_SECONDS)
                if not done:
                    yield b": keep-alive\n\n"
                    continue
                try:
                    update = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                document = await job_with_image(storage, update, root)
                yield f"event: job\ndata: {document.model_dump_json()}\n\n".encode()
        finally:
            if pending is not None:
                pending.cancel()
            await changes.aclose()

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
