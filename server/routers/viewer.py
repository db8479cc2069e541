"""The viewer's pages: `/` and the deep zoom at `/zoom/{id}` (their files are mounted under /static by the app)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from server.deps import ServiceDep
from server.errors import ApiError
from server.web_decoder import MEDIA_TYPES

router = APIRouter()

# The viewer may talk to this server only: no other origin is fetched, framed or scripted. Scripts may
# compile WebAssembly (the in-browser decoder's kernel, static/decoder/kernel.js), never evaluate strings.
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


def page(service: ServiceDep, name: str, headers: dict[str, str], decoder_model: str | None = None) -> Response:
    """One of the viewer's HTML pages with its policy; 404 `viewer_missing` if not installed. With
    `decoder_model`, the page names the model whose files the answer preloads (`<meta name="decoder-model">`),
    so that its script hands them to the decoder's workers before it has learnt the picture's model."""
    path = service.settings.static_dir / name
    if not path.is_file():
        raise ApiError(404, "viewer_missing", f"the viewer (static/{name}) is not installed")
    headers = {"Cache-Control": "no-cache", **headers}
    if decoder_model is None:
        return FileResponse(path, media_type="text/html", headers=headers)
    meta = f'  <meta name="decoder-model" content="{decoder_model}">\n</head>'
    return HTMLResponse(path.read_text().replace("</head>", meta, 1), headers=headers)


def decoder_preload(model_id: str) -> dict[str, str]:
    """A `Link` header that has the browser fetch the decoder's model files with the page itself, not once
    the page has run its scripts and learnt the picture's model: about 0.15-0.4 s sooner on a first visit
    (the files are immutable, so later visits take them from the cache)."""
    links = [f"<decoder/models/{model_id}/{name}>; rel=preload; as=fetch; crossorigin" for name in MEDIA_TYPES]
    return {"Link": ", ".join(links)}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def viewer(service: ServiceDep, request: Request) -> Response:
    """The viewer; when it opens a picture to decode itself (`?id=`, not `?decoder=server`), with the model
    files preloaded and named in the page."""
    query = request.query_params
    files = service.web_decoder
    if files is None or "id" not in query or query.get("decoder") == "server":
        return page(service, "index.html", VIEWER_HEADERS)
    return page(service, "index.html", {**VIEWER_HEADERS, **decoder_preload(files.model_id)}, files.model_id)


@router.get("/zoom/{image_id}", response_class=FileResponse, include_in_schema=False)
async def deep_zoom(service: ServiceDep, image_id: str) -> FileResponse:
    """OpenSeadragon over the image's IIIF service; the page itself reports an unknown id."""
    return page(service, "zoom.html", ZOOM_HEADERS)
