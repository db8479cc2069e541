"""Reading any common image into 8-bit RGB, and writing reconstructions.

Conversions, so that every input encodes: EXIF orientation is applied;
grayscale, palette and CMYK become RGB; alpha is dropped (composited on
nothing: the colour channels are kept as stored); 16-bit and float images are
scaled to 8 bits. A float image with a NaN or infinite pixel is refused
(`NonFinitePixels`): NaN has no grey level and infinity no scale. Animated
images (and a JPEG's further MPF pictures) use their first frame.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from codec.errors import InvalidImageError

Image.MAX_IMAGE_PIXELS = 200_000_000  # Pillow's decompression-bomb check stays on (tiles bound the codec's memory)


class NonFinitePixels(InvalidImageError):
    """A float image with NaN or infinite pixels: no 8-bit picture of it is right."""


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.round(values / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(values)
        if not finite.all():
            bad = int(values.size - np.count_nonzero(finite))
            raise NonFinitePixels(f"the float image has {bad} NaN or infinite pixels of {values.size}")
        peak = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        gray = np.clip(np.round(values / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)[:, :, :3].copy()


def read_image(source: bytes | str | Path) -> np.ndarray:
    """Decode an image file (path or bytes) to an (H, W, 3) uint8 array."""
    try:
        stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as error:
        raise InvalidImageError(f"cannot open image: {error.strerror}") from error
    with stream:
        try:
            with Image.open(stream) as image:
                image.seek(0)
                image = ImageOps.exif_transpose(image)
                pixels = _to_rgb_array(image)
        except Image.DecompressionBombError as error:
            raise InvalidImageError(f"image too large: {error}") from error
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise InvalidImageError(f"not a readable image: {error}") from error
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise InvalidImageError("image has no pixels")
    return pixels


def write_image(pixels: np.ndarray, destination: str | Path | None = None, format: str = "PNG") -> bytes:
    """Encode (H, W, 3) uint8 pixels; also write them to `destination` if given."""
    buffer = io.BytesIO()
    options = {"quality": 95} if format.upper() in ("JPEG", "WEBP") else {}
    Image.fromarray(pixels, "RGB").save(buffer, format=format, **options)
    data = buffer.getvalue()
    if destination is not None:
        Path(destination).write_bytes(data)
    return data
