"""The viewer in real headless Chromium against a real server on loopback.

By default the page decodes the bitstream itself: its pictures are checked against the Python `Decoder` of
the same bytes (the symbols exactly, through the canvas's data-checksums, the pixels within ±1). With
"Server previews" it shows the server's pictures, which must be exactly the server's."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import Page, Request, Response

from codec.api import Decoder
from codec.model import ScalableCodec
from tests.browser.composite import side_by_side
from tests.browser.conftest import MAX_UPLOAD_BYTES, VIEWER_KEY
from tests.browser.viewer_page import ViewerPage
from tests.harness import REPO, RunningServer, make_image, upload

ARTIFACTS = REPO / "test-artifacts"


def png_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def reconstruction(server: RunningServer, image_id: str, layers: int) -> np.ndarray:
    response = httpx.get(f"{server.url}/image/{image_id}", params={"layers": layers}, timeout=120)
    assert response.status_code == 200, response.text
    return png_pixels(response.content)


def assert_same_picture(canvas: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert canvas.shape == (*expected.shape[:2], 4), what
    assert (canvas[..., 3] == 255).all(), f"{what}: transparent pixels"
    assert np.array_equal(canvas[..., :3], expected), f"{what}: pixels differ from the server's picture"


def python_decoder(server: RunningServer, image_id: str, model: ScalableCodec) -> Decoder:
    """The Python decoder of the stored bitstream (fetching the bytes decodes nothing on the server)."""
    response = httpx.get(f"{server.url}/image/{image_id}/bitstream", timeout=60)
    assert response.status_code == 200, response.text
    return Decoder(response.content, model)


def assert_within_one(canvas: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert canvas.shape == (*expected.shape[:2], 4), what
    assert (canvas[..., 3] == 255).all(), f"{what}: transparent pixels"
    difference = np.abs(canvas[..., :3].astype(int) - expected.astype(int))
    assert difference.max() <= 1, f"{what}: a pixel differs by {difference.max()} from Python's decode"


def assert_decoded_in_the_browser(viewer: ViewerPage, decoder: Decoder, arrivals: list[tuple[int, np.ndarray]]) -> None:
    """Every layer painted on arrival is the browser's decode: Python's symbols, pixels within ±1."""
    assert viewer.page.get_attribute("#reconstruction", "data-decoder") == "browser"
    layer_count = decoder.header.layer_count
    assert [layer for layer, _ in arrivals] == list(range(1, layer_count + 1))
    for layer, pixels in arrivals:
        assert_within_one(pixels, decoder.decode(layer), f"layer {layer}")
    checksums = viewer.page.get_attribute("#reconstruction", "data-checksums").split()
    assert [int(checksum) for checksum in checksums] == [decoder.symbol_checksum(n) for n in range(1, layer_count + 1)]


def stored_image(viewer_writer: httpx.Client, seed: int) -> dict:
    response = upload(viewer_writer, make_image(64, 48, seed=seed))
    assert response.status_code == 201, response.text
    return response.json()


def test_upload_streams_every_layer(
    viewer: ViewerPage, viewer_server: RunningServer, kodak_picture: Path, codec_model: ScalableCodec
) -> None:
    requested: list[str] = []
    viewer.page.on("request", lambda request: requested.append(request.url))
    viewer.page.on("websocket", lambda socket: requested.append(socket.url))
    viewer.open()
    viewer.set_key(VIEWER_KEY)
    viewer.record_arrivals()
    viewer.upload(kodak_picture)
    assert viewer.wait_until_finished() == "done", viewer.error_text()

    image_id = viewer.page.evaluate("new URLSearchParams(location.search).get('id')")
    info = httpx.get(f"{viewer_server.url}/image/{image_id}/info", timeout=30).json()
    layer_count = len(info["layers"])
    arrivals = viewer.arrivals()
    digests = [hashlib.sha256(pixels.tobytes()).hexdigest() for _, pixels in arrivals]
    assert all(a != b for a, b in zip(digests, digests[1:])), "the canvas did not change at some layer"
    decoder = python_decoder(viewer_server, image_id, codec_model)
    assert_decoded_in_the_browser(viewer, decoder, arrivals)
    assert_within_one(viewer.canvas(), decoder.decode(layer_count), "final canvas")
    assert not [url for url in requested if "layers=" in url or "previews=" in url], "the server made pictures"

    last = info["layers"][-1]
    caption = viewer.caption()
    assert f"Layer {layer_count} of {layer_count}" in caption and "decoded here in" in caption
    assert f"{last['cumulative_bytes']:,} bytes" in caption and f"{last['bpp']:.3f} bpp" in caption
    assert viewer.page.locator("#chart rect.bar").count() == layer_count
    assert viewer.page.locator("#layer-rows tr:not(.pending)").count() == layer_count

    # back to the first layer with the keyboard, screenshots of both ends
    ARTIFACTS.mkdir(exist_ok=True)
    viewer.page.click("#reconstruction")  # away from the key field, whose arrows move its caret
    viewer.page.keyboard.press("Home")
    assert viewer.shown_layer() == 1 and viewer.caption().startswith(f"Layer 1 of {layer_count}")
    viewer.screenshot(ARTIFACTS / "viewer-layer-1.png")
    viewer.page.keyboard.press("ArrowRight")
    assert viewer.shown_layer() == 2
    viewer.page.keyboard.press("End")
    assert viewer.shown_layer() == layer_count
    viewer.screenshot(ARTIFACTS / f"viewer-layer-{layer_count}.png")
    side_by_side(
        ARTIFACTS / "viewer-layer-1.png",
        ARTIFACTS / f"viewer-layer-{layer_count}.png",
        ARTIFACTS / "viewer-refinement.png",
    )

    # side by side: the original upload, at its own size, beside the layer
    viewer.page.select_option("#compare", "side")
    viewer.page.wait_for_selector("#original-figure:not([hidden])")
    with Image.open(kodak_picture) as original:
        assert_same_picture(viewer.canvas("original"), np.asarray(original.convert("RGB")), "original")

    assert any(url.startswith(f"ws://127.0.0.1:{viewer_server.port}/ws/image/") for url in requested)
    # the encode ran as a job whose progress the page followed
    assert any(re.search(r"/jobs/[0-9a-f]{32}/events$", url) for url in requested)
    origins = {url.split("/", 3)[2] for url in requested if not url.startswith("data:")}
    assert origins == {f"127.0.0.1:{viewer_server.port}"}, f"requests beyond the server: {origins}"


class BitstreamRanges:
    """The Range header and status of every bitstream request the page makes."""

    def __init__(self, viewer: ViewerPage) -> None:
        self.ranges: list[str] = []
        self.statuses: list[int] = []
        viewer.page.on("request", self._on_request)
        viewer.page.on("response", self._on_response)

    def _on_request(self, request: Request) -> None:
        if request.url.endswith("/bitstream"):
            self.ranges.append(request.headers.get("range", ""))

    def _on_response(self, response: Response) -> None:
        if response.url.endswith("/bitstream"):
            self.statuses.append(response.status)

    def clear(self) -> None:
        self.ranges.clear()
        self.statuses.clear()


def test_range_mode_fetches_the_header_then_each_layer_once(
    viewer: ViewerPage, viewer_server: RunningServer, viewer_writer: httpx.Client, codec_model: ScalableCodec
) -> None:
    """Decoding in the browser, every byte travels once: the header's range, then each layer's own."""
    info = stored_image(viewer_writer, seed=1)
    requests = BitstreamRanges(viewer)
    viewer.open(f"?id={info['id']}")
    assert viewer.wait_until_finished() == "done", viewer.error_text()
    requests.clear()
    viewer.record_arrivals()
    viewer.choose_mode("Byte ranges")
    assert viewer.wait_until_finished() == "done", viewer.error_text()

    header = f"bytes=0-{info['header_bytes'] - 1}"
    assert requests.ranges == [header] + [f"bytes={layer['offset']}-{layer['end'] - 1}" for layer in info["layers"]]
    assert requests.statuses == [206] * (1 + len(info["layers"]))
    assert_decoded_in_the_browser(viewer, python_decoder(viewer_server, info["id"], codec_model), viewer.arrivals())
    last = info["layers"][-1]
    assert f"bytes {last['offset']}-{last['end'] - 1}/{info['bytes']}" in viewer.caption()


def test_server_previews_fetch_each_layer_prefix(
    viewer: ViewerPage, viewer_server: RunningServer, viewer_writer: httpx.Client
) -> None:
    """The switch to the server's previews: each prefix is a valid file, shown as the server decodes it."""
    info = stored_image(viewer_writer, seed=1)
    requests = BitstreamRanges(viewer)
    viewer.open(f"?id={info['id']}")
    assert viewer.wait_until_finished() == "done", viewer.error_text()
    viewer.choose_mode("Server previews")
    assert viewer.wait_until_finished() == "done", viewer.error_text()
    assert viewer.page.evaluate("location.search") == f"?id={info['id']}&decoder=server"  # a link to this view
    viewer.open(f"?id={info['id']}&decoder=server")
    assert viewer.page.get_by_label("Server previews").is_checked()
    assert viewer.wait_until_finished() == "done", viewer.error_text()
    requests.clear()
    viewer.record_arrivals()
    viewer.choose_mode("Byte ranges")
    assert viewer.wait_until_finished() == "done", viewer.error_text()

    assert viewer.page.get_attribute("#reconstruction", "data-decoder") == "server"
    assert requests.ranges == [f"bytes=0-{layer['end'] - 1}" for layer in info["layers"]]
    assert requests.statuses == [206] * len(info["layers"])
    arrivals = viewer.arrivals()
    assert [layer for layer, _ in arrivals] == [layer["index"] for layer in info["layers"]]
    for layer, pixels in arrivals:
        assert_same_picture(pixels, reconstruction(viewer_server, info["id"], layer), f"layer {layer}")
    assert f"bytes 0-{info['bytes'] - 1}/{info['bytes']}" in viewer.caption()
    assert "decoded here" not in viewer.caption()


