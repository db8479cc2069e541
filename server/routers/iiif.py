"""IIIF Image API 3.0: info.json and `{region}/{size}/{rotation}/{quality}.{format}` of every stored image.

Any IIIF client (OpenSeadragon, Mirador, the Universal Viewer) reads the service with nothing written for us.
Parsing and geometry are in server/iiif.py; docs/iiif.md says what is served.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Awaitable, Callable

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from PIL import Image
from starlette.concurrency import run_in_threadpool

from codec.container import DEFAULT_TILE_SIZE
from server import iiif, ranges
from server.deps import ReconstructionsDep, StorageDep, error_responses, require_read
from server.errors import ApiError, as_api_error, error_response
from server.routers.images import IMMUTABLE, find_image

log = logging.getLogger("server")

CORS = {"Access-Control-Allow-Origin": "*"}
# IIIF turns clockwise; Pillow's ROTATE_n turn counter-clockwise.
CLOCKWISE = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}


class IiifRoute(APIRoute):
    """Every answer of these routes, errors, refusals of `require_read` and bugs too, carries
    `Access-Control-Allow-Origin: *`: IIIF viewers are pages of other origins."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as error:
                mapped = as_api_error(error)
                if mapped is None:
                    log.exception("unhandled error")
                    mapped = ApiError(500, "internal_error", "internal server error")
                response = error_response(mapped.status, mapped.code, mapped.message, mapped.headers)
            response.headers.update(CORS)
            return response

        return answer


router = APIRouter(prefix="/iiif/3", route_class=IiifRoute, tags=["iiif"], dependencies=[Depends(require_read)])


def base_uri(request: Request, image_id: str) -> str:
    """The image's IIIF base URI, absolute: a proxy's root path is in `request.base_url`."""
    return f"{str(request.base_url).rstrip('/')}/iiif/3/{image_id}"


def not_modified(request: Request, etag: str, headers: dict[str, str]) -> Response | None:
    condition = request.headers.get("if-none-match")
    if condition is not None and ranges.if_none_match(condition, etag):
        return Response(status_code=304, headers=headers)
    return None


@router.get("/{image_id}", status_code=303, responses=error_responses(404), summary="Redirect to info.json")
async def get_base(request: Request, storage: StorageDep, image_id: str) -> Response:
    await find_image(storage, image_id)
    return RedirectResponse(f"{base_uri(request, image_id)}/info.json", status_code=303)


@router.get(
    "/{image_id}/info.json",
    responses={304: {"description": "If-None-Match matched"}, **error_responses(401, 404)},
    summary="The IIIF Image Information document",
)
async def get_info(request: Request, storage: StorageDep, image_id: str) -> Response:
    """JSON-LD when the client's Accept asks for it, plain JSON otherwise, as the spec says."""
    image = await find_image(storage, image_id)
    document = iiif.info_document(base_uri(request, image_id), image.width, image.height, DEFAULT_TILE_SIZE)
    media_type = iiif.JSON_LD if "application/ld+json" in request.headers.get("accept", "") else "application/json"
    tag = hashlib.sha256(f"{document['id']} {media_type}".encode()).hexdigest()[:16]
    etag = f'"{image.sha256[:32]}-info-{tag}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "Vary": "Accept"}
    if (answer := not_modified(request, etag, headers)) is not None:
        return answer
    return JSONResponse(document, media_type=media_type, headers=headers)


@router.get(
    "/{image_id}/{region}/{size}/{rotation}/{quality_format}",
    response_class=Response,
    responses={
        200: {"content": {mime: {} for _, mime in iiif.FORMATS.values()}},
        304: {"description": "If-None-Match matched"},
        **error_responses(400, 401, 404, 501),
    },
    summary="IIIF image request: region/size/rotation/quality.format (grammar: docs/iiif.md)",
)
async def get_image(
    request: Request,
    storage: StorageDep,
    reconstructions: ReconstructionsDep,
    image_id: str,
    region: str,
    size: str,
    rotation: str,
    quality_format: str,
) -> Response:
    """Decodes only the tiles the region touches, with the layers the measured rule gives for its scale."""
    image = await find_image(storage, image_id)
    box = iiif.parse_region(region, image.width, image.height)
    output = iiif.parse_size(size, box[2], box[3], iiif.max_area(image.width, image.height))
    turn = iiif.parse_rotation(rotation)
    quality, fmt = iiif.parse_quality_format(quality_format)
    iiif.check_fits(output, fmt)
    layers = iiif.layers_for(image.layer_count, box, output)
    canonical = f"{','.join(map(str, box))}-{output[0]},{output[1]}-{'!' if turn.mirror else ''}{turn.degrees}"
    etag = f'"{image.sha256[:32]}-iiif-{canonical}-{quality}.{fmt}-{layers}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "X-Layers": str(layers)}
    if (answer := not_modified(request, etag, headers)) is not None:
        return answer
    pixels = await reconstructions.pixels(image, layers, region=box)
    data = await run_in_threadpool(render, pixels, output, turn, quality, fmt)
    return Response(data, media_type=iiif.FORMATS[fmt][1], headers=headers)


def render(pixels: np.ndarray, size: tuple[int, int], turn: iiif.Rotation, quality: str, fmt: str) -> bytes:
    """Scale, mirror, turn, recolour and encode, in the order the spec gives."""
    picture = Image.fromarray(pixels, "RGB")
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)  # as measured for the layer rule
    if turn.mirror:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if turn.degrees:
        picture = picture.transpose(CLOCKWISE[turn.degrees])
    if quality in ("gray", "bitonal"):
        picture = picture.convert("L")
    if quality == "bitonal":
        picture = picture.point(lambda value: 255 if value >= 128 else 0)
    buffer = io.BytesIO()
    options = {"quality": 90} if fmt in ("jpg", "webp") else {}
    picture.save(buffer, format=iiif.FORMATS[fmt][0], **options)
    return buffer.getvalue()
