"""The viewer's page at `/` (its files are mounted under /static by the app)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from server.deps import ServiceDep
from server.errors import ApiError

router = APIRouter()

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