def test_stored_image_and_keyboard_navigation(viewer: ViewerPage, viewer_writer: httpx.Client) -> None:
    info = stored_image(viewer_writer, seed=2)
    viewer.open()
    viewer.page.select_option("#stored", info["id"])
    viewer.page.get_by_role("button", name="Show").click()
    assert viewer.wait_until_finished() == "done", viewer.error_text()
    assert viewer.page.evaluate("location.search") == f"?id={info['id']}"
    layer_count = len(info["layers"])
    assert viewer.shown_layer() == layer_count
    viewer.page.keyboard.press("ArrowLeft")
    viewer.page.keyboard.press("ArrowLeft")
    assert viewer.shown_layer() == layer_count - 2
    viewer.page.get_by_role("button", name="Next layer").click()
    assert viewer.shown_layer() == layer_count - 1
    slider = viewer.page.get_by_role("slider", name="Layer")
    slider.focus()
    slider.press("Home")
    assert viewer.shown_layer() == 1
    assert slider.get_attribute("aria-valuetext") == f"Layer 1 of {layer_count}"

    # every control is reachable with Tab, in the order of the page
    reached = []
    viewer.page.locator("body").focus()
    for _ in range(30):
        viewer.page.keyboard.press("Tab")
        reached.append(viewer.page.evaluate("document.activeElement.id || document.activeElement.name || ''"))
    order = [name for name in ["file", "show-stored", "mode", "throttle", "compare", "play", "layer-slider"]]
    positions = [reached.index(name) for name in order]
    assert positions == sorted(positions), reached


