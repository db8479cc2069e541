"""Uploads: cheap checks before any model work, then encode and verify on a worker thread."""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from codec.api import Decoder, encode
from codec.container import DEFAULT_TILE_SIZE, ContainerHeader, Tile, tile_grid
from codec.effort import DEFAULT_EFFORT
from codec.errors import CodecError
from codec.imageio import read_image
from codec.quality import psnr_from_mse, squared_error
from server.metrics import Metrics

MAX_JPEG_SEGMENTS = 1000  # marker segments (and stray fill or junk bytes) before the first scan
MAX_PNG_CHUNKS = 10_000  # chunks in the whole file, plus one per PNG_CHUNK_ALLOWANCE bytes of it
PNG_CHUNK_ALLOWANCE = 4096  # libpng writes 8 KiB IDAT chunks: a large ordinary PNG stays far below
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow names a JPEG that carries more pictures in an MPF segment (the gain-map / Ultra HDR layout of
# phone photos) MPO; its primary picture is an ordinary JPEG, the one read_image decodes and the codec codes.
FORMAT_ALIASES = {"MPO": "JPEG"}


class UnsupportedFormat(Exception):
    """The upload is not an image in one of the allowed formats (415)."""


class TooManyPixels(Exception):
    """The image is larger than the `max_pixels` setting (413)."""


class TooManySegments(Exception):
    """The file's structure would make inspection and decoding walk an unbounded number of JPEG marker
    segments or PNG chunks (400 `too_many_segments`); counted without parsing them."""


class VerificationError(CodecError):
    """The new bitstream did not decode back to an image of the upload's size (500)."""


@dataclass(frozen=True)
class UploadFacts:
    format: str
    width: int
    height: int


def jpeg_segments(data: bytes, limit: int) -> int:
    """Marker segments between SOI and the first SOS, stray fill (0xFF) and junk bytes counted one each
    (Pillow walks them one by one in Python); stops counting past `limit`. 0 for a file that is no JPEG."""
    if not data.startswith(b"\xff\xd8"):
        return 0
    position, count, size = 2, 0, len(data)
    while position + 1 < size and count <= limit:
        if data[position] != 0xFF:  # junk between segments: skip it in one step, count every byte
            following = data.find(b"\xff", position)
            following = size if following < 0 else following
            count += following - position
            position = following
            continue
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte
            count += 1
            position += 1
            continue
        if marker in (0xDA, 0xD9):  # SOS: the image data begins (Pillow stops here); EOI
            break
        count += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            position += 2
        else:
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return count


def png_chunks(data: bytes, limit: int) -> int:
    """Chunks of a PNG up to IEND (Pillow walks every one, before the pixels when opening and after them
    when decoding); stops counting past `limit`. 0 for a file that is no PNG."""
    if not data.startswith(PNG_SIGNATURE):
        return 0
    position, count, size = len(PNG_SIGNATURE), 0, len(data)
    while position + 8 <= size and count <= limit:
        count += 1
        if data[position + 4 : position + 8] == b"IEND":
            break
        position += 12 + int.from_bytes(data[position : position + 4], "big")
    return count


def check_structure(data: bytes) -> None:
    """TooManySegments for a JPEG or PNG whose segment or chunk count is beyond any ordinary file's:
    a cheap count first, so that such a file never reaches Pillow's per-segment Python loop."""
    if jpeg_segments(data, MAX_JPEG_SEGMENTS) > MAX_JPEG_SEGMENTS:
        raise TooManySegments(
            f"the JPEG has more than {MAX_JPEG_SEGMENTS} marker segments (or stray bytes) before its image data"
        )
    png_limit = MAX_PNG_CHUNKS + len(data) // PNG_CHUNK_ALLOWANCE
    if png_chunks(data, png_limit) > png_limit:
        raise TooManySegments(f"the PNG has more than {png_limit} chunks")


def inspect_upload(data: bytes, allowed: list[str], max_pixels: int) -> UploadFacts:
    """Format and size from the file's header, without decoding pixels; the segment counts first."""
    check_structure(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                name = str(image.format or "").upper()
                facts = UploadFacts(FORMAT_ALIASES.get(name, name), *image.size)
    except Image.DecompressionBombError as error:
        raise TooManyPixels(f"image too large: {error}") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise UnsupportedFormat(f"not an image in an accepted format ({', '.join(allowed)})") from error
    if facts.format not in allowed:
        raise UnsupportedFormat(f"{facts.format or 'unknown'} images are not accepted; send {', '.join(allowed)}")
    if facts.width * facts.height > max_pixels:
        raise TooManyPixels(
            f"{facts.width}x{facts.height} is {facts.width * facts.height} pixels; the limit is {max_pixels}"
        )
    if facts.width < 1 or facts.height < 1:
        raise UnsupportedFormat("the image has no pixels")
    return facts


@dataclass(frozen=True)
class Encoded:
    container: bytes
    header: ContainerHeader
    psnr: tuple[float, ...]
    sha256: str
    decoder: Decoder | None  # the verifying decoder, every layer decoded: worth caching (None: too large to keep)


def coded_units(width: int, height: int, model) -> int:
    """Tiles × layers: what an encode job's progress counts."""
    return len(tile_grid(width, height, DEFAULT_TILE_SIZE)) * model.config.layers


# Up to this size the verifying decoder keeps every tile's state (about 3.5 MB per 256² tile) within its
# 1 GiB budget and is handed on for caching; above it, it keeps nothing, which saves 1.25 GiB at 100 MP.
WARM_DECODER_PIXELS = 16_000_000

# (state, done, total): "running" after every tile's layer, then "verifying"; called on the worker thread
ProgressReport = Callable[[str, int, int], None]


def encode_verified(
    data: bytes, model, metrics: Metrics, report: ProgressReport | None = None, effort: int = DEFAULT_EFFORT
) -> Encoded:
    """Encode every layer at `effort`, then decode the container as stored and check every layer (worker thread)."""

    def progress(state: str, done: int, total: int) -> None:
        if report is not None:
            report(state, done, total)

    with metrics.stage("encode", "read"):
        pixels = read_image(data)
    total = coded_units(pixels.shape[1], pixels.shape[0], model)
    progress("running", 0, total)
    with metrics.stage("encode", "layers"):
        container = encode(pixels, model, progress=lambda done, _: progress("running", done, total), effort=effort)
    progress("verifying", total, total)
    with metrics.stage("encode", "verify"):
        warm = pixels.shape[0] * pixels.shape[1] <= WARM_DECODER_PIXELS
        decoder = Decoder(container, model) if warm else Decoder(container, model, state_budget=0, picture_budget=0)
        header = decoder.header
        if (header.height, header.width) != pixels.shape[:2] or decoder.layers_available != header.layer_count:
            raise VerificationError("the new bitstream does not match the upload")
        errors = [0.0] * header.layer_count  # squared error of each layer, summed over the tiles
        visits = 0

        def measure(tile: Tile, layer: int, picture: np.ndarray) -> None:
            nonlocal visits
            original = pixels[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]
            if picture.shape != original.shape:
                raise VerificationError(f"layer {layer} of tile {tile.index} decodes to the wrong shape")
            errors[layer - 1] += squared_error(original, picture)
            visits += 1

        decoder.decode_every_layer(measure)  # one pass per tile, in bounded memory at any picture size
        if visits != len(header.tiles) * header.layer_count:
            raise VerificationError("the new bitstream did not decode every tile at every layer")
        quality = [round(psnr_from_mse(error / pixels.size), 3) for error in errors]
    return Encoded(container, header, tuple(quality), hashlib.sha256(container).hexdigest(), decoder if warm else None)
