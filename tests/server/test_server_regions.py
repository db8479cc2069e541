"""`GET /image/{id}?region=x,y,w,h`: a crop of the picture that decodes only the tiles it touches."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from codec.container import DEFAULT_TILE_SIZE, tile_count
from tests.harness import ServerFactory, make_image, upload

WIDTH, HEIGHT = 600, 300
TILES = tile_count(WIDTH, HEIGHT, DEFAULT_TILE_SIZE)  # 4 x 2 of 192; the region below lies in one of them


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def two_tiles(writer: httpx.Client) -> dict:
    response = upload(writer, make_image(WIDTH, HEIGHT, seed=5))
    assert response.status_code == 201, response.text
    return response.json()


def test_a_region_is_the_crop_of_the_whole_picture_and_decodes_only_its_tiles(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """No decoder is kept between requests here, so each one decodes from the first layer what it needs."""
    server = server_factory.start({"CODEC_SERVER_DECODER_CACHE": "0"}, tmp_path / "data")
    with httpx.Client(base_url=server.url, timeout=120) as client:
        url = upload(client, make_image(WIDTH, HEIGHT, seed=5)).json()["urls"]["image"]
        decoded = server.metric("codec_server_layers_decoded_total")
        region = client.get(url, params={"layers": 2, "region": "520,10,50,40"})
        assert region.status_code == 200, region.text
        assert server.metric("codec_server_layers_decoded_total") == decoded + 2  # one tile, two layers
        whole = client.get(url, params={"layers": 2})
        assert server.metric("codec_server_layers_decoded_total") == decoded + 2 + 2 * TILES
        crop = pixels(region.content)
        assert crop.shape == (40, 50, 3)
        assert np.array_equal(crop, pixels(whole.content)[10:50, 520:570])
        assert region.headers["etag"] != whole.headers["etag"]
        again = client.get(url, params={"layers": 2, "region": "520,10,50,40"})
        assert again.content == region.content  # from the picture cache: nothing decoded
        assert server.metric("codec_server_layers_decoded_total") == decoded + 2 + 2 * TILES
    server.stop()


@pytest.mark.parametrize(
    ("region", "status", "code"),
    [
        ("1,2,3", 400, "bad_region"),
        ("a,b,c,d", 400, "bad_region"),
        ("1,2,3,²", 400, "bad_region"),
        ("-1,0,5,5", 400, "bad_region"),
        ("0,0,5,5,5", 400, "bad_region"),
        ("99999999999999999999,0,1,1", 400, "bad_region"),
        ("0,0,0,5", 422, "region_out_of_bounds"),
        ("590,0,11,1", 422, "region_out_of_bounds"),
        ("0,299,1,2", 422, "region_out_of_bounds"),
    ],
)
def test_malformed_and_outside_regions_are_refused(
    client: httpx.Client, two_tiles: dict, region: str, status: int, code: str
) -> None:
    response = client.get(two_tiles["urls"]["image"], params={"region": region})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