def test_dropped_file_is_uploaded(viewer: ViewerPage) -> None:
    viewer.open()
    viewer.set_key(VIEWER_KEY)
    picture = list(make_image(64, 48, seed=5))
    viewer.page.evaluate(
        """(bytes) => {
          const transfer = new DataTransfer();
          transfer.items.add(new File([new Uint8Array(bytes)], "dropped.png", { type: "image/png" }));
          document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer }));
        }""",
        picture,
    )
    assert viewer.wait_until_finished() == "done", viewer.error_text()
    assert (
        viewer.page.get_attribute("#reconstruction", "width"),
        viewer.page.get_attribute("#reconstruction", "height"),
    ) == ("64", "48")


def test_phone_width_has_no_sideways_scrolling(viewer: ViewerPage, viewer_writer: httpx.Client) -> None:
    info = stored_image(viewer_writer, seed=3)
    viewer.page.set_viewport_size({"width": 375, "height": 740})
    viewer.open(f"?id={info['id']}")
    assert viewer.wait_until_finished() == "done", viewer.error_text()
    viewer.page.select_option("#compare", "side")
    viewer.page.wait_for_selector("#original-figure:not([hidden])")
    assert viewer.page.evaluate("document.documentElement.scrollWidth") <= 375
    box = viewer.page.locator("#reconstruction").bounding_box()
    assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= 375


def test_throttled_delivery_still_brings_every_layer(viewer: ViewerPage, viewer_writer: httpx.Client) -> None:
    info = stored_image(viewer_writer, seed=4)
    viewer.open(f"?id={info['id']}")
    assert viewer.wait_until_finished() == "done", viewer.error_text()
    viewer.page.select_option("#throttle", "256000")
    assert viewer.wait_until_finished() == "done", viewer.error_text()
    seconds = viewer.page.locator("#layer-rows td:last-child").all_inner_texts()
    assert len(seconds) == len(info["layers"]) and all(float(second) >= 0 for second in seconds)


