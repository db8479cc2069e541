"""IIIF Image API 3.0: the parsers of server/iiif.py, then the routes on an in-process app, checked against
`/image/{id}?region=...` and numpy flips and turns of the same decode."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec.container import DEFAULT_TILE_SIZE, tile_count
from codec.quality import psnr
from server import iiif
from server.errors import ApiError
from tests.harness import WRITE_KEY, make_image
from tests.in_process import TestClient, running

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
WIDTH, HEIGHT = 600, 300  # 3 x 2 tiles of 256
BIG_AREA = iiif.max_area(WIDTH, HEIGHT)


def status_of(call, *args) -> int:
    with pytest.raises(ApiError) as refused:
        call(*args)
    return refused.value.status


# -- parsers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "box"),
    [
        ("full", (0, 0, 600, 300)),
        ("square", (150, 0, 300, 300)),
        ("10,20,30,40", (10, 20, 30, 40)),
        ("500,200,400,400", (500, 200, 100, 100)),  # cut at the picture's edge
        ("pct:50,50,50,50", (300, 150, 300, 150)),
        ("pct:0,0,100,100", (0, 0, 600, 300)),
        ("pct:10.5,0,.5,10", (63, 0, 3, 30)),
    ],
)
def test_regions(text: str, box: tuple[int, int, int, int]) -> None:
    assert iiif.parse_region(text, WIDTH, HEIGHT) == box


def test_a_portrait_square_is_centred_vertically() -> None:
    assert iiif.parse_region("square", 300, 601) == (0, 150, 300, 300)


@pytest.mark.parametrize(
    "text", ["", "Full", "1,2,3", "1,2,3,4,5", "-1,0,5,5", "0,0,0,5", "0,0,5,0", "600,0,1,1", "0,300,1,1",
             "pct:0,0,0,10", "pct:100,0,10,10", "pct:1,2,3", "1.5,0,5,5", "1,2,3,²", "9999999999,0,1,1"],
)  # fmt: skip
def test_malformed_or_outside_regions_are_400(text: str) -> None:
    assert status_of(iiif.parse_region, text, WIDTH, HEIGHT) == 400


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("max", (200, 100)),
        ("^max", (5792, 2896)),  # as large as maxArea allows
        ("100,", (100, 50)),
        (",50", (100, 50)),
        ("pct:50", (100, 50)),
        ("pct:12.5", (25, 12)),
        ("150,20", (150, 20)),  # distorted, as asked
        ("!100,100", (100, 50)),
        ("!300,60", (120, 60)),
        ("!200,100", (200, 100)),
        ("^400,", (400, 200)),
        ("^,150", (300, 150)),
        ("^pct:150", (300, 150)),
        ("^!1000,300", (600, 300)),
        ("^50,10", (50, 10)),
    ],
)
def test_sizes(text: str, size: tuple[int, int]) -> None:
    assert iiif.parse_size(text, 200, 100, 1 << 24) == size


@pytest.mark.parametrize(
    "text", ["", "full", "201,", ",101", "pct:101", "!300,300", "250,50", "0,", ",0", "pct:0", "pct:0.1", ",",
             "!100,", "^", "^1000000,", "^max,", "10,10,10", "-5,"],
)  # fmt: skip
def test_malformed_too_large_or_empty_sizes_are_400(text: str) -> None:
    assert status_of(iiif.parse_size, text, 200, 100, 1 << 24) == 400


def test_max_is_confined_to_max_area() -> None:
    assert iiif.parse_size("max", 2000, 1000, 20_000) == (200, 100)


@pytest.mark.parametrize(
    ("text", "mirror", "degrees"),
    [("0", False, 0), ("90", False, 90), ("180.0", False, 180), ("270", False, 270), ("360", False, 0), ("!0", True, 0),
     ("!90", True, 90)],
)  # fmt: skip
def test_rotations(text: str, mirror: bool, degrees: int) -> None:
    assert iiif.parse_rotation(text) == iiif.Rotation(mirror, degrees)


@pytest.mark.parametrize(("text", "status"), [("45", 501), ("!22.5", 501), ("361", 400), ("-90", 400), ("x", 400),
                                              ("", 400), ("!!0", 400)])  # fmt: skip
def test_other_rotations(text: str, status: int) -> None:
    assert status_of(iiif.parse_rotation, text) == status


def test_quality_and_format() -> None:
    assert iiif.parse_quality_format("default.jpg") == ("default", "jpg")
    assert iiif.parse_quality_format("bitonal.webp") == ("bitonal", "webp")
    for text, status in [("default.tif", 501), ("gray.jp2", 501), ("default.bmp", 400), ("best.png", 400),
                         ("default", 400), ("default.", 400), ("default.PNG", 400)]:  # fmt: skip
        assert status_of(iiif.parse_quality_format, text) == status, text


def test_an_answer_must_fit_its_format() -> None:
    iiif.check_fits((65535, 10), "jpg")
    iiif.check_fits((10, 16383), "webp")
    iiif.check_fits((100_000, 1), "png")
    assert status_of(iiif.check_fits, (65536, 10), "jpg") == 400
    assert status_of(iiif.check_fits, (10, 16384), "webp") == 400


def test_the_layer_rule_follows_the_measured_table() -> None:
    """Every layer counts at every measured scale (docs/iiif.md), so downscaled answers decode them all."""
    for size in [(600, 300), (300, 150), (75, 37), (9, 4), (1200, 600)]:
        assert iiif.layers_for(6, (0, 0, 600, 300), size) == 6
    assert iiif.layers_for(6, (0, 0, 600, 300), (600, 300)) == 6 - dict(iiif.LAYERS_SPARED)[1]


def test_scale_factors_reach_one_tile() -> None:
    assert iiif.scale_factors(600, 300, 192) == [1, 2, 4]
    assert iiif.scale_factors(100, 50, 192) == [1]
    assert iiif.scale_factors(10_000, 7_000, 192) == [1, 2, 4, 8, 16, 32, 64]


# -- the routes -----------------------------------------------------------------------------------------


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture.convert("RGB"))


def store(client: TestClient, width: int = WIDTH, height: int = HEIGHT) -> str:
    response = client.post(
        "/encode?wait=true", files={"file": ("a.png", make_image(width, height, seed=5), "image/png")}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Iterator[tuple[TestClient, str]]:
    with running(tmp_path_factory.mktemp("iiif"), weights_path) as client:
        yield client, store(client)


@pytest.fixture(scope="module")
def whole(app: tuple[TestClient, str]) -> np.ndarray:
    client, image_id = app
    return pixels(client.get(f"/image/{image_id}").content)


def get(app: tuple[TestClient, str], path: str, **kwargs):
    client, image_id = app
    return client.get(f"/iiif/3/{image_id}/{path}", **kwargs)


def test_info_json(app: tuple[TestClient, str]) -> None:
    client, image_id = app
    response = get(app, "info.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["access-control-allow-origin"] == "*"
    info = response.json()
    assert info["@context"] == "http://iiif.io/api/image/3/context.json"
    assert info["id"] == f"http://testserver/iiif/3/{image_id}"
    assert (info["type"], info["protocol"], info["profile"]) == ("ImageService3", "http://iiif.io/api/image", "level2")
    assert (info["width"], info["height"]) == (WIDTH, HEIGHT)
    assert info["tiles"] == [{"width": DEFAULT_TILE_SIZE, "scaleFactors": [1, 2, 4]}]
    assert info["sizes"] == [{"width": 150, "height": 75}, {"width": 300, "height": 150}, {"width": 600, "height": 300}]
    assert info["maxArea"] == BIG_AREA
    assert info["extraFormats"] == ["webp"] and info["extraQualities"] == ["bitonal"]
    assert set(info["extraFeatures"]) == {"mirroring", "sizeUpscaling"}
    linked = get(app, "info.json", headers={"Accept": "application/ld+json"})
    assert linked.headers["content-type"] == 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'
    assert linked.headers["etag"] != response.headers["etag"]
    again = get(app, "info.json", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.headers["access-control-allow-origin"] == "*"


def test_info_json_behind_a_proxy_names_the_root_path(app: tuple[TestClient, str]) -> None:
    client, image_id = app
    proxied = TestClient(client.app, root_path="/images-service")  # no `with`: the app is started already
    info = proxied.get(f"/iiif/3/{image_id}/info.json").json()
    assert info["id"] == f"http://testserver/images-service/iiif/3/{image_id}"


def test_the_base_uri_redirects_to_info_json(app: tuple[TestClient, str]) -> None:
    client, image_id = app
    response = client.get(f"/iiif/3/{image_id}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"http://testserver/iiif/3/{image_id}/info.json"
    assert response.headers["access-control-allow-origin"] == "*"
    assert client.get("/iiif/3/unknown", follow_redirects=False).status_code == 404


@pytest.mark.parametrize(
    ("region", "box"),
    [
        ("full", (0, 0, 600, 300)),
        ("square", (150, 0, 300, 300)),
        ("520,10,50,40", (520, 10, 50, 40)),
        ("500,250,200,200", (500, 250, 100, 50)),
        ("pct:25,50,50,50", (150, 150, 300, 150)),
    ],
)
def test_a_region_at_full_size_is_the_crop_of_image(
    app: tuple[TestClient, str], region: str, box: tuple[int, int, int, int]
) -> None:
    client, image_id = app
    response = get(app, f"{region}/max/0/default.png")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    reference = client.get(f"/image/{image_id}", params={"region": ",".join(map(str, box))})
    assert np.array_equal(pixels(response.content), pixels(reference.content))


@pytest.mark.parametrize(
    ("size", "shape"),
    [
        ("max", (300, 600)),
        ("300,", (150, 300)),
        (",75", (75, 150)),
        ("pct:25", (75, 150)),
        ("100,100", (100, 100)),
        ("!120,120", (60, 120)),
        ("^max", (2896, 5792)),
        ("^900,", (450, 900)),
        ("^,400", (400, 800)),
        ("^pct:110", (330, 660)),
        ("^700,310", (310, 700)),
        ("^!2000,330", (330, 660)),
    ],
)
def test_sizes_scale_the_region_as_pillow_does(
    app: tuple[TestClient, str], whole: np.ndarray, size: str, shape: tuple[int, int]
) -> None:
    response = get(app, f"full/{size}/0/default.png")
    assert response.status_code == 200, response.text
    answer = pixels(response.content)
    assert answer.shape == (*shape, 3)
    expected = np.asarray(Image.fromarray(whole).resize((shape[1], shape[0]), Image.Resampling.LANCZOS))
    assert np.array_equal(answer, expected)
    assert response.headers["x-layers"] == "6"  # the measured rule: every layer at every scale


@pytest.mark.parametrize(
    ("rotation", "turn"),
    [
        ("0", lambda a: a),
        ("90", lambda a: np.rot90(a, -1)),
        ("180", lambda a: np.rot90(a, 2)),
        ("270", lambda a: np.rot90(a, 1)),
        ("!0", lambda a: a[:, ::-1]),
        ("!90", lambda a: np.rot90(a[:, ::-1], -1)),
        ("!180", lambda a: a[::-1]),
        ("!270", lambda a: np.rot90(a[:, ::-1], 1)),
    ],
)
def test_rotation_and_mirroring_are_numpy_turns_of_the_decode(
    app: tuple[TestClient, str], whole: np.ndarray, rotation: str, turn
) -> None:
    response = get(app, f"520,10,50,40/max/{rotation}/default.png")
    assert response.status_code == 200, response.text
    assert np.array_equal(pixels(response.content), turn(whole[10:50, 520:570]))


def test_gray_and_bitonal(app: tuple[TestClient, str], whole: np.ndarray) -> None:
    gray = Image.open(io.BytesIO(get(app, "full/max/0/gray.png").content))
    assert gray.mode == "L"
    expected = np.asarray(Image.fromarray(whole).convert("L"))
    assert np.array_equal(np.asarray(gray), expected)
    bitonal = np.asarray(Image.open(io.BytesIO(get(app, "full/max/0/bitonal.png").content)))
    assert set(np.unique(bitonal)) <= {0, 255}
    assert np.array_equal(bitonal, np.where(expected >= 128, 255, 0))
    color = get(app, "full/max/0/color.png")
    assert np.array_equal(pixels(color.content), whole)


@pytest.mark.parametrize(("fmt", "media_type"), [("jpg", "image/jpeg"), ("webp", "image/webp")])
def test_lossy_formats(app: tuple[TestClient, str], whole: np.ndarray, fmt: str, media_type: str) -> None:
    response = get(app, f"full/max/0/default.{fmt}")
    assert response.status_code == 200 and response.headers["content-type"] == media_type
    assert psnr(whole, pixels(response.content)) > 30


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("0,0,0,10/max/0/default.png", 400),
        ("600,0,10,10/max/0/default.png", 400),
        ("bogus/max/0/default.png", 400),
        ("full/0,/0/default.png", 400),
        ("full/601,/0/default.png", 400),  # larger than the region without ^
        ("full/^100000,/0/default.png", 400),  # past maxArea
        ("full/^16000000,1/0/default.jpg", 400),  # within maxArea, but wider than JPEG allows
        ("full/^16384,100/0/default.webp", 400),
        ("full/max/45/default.png", 501),
        ("full/max/400/default.png", 400),
        ("full/max/0/best.png", 400),
        ("full/max/0/default.tif", 501),
        ("full/max/0/default.bmp", 400),
    ],
)
def test_refusals_carry_cors(app: tuple[TestClient, str], path: str, status: int) -> None:
    response = get(app, path)
    assert response.status_code == status, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    assert set(response.json()["error"]) == {"code", "message"}


def test_unknown_ids_are_404_with_cors(app: tuple[TestClient, str]) -> None:
    client, _ = app
    for path in ["/iiif/3/0123456789abcdef/info.json", "/iiif/3/nope/full/max/0/default.png", "/iiif/3/x"]:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 404, path
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.json()["error"]["code"] == "image_not_found"


def test_etag_and_304(app: tuple[TestClient, str]) -> None:
    first = get(app, "pct:0,0,50,50/150,/90/gray.jpg")
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag != get(app, "pct:0,0,50,50/150,/90/gray.png").headers["etag"]
    assert etag == get(app, "0,0,300,150/150,/90/gray.jpg").headers["etag"]  # the same answer, asked otherwise
    again = get(app, "pct:0,0,50,50/150,/90/gray.jpg", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["access-control-allow-origin"] == "*" and again.headers["etag"] == etag


def test_a_region_decodes_only_the_tiles_it_touches(tmp_path: Path, weights_path: Path) -> None:
    """No decoder is kept between requests here, so each one decodes from the first layer what it needs."""
    with running(tmp_path, weights_path, decoder_cache=0, picture_cache_bytes=0) as client:
        image_id = store(client)
        registry = client.app.state.service.metrics.registry

        def decoded() -> float:
            return registry.get_sample_value("codec_server_layers_decoded_total")

        before = decoded()
        assert client.get(f"/iiif/3/{image_id}/520,10,50,40/max/0/default.png").status_code == 200
        assert decoded() == before + 6  # one tile, six layers
        assert client.get(f"/iiif/3/{image_id}/250,10,10,10/max/0/default.png").status_code == 200
        assert decoded() == before + 6 + 2 * 6  # across a tile edge: two tiles
        assert client.get(f"/iiif/3/{image_id}/full/pct:10/0/default.png").status_code == 200
        assert decoded() == before + 6 + 2 * 6 + tile_count(WIDTH, HEIGHT, DEFAULT_TILE_SIZE) * 6


def test_a_read_key_guards_iiif_and_its_refusal_carries_cors(tmp_path: Path, weights_path: Path) -> None:
    with running(tmp_path, weights_path, read_key="reader") as client:
        image_id = store(client, 32, 24)
        refused = client.get(f"/iiif/3/{image_id}/info.json")
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"
        allowed = client.get(f"/iiif/3/{image_id}/full/max/0/default.png", headers={"Authorization": "Bearer reader"})
        assert allowed.status_code == 200 and pixels(allowed.content).shape == (24, 32, 3)


def test_head_and_the_api_description(app: tuple[TestClient, str]) -> None:
    client, image_id = app
    whole = get(app, "full/max/0/default.png")
    head = client.head(f"/iiif/3/{image_id}/full/max/0/default.png")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == whole.headers["etag"] and head.headers["access-control-allow-origin"] == "*"
    paths = client.get("/openapi.json").json()["paths"]
    image_request = "/iiif/3/{image_id}/{region}/{size}/{rotation}/{quality_format}"
    assert {"/iiif/3/{image_id}", "/iiif/3/{image_id}/info.json", image_request} <= set(paths)


def test_a_bug_answers_500_with_cors(app: tuple[TestClient, str], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> bytes:
        raise RuntimeError("a bug")

    monkeypatch.setattr("server.routers.iiif.render", broken)
    response = get(app, "full/max/0/default.png")
    assert response.status_code == 500 and response.headers["access-control-allow-origin"] == "*"
    assert response.json()["error"]["code"] == "internal_error" and "a bug" not in response.text
