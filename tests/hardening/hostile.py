"""Hostile and unusual upload files, crafted in memory: tiny files that declare huge sizes, damaged
streams, and the valid oddities (CMYK, 16-bit, EXIF rotation, 1-pixel-wide) the codec must convert."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from tests.harness import make_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXIF_ORIENTATION = 0x0112
ROTATE_90_CLOCKWISE = 6


def encoded(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header declares `width` x `height` RGB pixels (a decompression bomb when large)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to declare `width` x `height`."""
    data = bytearray(make_image(32, 24, "JPEG"))
    frame = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, height, width)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    data = bytearray(make_image(8, 8, "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def truncated(data: bytes) -> bytes:
    """The first half: the header still parses, the pixel data ends early."""
    return data[: len(data) // 2]


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), (60 * i, 0, 0)) for i in range(3)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def gradient(width: int, height: int) -> Image.Image:
    with Image.open(io.BytesIO(make_image(width, height))) as image:
        return image.convert("RGB")


def cmyk_jpeg(width: int, height: int) -> bytes:
    return encoded(gradient(width, height).convert("CMYK"), "JPEG")


def sixteen_bit_png(width: int, height: int) -> bytes:
    values = (np.arange(width * height).reshape(height, width) * 97 % 65536).astype(np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    return encoded(image, "PNG")


def rotated_jpeg(width: int, height: int) -> bytes:
    """Stored as `width` x `height`, displayed rotated by 90 degrees (EXIF orientation 6)."""
    image = gradient(width, height)
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CLOCKWISE
    return encoded(image, "JPEG", exif=exif)


def rgba_png(width: int, height: int) -> bytes:
    image = gradient(width, height).convert("RGBA")
    image.putalpha(128)
    return encoded(image, "PNG")


def float_tiff(width: int, height: int) -> bytes:
    values = np.random.default_rng(0).random((height, width), dtype=np.float32)
    return encoded(Image.fromarray(values), "TIFF")


def solid_png(width: int, height: int) -> bytes:
    return encoded(Image.new("RGB", (width, height), (10, 200, 30)), "PNG")


def icon() -> bytes:
    return encoded(gradient(16, 16), "ICO")


def nested_json(depth: int) -> str:
    """A small message that is deeply nested: valid JSON that Python's parser refuses to recurse into."""
    return "[" * depth + "]" * depth


def jpeg_padded(segments: int, width: int = 48, height: int = 40) -> bytes:
    """A real JPEG with `segments` empty APP3 segments (FF E3 00 02) after its SOI: ~4 bytes each, and
    costly for a parser that walks every marker before the image data."""
    data = make_image(width, height, "JPEG")
    return data[:2] + b"\xff\xe3\x00\x02" * segments + data[2:]


def png_padded(chunks: int, width: int = 48, height: int = 40, before_data: bool = True) -> bytes:
    """A real PNG with `chunks` empty private chunks (`prVt`, 12 bytes each) before its first IDAT (what
    Image.open walks) or after its last (what the decoder walks)."""
    data = make_image(width, height)
    padding = _png_chunk(b"prVt", b"") * chunks
    at = data.find(b"IDAT") - 4 if before_data else data.rfind(b"IEND") - 4
    return data[:at] + padding + data[at:]
