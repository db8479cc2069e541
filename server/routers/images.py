"""The image resource: its picture, info document and bitstream, deletion and the list."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from codec.api import check_region
from server import ranges
from server.decoders import PICTURE_FORMATS
from server.deps import (
    ReconstructionsDep,
    RootDep,
    ServiceDep,
    StorageDep,
    error_responses,
    require_read,
    require_write,
)
from server.errors import ApiError
from server.schemas import ImageInfo, ImagePage, info_document, summary
from server.storage import Storage, StoredImage, valid_id

router = APIRouter()

IMMUTABLE = "public, max-age=31536000, immutable"
BITSTREAM_TYPE = "application/octet-stream"
STREAM_CHUNK = 1024 * 1024
SQLITE_INTEGER_MAX = 2**63 - 1  # a larger Python int raises OverflowError in the index query


async def find_image(storage: Storage, image_id: str) -> StoredImage:
    """The stored image, or 404 for an unknown or malformed id (both look the same)."""
    image = await run_in_threadpool(storage.get, image_id) if valid_id(image_id) else None
    if image is None:
        raise ApiError(404, "image_not_found", "no image with this id")
    return image


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
        **error_responses(400, 404, 409, 422, 429, 500),
    },
    response_class=Response,
    summary="The reconstruction from the first n layers",
)
async def get_picture(
    request: Request,
    storage: StorageDep,
    reconstructions: ReconstructionsDep,
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
    responses=error_responses(404),
    summary="The discovery document: size, model, layer table and URLs",
)
async def get_info(request: Request, storage: StorageDep, root: RootDep, image_id: str) -> Response:
    image = await find_image(storage, image_id)
    etag = f'"{image.sha256[:32]}-info"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    condition = request.headers.get("if-none-match")
    if condition is not None and ranges.if_none_match(condition, etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(info_document(image, root).model_dump(), headers=headers)


_BITSTREAM_ROUTE = {
    "dependencies": [Depends(require_read)],
    "response_class": Response,
    "responses": {
        200: {"content": {BITSTREAM_TYPE: {}}, "description": "the whole container"},
        206: {"description": "one range, or multipart/byteranges for several"},
        304: {"description": "If-None-Match matched"},
        **error_responses(404, 412, 416),
    },
}


# Two registrations, not one api_route: each method needs its own OpenAPI operation id.
@router.head("/image/{image_id}/bitstream", summary="The headers of the bitstream", **_BITSTREAM_ROUTE)
@router.get("/image/{image_id}/bitstream", summary="The container bytes, with RFC 9110 byte ranges", **_BITSTREAM_ROUTE)
async def get_bitstream(request: Request, service: ServiceDep, storage: StorageDep, image_id: str) -> Response:
    """Any prefix ending at a layer boundary (`cumulative_bytes` in the info document) is a valid file."""
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
    responses=error_responses(401, 404),
    summary="Delete an image and its bitstream",
)
async def delete_image(storage: StorageDep, reconstructions: ReconstructionsDep, image_id: str) -> Response:
    deleted = await run_in_threadpool(storage.delete, image_id)
    if not deleted:
        raise ApiError(404, "image_not_found", "no image with this id")
    reconstructions.forget(image_id)
    return Response(status_code=204)


@router.get(
    "/images",
    response_model=ImagePage,
    dependencies=[Depends(require_read)],
    responses=error_responses(403, 422),
    summary="Stored images, newest first, a page at a time",
)
async def list_images(
    service: ServiceDep,
    root: RootDep,
    limit: Annotated[int | None, Query(description="page size (default and maximum: settings)")] = None,
    cursor: Annotated[str | None, Query(description="`next` of the previous page", max_length=20)] = None,
) -> JSONResponse:
    settings = service.settings
    if not settings.list_enabled:
        raise ApiError(403, "listing_disabled", "listing images is turned off on this server")
    storage = service.storage
    if storage is None:
        raise ApiError(503, "not_ready", "the service is starting or stopping")
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
    page = ImagePage(
        images=[summary(image, root) for image in images],
        count=total,
        next=None if following is None else f"{root}/images?limit={size}&cursor={following}",
    )
    return JSONResponse(page.model_dump())
