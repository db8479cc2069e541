"""The viewer decoding in the browser: the server makes no pictures, a damaged layer is reported with the
layers before it kept, and a browser that cannot decode falls back to the server's previews."""

from __future__ import annotations

import httpx
import numpy as np
from playwright.sync_api import Route

from codec.model import ScalableCodec
from tests.browser.test_viewer import (
    assert_decoded_in_the_browser,
    assert_same_picture,
    assert_within_one,
    python_decoder,
    reconstruction,
    stored_image,
)
from tests.browser.viewer_page import ViewerPage
from tests.harness import RunningServer

DECODED = "codec_server_layers_decoded_total"


def test_the_server_decodes_nothing_while_the_browser_does(
    viewer: ViewerPage, viewer_server: RunningServer, viewer_writer: httpx.Client, codec_model: ScalableCodec
) -> None:
    info = stored_image(viewer_writer, seed=11)
    requested: list[str] = []
    viewer.page.on("request", lambda request: requested.append(request.url))
    viewer.page.on("websocket", lambda socket: requested.append(socket.url))
    decoded_before = viewer_server.metric(DECODED, default=0)
    viewer.open(f"?id={info['id']}", record_arrivals=True)
    assert viewer.wait_until_finished() == "done", viewer.error_text()
    stream_arrivals = viewer.arrivals()
    viewer.record_arrivals()
    viewer.choose_mode("Byte ranges")
    assert viewer.wait_until_finished() == "done", viewer.error_text()

    assert viewer_server.metric(DECODED, default=0) == decoded_before, "the server decoded layers"
    pictures = [url for url in requested if "layers=" in url or "previews=" in url or "/iiif/" in url]
    assert not pictures, f"the page asked the server for pictures: {pictures}"
    assert any("/ws/image/" in url for url in requested) and any(url.endswith("/bitstream") for url in requested)
    # the page fetched the model's files once for both deliveries and all workers
    for name in ("/entropy-path.json", "/synthesis-weights.bin"):
        assert len([url for url in requested if url.endswith(name)]) == 1, (name, requested)
    decoder = python_decoder(viewer_server, info["id"], codec_model)
    assert_decoded_in_the_browser(viewer, decoder, viewer.arrivals())
    assert_decoded_in_the_browser(viewer, decoder, stream_arrivals)


def test_a_damaged_layer_is_reported_and_the_layers_before_it_stay(
    viewer: ViewerPage, viewer_server: RunningServer, viewer_writer: httpx.Client, codec_model: ScalableCodec
) -> None:
    """One byte of layer 3 flipped on its way to the page (its byte range, rewritten by the test)."""
    info = stored_image(viewer_writer, seed=12)
    third = info["layers"][2]

    def flip_in_layer_3(route: Route) -> None:
        response = route.fetch()
        body = bytearray(response.body())
        if route.request.headers.get("range") == f"bytes={third['offset']}-{third['end'] - 1}":
            body[len(body) // 2] ^= 0x10
        route.fulfill(response=response, body=bytes(body))

    viewer.page.route("**/bitstream", flip_in_layer_3)
    viewer.open(f"?id={info['id']}")
    assert viewer.wait_until_finished() == "done", viewer.error_text()  # the WebSocket's bytes are sound
    viewer.choose_mode("Byte ranges")
    message = viewer.wait_for_error()

    assert message.startswith("Decoding in the browser failed: ") and "of layer 3 fails its CRC32 check" in message
    canvas = viewer.page.locator("#reconstruction")
    assert (canvas.get_attribute("data-received"), canvas.get_attribute("data-layer")) == ("2", "2")
    decoder = python_decoder(viewer_server, info["id"], codec_model)
    assert_within_one(viewer.canvas(), decoder.decode(2), "layer 2 after the damaged layer 3")
    assert len(canvas.get_attribute("data-checksums").split()) == 2
    assert viewer.page.get_by_role("button", name="Next layer").is_disabled()


def test_without_the_model_files_the_page_shows_the_servers_previews(
    viewer: ViewerPage, viewer_server: RunningServer, viewer_writer: httpx.Client
) -> None:
    info = stored_image(viewer_writer, seed=13)
    viewer.page.route("**/decoder/models/**", lambda route: route.fulfill(status=404, body="gone"))
    viewer.open(f"?id={info['id']}", record_arrivals=True)
    assert viewer.wait_until_finished() == "done", viewer.error_text()

    assert viewer.page.get_attribute("#reconstruction", "data-decoder") == "server"
    assert viewer.page.get_by_label("Server previews").is_checked()
    note = viewer.page.locator("#decoder-note")
    assert note.is_visible() and note.inner_text().startswith("Server previews: this browser could not decode")
    arrivals = viewer.arrivals()
    assert [layer for layer, _ in arrivals] == [layer["index"] for layer in info["layers"]]
    for layer, pixels in arrivals:
        assert_same_picture(pixels, reconstruction(viewer_server, info["id"], layer), f"layer {layer}")


def test_a_browser_without_webassembly_is_told_and_gets_previews(
    viewer: ViewerPage, viewer_writer: httpx.Client
) -> None:
    info = stored_image(viewer_writer, seed=14)
    viewer.page.add_init_script("delete globalThis.WebAssembly")
    viewer.open(f"?id={info['id']}")
    assert viewer.wait_until_finished() == "done", viewer.error_text()

    assert viewer.page.get_by_role("radio", name="In this browser").is_disabled()
    assert viewer.page.inner_text("#decoder-note") == "Server previews: this browser has no WebAssembly."
    assert viewer.page.get_attribute("#reconstruction", "data-decoder") == "server"
    assert np.asarray(viewer.canvas())[..., 3].min() == 255
