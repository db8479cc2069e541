"""Uploads of real-world layouts against the shared server: a JPEG that carries a second image in an
MPF segment (the gain-map / Ultra HDR layout of current phones, which Pillow labels MPO) stores its
primary image (issue 18, defect 5)."""

from __future__ import annotations

import io

import httpx
import numpy as np
from PIL import Image

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
