"""One router per resource: images, uploads (encode jobs), operations, the viewer, and IIIF over the images."""

from server.routers import iiif, images, operations, uploads, viewer

ROUTERS = (uploads.router, images.router, operations.router, viewer.router, iiif.router)
