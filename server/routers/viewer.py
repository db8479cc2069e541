"""The viewer's pages: `/` and the deep zoom at `/zoom/{id}` (their files are mounted under /static by the app)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from server.deps import ServiceDep
from server.errors import ApiError

router = APIRouter()

# The viewer may talk to this server only: no other origin is fetched, framed or scripted. Scripts may
# compile WebAssembly (the in-browser decoder's ONNX Runtime), never evaluate strings.
VIEWER_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
    "img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


# OpenSeadragon sets inline style attributes on the elements it builds: the deep-zoom page allows inline
# styles (never inline scripts).
ZOOM_HEADERS = {
    **VIEWER_HEADERS,
    "Content-Security-Policy": VIEWER_HEADERS["Content-Security-Policy"] + "; style-src 'self' 'unsafe-inline'",
}


def page(service: ServiceDep, name: str, headers: dict[str, str]) -> FileResponse:
    """One of the viewer's HTML pages with its policy; 404 `viewer_missing` if not installed."""
    path = service.settings.static_dir / name
    if not path.is_file():
        raise ApiError(404, "viewer_missing", f"the viewer (static/{name}) is not installed")
    return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-cache", **headers})


@router.get("/", response_class=FileResponse, include_in_schema=False)
async def viewer(service: ServiceDep) -> FileResponse:
    return page(service, "index.html", VIEWER_HEADERS)


@router.get("/zoom/{image_id}", response_class=FileResponse, include_in_schema=False)
async def deep_zoom(service: ServiceDep, image_id: str) -> FileResponse:
    """OpenSeadragon over the image's IIIF service; the page itself reports an unknown id."""
    return page(service, "zoom.html", ZOOM_HEADERS)
