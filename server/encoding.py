"""Uploads: cheap checks before any model work, then encode and verify on a worker thread."""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from codec.api import Decoder, encode
from codec.container import ContainerHeader
from codec.errors import CodecError
from codec.imageio import read_image
from server.metrics import Metrics

PSNR_CAP = 100.0


class UnsupportedFormat(Exception):
    """The upload is not an image in one of the allowed formats (415)."""


class TooManyPixels(Exception):
    """The image is larger than the `max_pixels` setting (413)."""


class VerificationError(CodecError):
    """The new bitstream did not decode back to an image of the upload's size (500)."""


@dataclass(frozen=True)
class UploadFacts:
    format: str
    width: int
    height: int


def inspect_upload(data: bytes, allowed: list[str], max_pixels: int) -> UploadFacts:
    """Format and size from the file's header, without decoding pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                facts = UploadFacts(str(image.format or "").upper(), *image.size)
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
    decoder: Decoder  # the verifying decoder, every layer decoded: worth caching


def psnr(original: np.ndarray, reconstruction: np.ndarray) -> float:
    error = np.mean((original.astype(np.float64) - reconstruction.astype(np.float64)) ** 2)
    if error == 0:
        return PSNR_CAP
    return round(min(PSNR_CAP, 10.0 * math.log10(255.0**2 / error)), 3)


def encode_verified(data: bytes, model, metrics: Metrics) -> Encoded:
    """Encode every layer, then decode the container as stored and check every layer (worker thread)."""
    with metrics.stage("encode", "read"):
        pixels = read_image(data)
    with metrics.stage("encode", "layers"):
        container = encode(pixels, model)
    with metrics.stage("encode", "verify"):
        decoder = Decoder(container, model)
        header = decoder.header
        if (header.height, header.width) != pixels.shape[:2] or decoder.layers_available != header.layer_count:
            raise VerificationError("the new bitstream does not match the upload")
        quality = []
        for n in range(1, header.layer_count + 1):
            reconstruction = decoder.decode(n)
            if reconstruction.shape != pixels.shape:
                raise VerificationError(f"layer {n} decodes to the wrong shape")
            quality.append(psnr(pixels, reconstruction))
    return Encoded(container, header, tuple(quality), hashlib.sha256(container).hexdigest(), decoder)
