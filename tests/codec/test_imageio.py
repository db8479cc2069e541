"""codec/imageio.py's documented conversions, checked by value: animated images give their first frame,
CMYK converts as Pillow converts it, float images in 0..1 scale to 0..255."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from codec.api import Decoder, encode
from codec.imageio import read_image
from codec.model import ScalableCodec
from codec.quality import psnr

from .conftest import natural_image


def _saved(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _frames() -> list[Image.Image]:
    first = natural_image(48, 64, seed=3)
    return [Image.fromarray(first), Image.fromarray(255 - first)]  # the second frame is the negative


def _frame_pixels(data: bytes, index: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.seek(index)
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("format", ["GIF", "PNG"])  # PNG with save_all is an APNG
def test_an_animated_image_encodes_its_first_frame(model: ScalableCodec, format: str) -> None:
    frames = _frames()
    data = _saved(frames[0], format, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(io.BytesIO(data)) as image:
        assert getattr(image, "n_frames", 1) == 2
    first, second = _frame_pixels(data, 0), _frame_pixels(data, 1)
    assert np.array_equal(read_image(data), first)
    decoded = Decoder(encode(data, model, layers=2), model).decode()
    assert psnr(first, decoded) > 24
    assert psnr(first, decoded) > psnr(second, decoded) + 10


@pytest.mark.parametrize("cmyk", [(0, 0, 0, 0), (255, 0, 0, 0), (0, 128, 255, 0), (40, 80, 120, 60)])
def test_a_cmyk_jpeg_converts_to_the_rgb_pillow_gives(cmyk: tuple[int, int, int, int]) -> None:
    source = Image.new("CMYK", (16, 16), cmyk)
    expected = np.asarray(source.convert("RGB")).astype(int)
    pixels = read_image(_saved(source, "JPEG", quality=100))
    assert pixels.shape == (16, 16, 3)
    assert np.abs(pixels.astype(int) - expected).max() <= 3, (pixels[0, 0], expected[0, 0])


def test_a_float_tiff_in_0_to_1_scales_to_0_to_255() -> None:
    values = np.array([[0.0, 0.25, 0.5], [0.75, 0.999, 1.0]], dtype=np.float32)
    pixels = read_image(_saved(Image.fromarray(values), "TIFF"))
    expected = np.round(values.astype(np.float64) * 255).astype(np.uint8)
    assert np.array_equal(pixels, np.repeat(expected[:, :, None], 3, axis=2))
    assert pixels[0, 0, 0] == 0 and pixels[1, 2, 0] == 255 and pixels[0, 2, 0] == 128


def test_a_float_tiff_beyond_1_is_on_the_0_to_255_scale() -> None:
    values = np.array([[0.0, 1.5, 100.0], [254.6, 255.0, 300.0]], dtype=np.float32)
    pixels = read_image(_saved(Image.fromarray(values), "TIFF"))
    assert pixels[:, :, 0].tolist() == [[0, 2, 100], [255, 255, 255]]
    assert np.array_equal(pixels[:, :, 0], pixels[:, :, 2])
