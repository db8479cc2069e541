"""The deep-zoom page: OpenSeadragon (vendored) over the IIIF service, in headless Chromium."""

from __future__ import annotations

import hashlib
import io
import re

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import Page

from codec.api import fresh_model, save_weights
from codec.model import CodecConfig
from tests.harness import REPO, WRITE_KEY, RunningServer, ServerFactory, make_image, upload

ARTIFACTS = REPO / "test-artifacts"
VENDORED = REPO / "static" / "vendor" / "openseadragon" / "openseadragon.min.js"
VENDORED_SHA256 = "14d587cd3ee7c4861f1a41077ce642029364a21029956ba635bd8fb1202cf9ad"  # VENDORED.md
TILE_REQUEST = re.compile(r"/iiif/3/[0-9a-f]{32}/(\d+),(\d+),(\d+),(\d+)/(\d+),(\d*)/0/default\.jpg$")
FULLY_LOADED = "() => { const item = window.zoomViewer?.world.getItemAt(0); return !!item && item.getFullyLoaded(); }"


def scale_factors(urls: list[str]) -> set[int]:
    """The downscale factor (region width / tile width) of every IIIF tile request among `urls`."""
    factors = set()
    for url in urls:
        match = TILE_REQUEST.search(url)
        if match:
            factors.add(round(int(match.group(3)) / int(match.group(5))))
    return factors


def test_the_vendored_openseadragon_is_the_recorded_one() -> None:
    assert hashlib.sha256(VENDORED.read_bytes()).hexdigest() == VENDORED_SHA256


def test_deep_zoom_asks_for_iiif_tiles_and_finer_ones_when_zoomed(
    page: Page, viewer_server: RunningServer, viewer_writer: httpx.Client
) -> None:
    # 1200x900: a 7x5 grid of codec tiles, so the first view is downscaled (the 50 MP case is below)
    stored = upload(viewer_writer, make_image(1200, 900, format="JPEG"), "big.jpg", "image/jpeg")
    assert stored.status_code == 201, stored.text
    image_id = stored.json()["id"]
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.set_viewport_size({"width": 480, "height": 400})  # the whole picture shows at about half its size
    page.goto(f"{viewer_server.url}/zoom/{image_id}")
    page.wait_for_function("() => document.body.dataset.state === 'open'", timeout=60_000)
    page.wait_for_function(FULLY_LOADED, timeout=120_000)
    first = list(requested)
    assert any(url.endswith(f"/iiif/3/{image_id}/info.json") for url in first)
    coarse = scale_factors(first)
    assert coarse and min(coarse) > 1, coarse  # the whole picture fits the window: downscaled tiles
    page.evaluate("() => window.zoomViewer.viewport.zoomTo(window.zoomViewer.viewport.getMaxZoom(), null, true)")
    page.wait_for_timeout(500)
    page.wait_for_function(FULLY_LOADED, timeout=120_000)
    finer = scale_factors(requested[len(first) :])
    assert finer and min(finer) < min(coarse), (coarse, finer)
    assert {url.split("/", 3)[2] for url in requested} == {f"127.0.0.1:{viewer_server.port}"}
    ARTIFACTS.mkdir(exist_ok=True)
    shot = page.locator("#zoom").screenshot(path=str(ARTIFACTS / "zoom.png"))
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=float)
    assert pixels.std() > 10, "the zoomed canvas is blank"
    assert page.get_by_role("alert").is_hidden()


# A model a hundred times cheaper than the shipped one: what is tested here is the page and the IIIF
# service on a picture of the size, which the real model would take minutes to encode on CI.
TINY = CodecConfig(
    layers=2, luma_coefficients=16, chroma_coefficients=4, rnn_channels=8, hyper_channels=8,
    history_channels=4, side_channels=4, lambdas=(0.001, 0.01),
)  # fmt: skip
BIG = (8448, 6016)  # 50.8 MP: 33 x 24 codec tiles of 256²


def big_picture(width: int, height: int) -> bytes:
    """A PNG with structure at every scale (coloured 16² blocks, 1-pixel lines every 24 pixels) that
    compresses to a few MB."""
    y, x = np.mgrid[0:height, 0:width].astype(np.uint32)
    blocks = [((x // 16) * m1 + (y // 16) * m2) % 200 + 30 for m1, m2 in ((37, 91), (53, 17), (11, 71))]
    lines = ((x % 24 == 0) | (y % 24 == 0)) * 80
    pixels = np.stack([np.clip(b.astype(np.int32) - lines, 0, 255) for b in blocks], axis=2).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_deep_zoom_of_a_50_megapixel_picture(page: Page, tmp_path) -> None:
    weights = tmp_path / "tiny.pt"
    save_weights(fresh_model(TINY), weights)
    factory = ServerFactory(tmp_path, weights)
    picture = big_picture(*BIG)
    try:
        server = factory.start(
            {"CODEC_SERVER_WRITE_KEY": WRITE_KEY, "CODEC_SERVER_MAX_UPLOAD_BYTES": str(len(picture) + (1 << 20))}
        )
        with httpx.Client(base_url=server.url, timeout=900, headers={"Authorization": f"Bearer {WRITE_KEY}"}) as http:
            stored = upload(http, picture, "big.png")
        assert stored.status_code == 201, stored.text
        assert stored.json()["width"] * stored.json()["height"] >= 50_000_000
        image_id = stored.json()["id"]
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.set_viewport_size({"width": 640, "height": 480})
        page.goto(f"{server.url}/zoom/{image_id}")
        page.wait_for_function("() => document.body.dataset.state === 'open'", timeout=60_000)
        page.wait_for_function(FULLY_LOADED, timeout=600_000)
        first = list(requested)
        coarse = scale_factors(first)
        assert coarse and min(coarse) >= 8, coarse  # 50 MP in a 640x480 window: heavily downscaled tiles
        page.evaluate("() => window.zoomViewer.viewport.zoomTo(window.zoomViewer.viewport.getMaxZoom(), null, true)")
        page.wait_for_timeout(500)
        page.wait_for_function(FULLY_LOADED, timeout=600_000)
        finer = scale_factors(requested[len(first) :])
        assert finer and min(finer) < min(coarse), (coarse, finer)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = page.locator("#zoom").screenshot(path=str(ARTIFACTS / "zoom-50mp.png"))
        pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=float)
        assert pixels.std() > 10, "the zoomed canvas is blank"
        assert page.get_by_role("alert").is_hidden()
    finally:
        factory.stop_all()


def test_deep_zoom_of_an_unknown_image_says_so(page: Page, viewer_server: RunningServer) -> None:
    page.goto(f"{viewer_server.url}/zoom/{'0' * 32}")
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible", timeout=30_000)
    assert "No picture to zoom: the server answered 404" in alert.inner_text()
