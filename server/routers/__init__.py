"""One router per resource: images, uploads (encode jobs), operations, the viewer."""

from server.routers import images, operations, uploads, viewer

ROUTERS = (uploads.router, images.router, operations.router, viewer.router)
