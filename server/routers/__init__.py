"""One router per resource: images, uploads (encode jobs), operations, the viewer, IIIF over the images, and the
browser decoder's model files."""

from server.routers import decoder, iiif, images, operations, uploads, viewer

ROUTERS = (uploads.router, images.router, operations.router, viewer.router, iiif.router, decoder.router)
