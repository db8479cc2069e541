"""How the client fails: the server's refusals with its own words, damaged and truncated layers as
codec errors with the layers before them kept, resumption after a cut, and a bare container URL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from client import ProtocolError, RangeFetch, ServerError, StreamClosedError, WebSocketFetch
from codec import container
from codec.api import fresh_model
from codec.errors import ChecksumError, ModelMismatchError, TruncatedLayerError
from tests.client.probes import CountingTransport, end_of_layer, picture, run_fetch, server_pixels
from tests.harness import RunningServer, make_image, upload

UNKNOWN = "0" * 32


class ContainerHost:
    """An HTTP host, in process, that serves a container with single byte ranges (and its info document).

    `cut` makes every answer stop at that byte of the container, as a dropped connection would;
    `key` makes it require `Authorization: Bearer key`."""

    def __init__(self, data: bytes, info: dict | None = None, key: str | None = None) -> None:
        self.data = data
        self.info = info
        self.key = key
        self.cut: int | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.key and request.headers.get("authorization") != f"Bearer {self.key}":
            return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "read key needed"}})
        if request.url.path.endswith("/info"):
            return httpx.Response(200, json=self.info)
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers.get("range", ""))
        if match is None:
            return httpx.Response(200, content=self.data)
        start, last = int(match[1]), int(match[2])
        body = self.data[start : last + 1]
        if self.cut is not None:
            body = body[: max(0, self.cut - start)]
        return httpx.Response(206, content=body, headers={"Content-Range": f"bytes {start}-{last}/{len(self.data)}"})


@pytest.fixture(scope="module")
def bitstream(client: httpx.Client, stored: dict) -> bytes:
    return client.get(stored["urls"]["bitstream"]).content


def test_an_unknown_image_reports_the_server_error(base_url: str, codec_model) -> None:
    with pytest.raises(ServerError) as raised, RangeFetch(f"{base_url}/image/{UNKNOWN}", codec_model) as fetch:
        list(fetch.refine())
    assert (raised.value.status, raised.value.code) == (404, "image_not_found")
    assert str(raised.value) == "server answered 404 image_not_found: no image with this id"

    with pytest.raises(StreamClosedError) as closed:
        list(WebSocketFetch(f"{base_url}/image/{UNKNOWN}", codec_model).refine())
    assert str(closed.value) == "WebSocket closed with 4404: no image with this id"


def test_busy_and_foreign_errors_keep_the_server_message(codec_model) -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "busy", "message": "the model queue is full"}}
        return httpx.Response(429, json=body, headers={"Retry-After": "2"})

    with (
        httpx.Client(transport=httpx.MockTransport(busy)) as http,
        RangeFetch(f"http://server.test/image/{UNKNOWN}", codec_model, http=http) as fetch,
        pytest.raises(ServerError) as raised,
    ):
        list(fetch.refine())
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (429, "busy", "2")
    assert str(raised.value) == "server answered 429 busy: the model queue is full (retry after 2 s)"

    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="upstream went away")

    with (
        httpx.Client(transport=httpx.MockTransport(proxy)) as http,
        RangeFetch(f"http://server.test/image/{UNKNOWN}", codec_model, http=http) as fetch,
        pytest.raises(ServerError) as raised,
    ):
        list(fetch.refine())
    assert str(raised.value) == "server answered 502 bad_gateway: upstream went away"


def test_other_weights_are_refused_before_any_layer_travels(base_url: str, stored: dict) -> None:
    other = fresh_model(seed=1)
    transport = CountingTransport()
    with (
        httpx.Client(transport=transport) as http,
        RangeFetch(f"{base_url}/image/{stored['id']}", other, http=http) as fetch,
        pytest.raises(ModelMismatchError),
    ):
        list(fetch.refine())
    assert transport.received[f"/image/{stored['id']}/bitstream"] == 0 and fetch.bytes_received == 0


def test_a_cut_transfer_keeps_the_whole_layers_and_resumes(
    client: httpx.Client, stored: dict, bitstream: bytes, codec_model
) -> None:
    host = ContainerHost(bitstream, stored)
    middle_of_layer_3 = stored["layers"][2]["offset"] + stored["layers"][2]["size"] // 2
    host.cut = middle_of_layer_3
    transport = CountingTransport(httpx.MockTransport(host))
    received = []
    with (
        httpx.Client(transport=transport) as http,
        RangeFetch(f"http://server.test/image/{stored['id']}", codec_model, http=http) as fetch,
    ):
        with pytest.raises(TruncatedLayerError, match="layer 3 is incomplete"):
            received.extend(fetch.refine())
        assert [r.layer for r in received] == [1, 2] and fetch.bytes_received == middle_of_layer_3

        host.cut = None  # asked again, the client sends for the rest of layer 3 and for layer 4 only
        received.extend(fetch.refine(max_layers=4))
        assert transport.ranges[-1] == f"bytes={middle_of_layer_3}-{end_of_layer(stored, 4) - 1}"
        assert fetch.bytes_received == end_of_layer(stored, 4)
    assert [r.layer for r in received] == [1, 2, 3, 4]
    for refinement in received:
        np.testing.assert_array_equal(refinement.pixels, server_pixels(client, stored, refinement.layer))


def test_a_bare_container_url_reads_the_header_through_ranges(
    client: httpx.Client, stored: dict, bitstream: bytes, codec_model
) -> None:
    host = ContainerHost(bitstream, key="reader")
    transport = CountingTransport(httpx.MockTransport(host))
    with (
        httpx.Client(transport=transport) as http,
        RangeFetch("http://cdn.test/photos/picture.sric", codec_model, http=http, key="reader") as fetch,
    ):
        refinements = list(fetch.refine(max_layers=2))
        assert fetch.table.psnr == (None,) * len(stored["layers"])
    header = stored["header_bytes"]
    fixed = container.FIXED_HEADER_BYTES
    assert transport.ranges == [
        f"bytes=0-{fixed - 1}",
        f"bytes={fixed}-{header - 1}",
        f"bytes={header}-{end_of_layer(stored, 2) - 1}",
    ]
    assert transport.received["/photos/picture.sric"] == end_of_layer(stored, 2) == fetch.bytes_received
    assert [r.layer for r in refinements] == [1, 2]
    np.testing.assert_array_equal(refinements[1].pixels, server_pixels(client, stored, 2))


@pytest.fixture(scope="module")
def damaged(server: RunningServer, writer: httpx.Client, client: httpx.Client) -> dict:
    """An image whose stored layer 3 has one flipped byte, with the server's pictures of layers 1 and 2."""
    response = upload(writer, make_image(48, 32, seed=9))
    assert response.status_code == 201, response.text
    info = response.json()
    pictures = {n: server_pixels(client, info, n) for n in (1, 2)}
    blob = server.data_dir / "blobs" / info["id"][:2] / f"{info['id']}.sric"
    layer = info["layers"][2]
    with open(blob, "r+b") as handle:
        handle.seek(layer["offset"] + layer["size"] // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0x40]))
    return {"info": info, "pictures": pictures}


def test_a_damaged_layer_is_a_codec_error_after_the_good_ones(base_url: str, damaged: dict, codec_model) -> None:
    info = damaged["info"]
    kept = []
    with RangeFetch(f"{base_url}/image/{info['id']}", codec_model) as fetch:
        with pytest.raises(ChecksumError, match="layer 3"):
            kept.extend(fetch.refine())
        with pytest.raises(ChecksumError):  # the held bytes stay damaged: no garbage picture later either
            list(fetch.refine())
    assert [r.layer for r in kept] == [1, 2]
    for refinement in kept:
        np.testing.assert_array_equal(refinement.pixels, damaged["pictures"][refinement.layer])

    # the server checks every layer before it sends it: the stream ends with its reason
    streamed = []
    with pytest.raises(StreamClosedError) as closed:
        streamed.extend(WebSocketFetch(f"{base_url}/image/{info['id']}", codec_model).refine())
    assert (closed.value.code, closed.value.reason) == (1011, "corrupt_bitstream")
    assert str(closed.value) == "WebSocket closed with 1011: server error: corrupt_bitstream"
    assert [r.layer for r in streamed] == [1, 2]


def test_the_command_reports_errors_and_keeps_what_it_decoded(
    server: RunningServer, damaged: dict, weights_path: Path, tmp_path: Path
) -> None:
    missing = run_fetch(weights_path, f"{server.url}/image/{UNKNOWN}", str(tmp_path / "none.png"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: server answered 404 image_not_found: no image with this id"
    assert not (tmp_path / "none.png").exists()

    output = tmp_path / "damaged.png"
    broken = run_fetch(weights_path, f"{server.url}/image/{damaged['info']['id']}", str(output))
    assert broken.returncode == 2
    layer_2_end = damaged["info"]["layers"][1]["end"]
    assert broken.stderr.splitlines() == [
        "error: tile 0 of layer 3 fails its CRC32 check",  # the image is one tile
        f"kept layers 1..2 ({layer_2_end} bytes) in {output}",
    ]
    np.testing.assert_array_equal(picture(output.read_bytes()), damaged["pictures"][2])


def test_an_info_document_without_a_layer_table_is_refused(codec_model) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps({"id": UNKNOWN}).encode())

    with (
        httpx.Client(transport=httpx.MockTransport(answer)) as http,
        RangeFetch(f"http://server.test/image/{UNKNOWN}", codec_model, http=http) as fetch,
        pytest.raises(ProtocolError, match="lacks the layer table"),
    ):
        list(fetch.refine())
