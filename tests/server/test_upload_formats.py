"""Uploads of real-world layouts against the shared server: a JPEG that carries a second image in an
MPF segment (the gain-map / Ultra HDR layout of current phones, which Pillow labels MPO) stores its
primary image (issue 18, defect 5); a float picture with NaN or infinite pixels is refused, not cast
to arbitrary bytes (defect 6b)."""

from __future__ import annotations

import io
import warnings

import httpx
import numpy as np
import pytest
from PIL import Image

from codec.errors import InvalidImageError
from codec.imageio import read_image
from tests.harness import make_image, upload


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / max(np.mean((a - b) ** 2), 1e-12)))


def multi_picture_jpeg(primary: Image.Image, *others: Image.Image) -> bytes:
    buffer = io.BytesIO()
    primary.save(buffer, format="MPO", save_all=True, append_images=list(others), quality=95)
    return buffer.getvalue()


def test_a_jpeg_with_a_second_image_stores_its_primary(writer: httpx.Client, client: httpx.Client) -> None:
    primary = Image.open(io.BytesIO(make_image(64, 48, seed=3)))
    gain_map = Image.fromarray(255 - np.asarray(primary), "RGB")  # same size, other content: only pixels tell
    small_map = primary.resize((16, 12)).convert("L").convert("RGB")  # gain maps are usually smaller
    for others in ((gain_map,), (small_map,)):
        data = multi_picture_jpeg(primary, *others)
        assert data[6:11] == b"JFIF\0" and b"MPF\0" in data[:2048]  # JFIF APP0, then the MPF APP2 segment
        with Image.open(io.BytesIO(data)) as opened:
            assert opened.format == "MPO" and opened.n_frames == 2  # what Pillow calls it
        response = upload(writer, data, name="photo.jpg", mime="image/jpeg")
        assert response.status_code == 201, response.text
        document = response.json()
        assert (document["width"], document["height"]) == (64, 48)
        assert document["source_format"] == "JPEG"
        decoded = pixels(client.get(document["urls"]["image"], params={"format": "png"}).content)
        first_frame = pixels(data)  # Pillow decodes frame 0, the primary image
        assert decoded.shape == first_frame.shape
        assert psnr(decoded, first_frame) > 30 > psnr(decoded, np.asarray(gain_map, dtype=np.float64))
        assert writer.delete(document["urls"]["image"]).status_code == 204


def float_tiff(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.float32), "F").save(buffer, format="TIFF")
    return buffer.getvalue()


def gradient(width: int = 24, height: int = 16) -> np.ndarray:
    return np.linspace(0.0, 1.0, width * height).reshape(height, width)


def with_value(value: float, where: tuple[int, int] = (3, 5)) -> np.ndarray:
    values = gradient()
    values[where] = value
    return values


NOT_FINITE = {
    "all NaN": np.full((16, 24), np.nan),
    "one NaN": with_value(np.nan),
    "one +inf": with_value(np.inf),
    "one -inf": with_value(-np.inf),
}


@pytest.mark.parametrize("values", NOT_FINITE.values(), ids=NOT_FINITE.keys())
def test_float_pixels_must_be_finite(values: np.ndarray) -> None:
    """NaN has no grey level, and infinity no scale: the picture is refused with a reason, without the
    RuntimeWarning of casting NaN to uint8."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidImageError, match="NaN or infinite"):
            read_image(float_tiff(values))
        assert read_image(float_tiff(gradient())).shape == (16, 24, 3)  # finite floats still convert


def test_a_float_tiff_of_nan_is_refused(writer: httpx.Client) -> None:
    response = upload(writer, float_tiff(np.full((16, 24), np.nan)), name="nan.tif", mime="image/tiff")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_image" and "NaN" in error["message"]
    finite = upload(writer, float_tiff(gradient()), name="ok.tif", mime="image/tiff")
    assert finite.status_code == 201 and writer.delete(finite.json()["urls"]["image"]).status_code == 204