def test_simulated_link_holds_bytes_until_the_link_would_have_carried_them(viewer: ViewerPage) -> None:
    """The throttle's schedule on Playwright's paused clock, so no wall-clock time is asserted: at
    256 kbit/s, 3,200 bytes are due after 100 ms and 6,400 more after 300 ms in all."""
    page = viewer.page
    page.clock.install()
    viewer.open()
    page.clock.pause_at(page.evaluate("Date.now()") + 1000)
    page.evaluate(
        """async () => {
            const { SimulatedLink } = await import("./static/link.js");
            window.carried = 0;
            window.unthrottled = false;
            new SimulatedLink(0).deliver(1e9).then(() => { window.unthrottled = true; });
            const link = new SimulatedLink(256000);
            (async () => {
                await link.deliver(3200);
                window.carried = 1;
                await link.deliver(6400);
                window.carried = 2;
            })();
        }"""
    )
    carried = []
    for step_ms in (99, 2, 197, 2):
        page.clock.run_for(step_ms)
        carried.append(page.evaluate("window.carried"))
    assert carried == [0, 1, 1, 2]
    assert page.evaluate("window.unthrottled")  # no throttle: at once, with the clock still paused


def test_invalid_upload_shows_the_servers_reason(viewer: ViewerPage, tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("this is text, not a picture\n")
    viewer.open()
    viewer.set_key(VIEWER_KEY)
    viewer.upload(fake)
    message = viewer.wait_for_error()
    assert message.startswith("Upload failed: Not an image type the server accepts")
    assert "415 unsupported_format" in message
    assert viewer.state() == "error"


def test_a_failed_encode_job_shows_the_servers_reason(viewer: ViewerPage, tmp_path: Path) -> None:
    """The header inspects as a PNG, so the upload is accepted (202); the encode then fails."""
    damaged = bytearray(make_image(64, 48, noise=True))
    damaged[100:400] = bytes(300)
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(damaged))
    viewer.open()
    viewer.set_key(VIEWER_KEY)
    viewer.upload(path)
    message = viewer.wait_for_error()
    assert message.startswith("Upload failed: The file could not be read as an image"), message
    assert "400 invalid_image" in message and viewer.state() == "error"


def test_too_large_upload_shows_the_limit(viewer: ViewerPage, tmp_path: Path) -> None:
    large = tmp_path / "noise.png"
    large.write_bytes(make_image(240, 240, noise=True))
    assert large.stat().st_size > MAX_UPLOAD_BYTES
    viewer.open()
    viewer.set_key(VIEWER_KEY)
    viewer.upload(large)
    message = viewer.wait_for_error()
    assert f"uploads are limited to {MAX_UPLOAD_BYTES} bytes" in message and "413" in message


def test_upload_without_the_key_is_explained(viewer: ViewerPage, kodak_picture: Path) -> None:
    viewer.open()
    viewer.upload(kodak_picture)
    assert "This needs the access key" in viewer.wait_for_error()


def test_busy_server_says_when_to_retry(viewer: ViewerPage, page: Page) -> None:
    body = json.dumps({"error": {"code": "busy", "message": "the server is busy; retry later"}})
    page.route(
        "**/encode",
        lambda route: route.fulfill(
            status=429, body=body, content_type="application/json", headers={"Retry-After": "2"}
        ),
    )
    viewer.open()
    viewer.upload(Path(__file__))  # never reaches the server
    message = viewer.wait_for_error()
    assert "The server is busy; try again in 2 s" in message and "429 busy" in message


def test_refused_stream_is_explained(viewer: ViewerPage, viewer_writer: httpx.Client) -> None:
    info = stored_image(viewer_writer, seed=6)
    viewer.page.route_web_socket(
        "**/ws/image/**", lambda route: route.close(code=4429, reason="too many streams; retry later")
    )
    viewer.open(f"?id={info['id']}")
    message = viewer.wait_for_error()
    assert message.startswith("Streaming failed: Too many streams are open on the server; try again later")
    assert "WebSocket close 4429" in message


def test_unknown_id_shows_an_error(viewer: ViewerPage) -> None:
    viewer.open(f"?id={'0' * 32}")
    message = viewer.wait_for_error()
    assert message.startswith("Cannot show this image: No image with this id")
    assert "404 image_not_found" in message
