"""The browser decoder's model files: `GET /decoder/models/{model_id}/{name}` (server.web_decoder)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from server.deps import ServiceDep, error_responses
from server.errors import ApiError
from server.web_decoder import MEDIA_TYPES

router = APIRouter()


@router.get(
    "/decoder/models/{model_id}/{name}",
    responses={200: {"content": {t: {} for t in set(MEDIA_TYPES.values())}}, **error_responses(404, 503)},
    summary="A file of the in-browser decoder for the weights `model_id` (entropy-path.json, synthesis-weights.bin)",
)
async def decoder_file(service: ServiceDep, request: Request, model_id: str, name: str) -> Response:
    files = service.web_decoder
    if files is None:
        raise ApiError(503, "not_ready", "the service is starting or stopping")
    if model_id != files.model_id:
        raise ApiError(404, "unknown_model", f"this server runs model {files.model_id}, not {model_id}")
    if name not in MEDIA_TYPES:
        raise ApiError(404, "not_found", f"no decoder file {name!r}; there are {', '.join(MEDIA_TYPES)}")
    etag = await run_in_threadpool(files.etag, name)
    # weights with another post-filter keep the model id and change the files: a browser keeps them,
    # but asks each time whether its copy still holds (a 304 without the bytes)
    headers = {"ETag": etag, "Cache-Control": "public, no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(files.files()[name], media_type=MEDIA_TYPES[name], headers=headers)
