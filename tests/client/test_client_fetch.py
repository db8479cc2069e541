"""The progressive client against a real server on loopback: exact byte ranges, resumption,
the WebSocket path, byte and PSNR budgets, and the `python -m client fetch` command."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from client import RangeFetch, WebSocketFetch, iter_layers, locate
from tests.client.probes import CountingTransport, end_of_layer, picture, run_fetch, server_pixels
from tests.harness import RunningServer


def test_ranges_transfer_exactly_the_layers_and_resume(
    base_url: str, client: httpx.Client, stored: dict, codec_model
) -> None:
    transport = CountingTransport()
    bitstream = f"/image/{stored['id']}/bitstream"
    with (
        httpx.Client(transport=transport) as http,
        RangeFetch(f"{base_url}/image/{stored['id']}", codec_model, http=http) as fetch,
    ):
        first = list(fetch.refine(max_layers=2))
        assert [r.layer for r in first] == [1, 2]
        assert transport.received[bitstream] == end_of_layer(stored, 2) == fetch.bytes_received
        assert transport.ranges[-1] == f"bytes=0-{end_of_layer(stored, 2) - 1}"  # one request: header and 2 layers

        more = list(fetch.refine(max_layers=4))  # only layers 3 and 4 travel
        assert [r.layer for r in more] == [3, 4]
        assert transport.ranges[-1] == f"bytes={end_of_layer(stored, 2)}-{end_of_layer(stored, 4) - 1}"
        assert transport.received[bitstream] == end_of_layer(stored, 4) == fetch.bytes_received

        assert list(fetch.refine(max_layers=3)) == []  # held already: nothing new, nothing sent
        assert transport.received[bitstream] == end_of_layer(stored, 4)
    for refinement in first + more:
        assert refinement.bytes == end_of_layer(stored, refinement.layer)
        assert refinement.bpp == pytest.approx(stored["layers"][refinement.layer - 1]["bpp"], abs=1e-5)
        np.testing.assert_array_equal(refinement.pixels, server_pixels(client, stored, refinement.layer))


def test_the_websocket_gives_the_same_pixels(base_url: str, client: httpx.Client, stored: dict, codec_model) -> None:
    count = len(stored["layers"])
    received = WebSocketFetch(f"{base_url}/image/{stored['id']}", codec_model)
    refinements = list(received.refine())
    assert [r.layer for r in refinements] == list(range(1, count + 1))
    assert received.bytes_received == stored["bytes"]
    for refinement in refinements:
        np.testing.assert_array_equal(refinement.pixels, server_pixels(client, stored, refinement.layer))

    early = WebSocketFetch(base_url.replace("http", "ws", 1) + stored["urls"]["websocket"], codec_model)
    layers = [r.layer for r in early.refine(max_layers=2)]  # stops early and closes the stream itself
    assert layers == [1, 2] and early.bytes_received == end_of_layer(stored, 2)


@pytest.mark.parametrize("via", ["range", "ws"])
def test_a_byte_budget_stops_at_the_last_whole_layer_within(base_url: str, stored: dict, codec_model, via) -> None:
    url = f"{base_url}/image/{stored['id']}"
    just_short = end_of_layer(stored, 3) - 1
    assert [i for i, _ in iter_layers(url, codec_model, via=via, max_bytes=just_short)] == [1, 2]
    exact = end_of_layer(stored, 3)
    assert [i for i, _ in iter_layers(url, codec_model, via=via, max_bytes=exact)] == [1, 2, 3]


def test_a_psnr_target_stops_at_the_first_layer_that_reaches_it(base_url: str, stored: dict, codec_model) -> None:
    measured = [layer["psnr"] for layer in stored["layers"]]
    target = measured[2]
    first_reaching = next(index for index, value in enumerate(measured, 1) if value >= target)
    layers = [i for i, _ in iter_layers(f"{base_url}/image/{stored['id']}/info", codec_model, psnr_target=target)]
    assert layers == list(range(1, first_reaching + 1))
    unreachable = max(measured) + 1  # no layer reaches it: every layer, the best there is
    layers = [i for i, _ in iter_layers(base_url + stored["urls"]["image"], codec_model, psnr_target=unreachable)]
    assert layers == list(range(1, len(measured) + 1))


def test_every_url_form_names_the_same_image(base_url: str) -> None:
    image = f"{base_url}/image/{'a' * 32}"
    ws = image.replace("http://", "ws://").replace("/image/", "/ws/image/")
    expected = locate(image)
    for url in (image + "/", image + "/info", image + "/bitstream", image + "?layers=2", ws):
        assert locate(url) == expected
    assert expected.bitstream == image + "/bitstream" and expected.info == image + "/info"
    assert expected.websocket == ws
    behind_proxy = locate(f"https://example.org/codec/image/{'b' * 32}/info")
    assert behind_proxy.websocket == f"wss://example.org/codec/ws/image/{'b' * 32}"
    bare = locate("https://cdn.example.org/image/kodim01.sric")  # not an image id: a container file
    assert bare.info is None and bare.websocket is None


def test_the_command_writes_every_refinement(
    server: RunningServer, client: httpx.Client, stored: dict, weights_path: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.png"
    budget = end_of_layer(stored, 2) + 10
    done = run_fetch(weights_path, f"{server.url}/image/{stored['id']}", str(output), "--bytes", str(budget), "--each")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(
        f"layer 1: {end_of_layer(stored, 1)} bytes, {stored['layers'][0]['bpp']:.3f} bpp, decoded in "
    )
    assert lines[1].startswith(f"layer 2: {end_of_layer(stored, 2)} bytes, ") and lines[1].endswith(
        f"-> {tmp_path / 'out-2.png'}"
    )
    assert lines[2].startswith(
        f"{output}: layer 2 of {len(stored['layers'])}, {end_of_layer(stored, 2)} bytes received"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out-1.png", "out-2.png", "out.png"]
    for layer in (1, 2):
        expected = server_pixels(client, stored, layer)
        np.testing.assert_array_equal(picture((tmp_path / f"out-{layer}.png").read_bytes()), expected)
    np.testing.assert_array_equal(picture(output.read_bytes()), server_pixels(client, stored, 2))


def test_the_command_over_the_websocket(
    server: RunningServer, client: httpx.Client, stored: dict, weights_path: Path, tmp_path: Path
) -> None:
    output = tmp_path / "ws.png"
    done = run_fetch(weights_path, f"{server.url}/image/{stored['id']}", str(output), "--via", "ws", "--layers", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"{output}: layer 3 of {len(stored['layers'])}, {end_of_layer(stored, 3)} bytes received"
    )
    assert [path.name for path in tmp_path.iterdir()] == ["ws.png"]
    np.testing.assert_array_equal(picture(output.read_bytes()), server_pixels(client, stored, 3))
