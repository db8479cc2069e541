"""The JSON documents of the API (response models for OpenAPI) and how they are built."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from protocol import image_paths, job_paths
from server.job_store import EncodeJob
from server.storage import StoredImage


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, see docs/server.md")
    message: str


class ErrorBody(BaseModel):
    """The OpenAPI model of `protocol.error_body()`."""

    error: ErrorDetail


class LayerInfo(BaseModel):
    """The wire form of one `LayerEntry` of the image's layer table, with the table's derived values."""

    index: int = Field(description="1-based layer number")
    offset: int = Field(description="first byte of this layer in the bitstream")
    size: int = Field(description="bytes of this layer")
    end: int = Field(description="byte after this layer: `Range: bytes=0-(end-1)` holds layers 1..index")
    bytes: int = Field(description="same as size")
    cumulative_bytes: int = Field(description="bytes needed to decode layers 1..index, header included (= end)")
    bpp: float = Field(description="cumulative bits per pixel: cumulative_bytes * 8 / (width * height)")
    psnr: float | None = Field(description="dB of the reconstruction from layers 1..index (measured at upload)")
    crc32: int


class ImageUrls(BaseModel):
    info: str
    image: str = Field(description="reconstruction; add ?layers=n&format=png|webp|jpeg")
    bitstream: str = Field(description="the container, with byte ranges")
    websocket: str = Field(description="path of the WebSocket stream (use ws:// or wss://)")
    viewer: str


class ImageInfo(BaseModel):
    id: str
    width: int
    height: int
    model: str = Field(description="hex id of the weights that wrote (and can read) the bitstream")
    source_format: str
    bytes: int = Field(description="size of the whole bitstream")
    header_bytes: int = Field(description="bytes of the container header (layer table included)")
    etag: str
    created: str = Field(description="ISO 8601, UTC")
    layers: list[LayerInfo]
    urls: ImageUrls


class JobProgress(BaseModel):
    done: int = Field(description="tile-layers coded so far")
    total: int = Field(description="tiles × layers of the whole encode")


class JobUrls(BaseModel):
    job: str = Field(description="this document")
    events: str = Field(description="the same document as server-sent events, one per change")


class JobInfo(BaseModel):
    id: str
    state: str = Field(description="queued, running, verifying, then done or failed")
    progress: JobProgress
    created: str = Field(description="ISO 8601, UTC")
    updated: str = Field(description="ISO 8601, UTC: the last change of state or progress")
    image_id: str | None = Field(description="the stored image, once done")
    image: ImageInfo | None = Field(description="its info document, once done (null if deleted since)")
    error: JobErrorInfo | None = Field(description="why it failed: what the upload would have answered")
    urls: JobUrls


class JobErrorInfo(BaseModel):
    status: int = Field(description="the HTTP status the upload would have had")
    code: str
    message: str


class ImageSummary(BaseModel):
    id: str
    width: int
    height: int
    model: str
    bytes: int
    layer_count: int
    created: str
    urls: ImageUrls


class ImagePage(BaseModel):
    images: list[ImageSummary]
    count: int = Field(description="images stored in all")
    next: str | None = Field(description="URL of the next (older) page, or null")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model: str
    trained: bool
    device: str
    layers: int


def urls(image_id: str, root: str = "") -> ImageUrls:
    return ImageUrls(**image_paths(image_id, root))


def _created(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def info_document(image: StoredImage, root: str = "") -> ImageInfo:
    return ImageInfo(
        id=image.id,
        width=image.width,
        height=image.height,
        model=image.model,
        source_format=image.source_format,
        bytes=image.total_bytes,
        header_bytes=image.header_bytes,
        etag=image.etag,
        created=_created(image.created),
        layers=[
            LayerInfo(
                index=layer.index,
                offset=layer.offset,
                size=layer.size,
                end=layer.end,
                bytes=layer.size,
                cumulative_bytes=image.end_of_layer(layer.index),
                bpp=round(image.bpp(layer.index), 5),
                psnr=quality,
                crc32=layer.crc32,
            )
            for layer, quality in zip(image.layers, image.psnr, strict=True)
        ],
        urls=urls(image.id, root),
    )


def job_document(job: EncodeJob, image: StoredImage | None, root: str = "") -> JobInfo:
    error = job.error
    return JobInfo(
        id=job.id,
        state=job.state,
        progress=JobProgress(done=job.done, total=job.total),
        created=_created(job.created),
        updated=_created(job.updated),
        image_id=job.image_id,
        image=info_document(image, root) if image is not None else None,
        error=JobErrorInfo(status=error.status, code=error.code, message=error.message) if error else None,
        urls=JobUrls(**job_paths(job.id, root)),
    )


def summary(image: StoredImage, root: str = "") -> ImageSummary:
    return ImageSummary(
        id=image.id,
        width=image.width,
        height=image.height,
        model=image.model,
        bytes=image.total_bytes,
        layer_count=image.layer_count,
        created=_created(image.created),
        urls=urls(image.id, root),
    )


JobInfo.model_rebuild()
