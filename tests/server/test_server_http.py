"""HTTP endpoints against the shared real server (uvicorn on a loopback port)."""

from __future__ import annotations

import email.parser
import email.policy
import io
import re

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.harness import WRITE_KEY, make_image, upload

ID = re.compile(r"[0-9a-f]{32}")


def error_of(response: httpx.Response) -> str:
    """The error code, after checking the error shape and that nothing like a traceback leaked."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]["code"]


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


# encode


def test_encode_answers_the_info_document(uploaded: dict) -> None:
    assert ID.fullmatch(uploaded["id"])
    assert (uploaded["width"], uploaded["height"], uploaded["source_format"]) == (48, 40, "PNG")
    assert re.fullmatch(r"[0-9a-f]{32}", uploaded["model"])
    layers = uploaded["layers"]
    assert [layer["index"] for layer in layers] == list(range(1, len(layers) + 1))
    assert layers[0]["offset"] == uploaded["header_bytes"]
    for before, layer in zip([None, *layers], layers, strict=False):
        assert layer["bytes"] == layer["size"] > 0
        assert layer["cumulative_bytes"] == layer["end"] == layer["offset"] + layer["size"]
        assert layer["bpp"] == pytest.approx(layer["cumulative_bytes"] * 8 / (48 * 40), abs=1e-4)
        assert isinstance(layer["psnr"], float)
        if before:
            assert layer["offset"] == before["end"]
    assert layers[-1]["end"] == uploaded["bytes"]
    assert uploaded["urls"] == {
        "info": f"/image/{uploaded['id']}/info",
        "image": f"/image/{uploaded['id']}",
        "bitstream": f"/image/{uploaded['id']}/bitstream",
        "websocket": f"/ws/image/{uploaded['id']}",
        "viewer": f"/?id={uploaded['id']}",
    }


@pytest.mark.parametrize(
    ("fmt", "mime"), [("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("BMP", "image/bmp"), ("TIFF", "image/tiff")]
)
def test_encode_accepts_every_format(writer: httpx.Client, client: httpx.Client, fmt: str, mime: str) -> None:
    response = upload(writer, make_image(16, 12, fmt, seed=3), f"x.{fmt.lower()}", mime)
    assert response.status_code == 201, response.text
    document = response.json()
    assert document["source_format"] == fmt
    assert response.headers["location"] == document["urls"]["info"]
    assert client.get(document["urls"]["info"]).json()["id"] == document["id"]
    assert writer.delete(f"/image/{document['id']}").status_code == 204


def test_ids_are_distinct(writer: httpx.Client) -> None:
    first = upload(writer, make_image(16, 16)).json()["id"]
    second = upload(writer, make_image(16, 16)).json()["id"]
    assert first != second and ID.fullmatch(first) and ID.fullmatch(second)
    for image_id in (first, second):
        writer.delete(f"/image/{image_id}")


def test_encode_needs_the_write_key(client: httpx.Client) -> None:
    files = {"file": ("a.png", make_image(8, 8), "image/png")}
    response = client.post("/encode?wait=true", files=files)
    assert response.status_code == 401 and error_of(response) == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")
    response = client.post("/encode?wait=true", files=files, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    response = client.post("/encode?wait=true", files=files, headers={"Authorization": f"Basic {WRITE_KEY}"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (make_image(8, 8, "GIF"), "a.gif"),
        (b"not an image at all", "a.png"),
        (b"", "empty.png"),
        (b"%PDF-1.4\n", "a.pdf"),
    ],
)
def test_encode_refuses_other_formats(writer: httpx.Client, data: bytes, name: str) -> None:
    response = upload(writer, data, name)
    assert response.status_code == 415 and error_of(response) == "unsupported_format"


def test_encode_refuses_a_damaged_image(writer: httpx.Client) -> None:
    data = make_image(64, 64, noise=True)
    response = upload(writer, data[: len(data) // 2])  # the header parses, the pixels do not
    assert response.status_code == 400 and error_of(response) == "invalid_image"


def test_encode_refuses_too_many_pixels(writer: httpx.Client) -> None:
    response = upload(writer, make_image(500, 500))  # the shared server allows 200000 pixels
    assert response.status_code == 413 and error_of(response) == "too_many_pixels"


def test_encode_refuses_a_decompression_bomb(writer: httpx.Client) -> None:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")  # tiny file, 400 Mpixels
    response = upload(writer, buffer.getvalue())
    assert response.status_code == 413 and error_of(response) == "too_many_pixels"


def test_encode_refuses_large_uploads(writer: httpx.Client, base_url: str) -> None:
    for size in (1_000_100, 1_100_000):  # the shared server allows 1000000 bytes
        response = upload(writer, b"\x89PNG\r\n\x1a\n" + b"\0" * size)
        assert response.status_code == 413 and error_of(response) == "upload_too_large"

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        boundary = b"xyz"
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 65536
        yield b"\r\n--" + boundary + b"--\r\n"

    response = httpx.post(
        f"{base_url}/encode",
        content=chunks(),
        headers={"Authorization": f"Bearer {WRITE_KEY}", "Content-Type": "multipart/form-data; boundary=xyz"},
        timeout=60,
    )
    assert response.status_code == 413 and error_of(response) == "upload_too_large"


def test_encode_without_a_file_field(writer: httpx.Client) -> None:
    response = writer.post("/encode?wait=true", data={"other": "x"})
    assert response.status_code == 422 and error_of(response) == "validation_error"


# pictures


@pytest.mark.parametrize(("fmt", "mime"), [("png", "image/png"), ("webp", "image/webp"), ("jpeg", "image/jpeg")])
def test_picture_formats(client: httpx.Client, uploaded: dict, fmt: str, mime: str) -> None:
    response = client.get(f"/image/{uploaded['id']}", params={"layers": 2, "format": fmt})
    assert response.status_code == 200
    assert response.headers["content-type"] == mime
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.size == (48, 40) and image.format == fmt.upper()


def test_picture_defaults_to_all_layers_and_is_cached(client: httpx.Client, uploaded: dict, server) -> None:
    count = len(uploaded["layers"])
    whole = client.get(f"/image/{uploaded['id']}")
    assert whole.status_code == 200 and whole.headers["x-layers"] == str(count)
    assert whole.headers["cache-control"] == "public, max-age=31536000, immutable"
    last = client.get(f"/image/{uploaded['id']}", params={"layers": count})
    assert last.content == whole.content
    hits = server.metric("codec_server_cache_total", 'cache="picture",result="hit"')
    again = client.get(f"/image/{uploaded['id']}", params={"layers": count})
    assert again.content == whole.content
    assert server.metric("codec_server_cache_total", 'cache="picture",result="hit"') == hits + 1
    revalidated = client.get(f"/image/{uploaded['id']}", headers={"If-None-Match": whole.headers["etag"]})
    assert revalidated.status_code == 304 and revalidated.content == b""


def test_layers_improve_the_picture(client: httpx.Client, uploaded: dict) -> None:
    first = pixels(client.get(f"/image/{uploaded['id']}", params={"layers": 1}).content)
    last = pixels(client.get(f"/image/{uploaded['id']}").content)
    assert first.shape == last.shape == (40, 48, 3)
    assert not np.array_equal(first, last)


@pytest.mark.parametrize("layers", ["0", "-1", "7", "1000000000", "99999999999999999999"])
def test_layers_out_of_range(client: httpx.Client, uploaded: dict, layers: str) -> None:
    response = client.get(f"/image/{uploaded['id']}", params={"layers": layers})
    assert response.status_code == 422 and error_of(response) == "layers_out_of_range"


@pytest.mark.parametrize("params", [{"layers": "abc"}, {"layers": "1.5"}, {"format": "gif"}, {"format": "PNG "}])
def test_invalid_picture_parameters(client: httpx.Client, uploaded: dict, params: dict) -> None:
    response = client.get(f"/image/{uploaded['id']}", params=params)
    assert response.status_code == 422 and error_of(response) == "validation_error"


@pytest.mark.parametrize(
    "image_id",
    ["0" * 32, "F" * 32, "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "abc", "0" * 33, "%00" * 16, "ü" * 32],
)
@pytest.mark.parametrize("suffix", ["", "/info", "/bitstream"])
def test_unknown_and_malformed_ids(client: httpx.Client, image_id: str, suffix: str) -> None:
    response = client.get(f"/image/{image_id}{suffix}")
    assert response.status_code == 404
    error_of(response)


# info


def test_info(client: httpx.Client, uploaded: dict) -> None:
    response = client.get(uploaded["urls"]["info"])
    assert response.status_code == 200
    assert response.json() == uploaded
    assert client.get(uploaded["urls"]["info"], headers={"If-None-Match": response.headers["etag"]}).status_code == 304


# bitstream


@pytest.fixture(scope="module")
def bitstream(client: httpx.Client, uploaded: dict) -> bytes:
    response = client.get(uploaded["urls"]["bitstream"])
    assert response.status_code == 200
    return response.content


def test_bitstream_whole(client: httpx.Client, uploaded: dict, bitstream: bytes) -> None:
    response = client.get(uploaded["urls"]["bitstream"])
    assert len(bitstream) == uploaded["bytes"] and bitstream[:4] == b"SRIC"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == uploaded["etag"] and not response.headers["etag"].startswith("W/")
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["content-length"] == str(len(bitstream))
    assert response.headers["content-type"] == "application/octet-stream"


def test_bitstream_head(client: httpx.Client, uploaded: dict, bitstream: bytes) -> None:
    response = client.head(uploaded["urls"]["bitstream"], headers={"Range": "bytes=0-9"})
    assert response.status_code == 200  # Range is defined for GET only
    assert response.headers["content-length"] == str(len(bitstream))
    assert response.headers["etag"] == uploaded["etag"] and response.content == b""


def test_single_range(client: httpx.Client, uploaded: dict, bitstream: bytes) -> None:
    url = uploaded["urls"]["bitstream"]
    for header, start, end in [("bytes=0-99", 0, 99), ("bytes=100-", 100, len(bitstream) - 1),
                               ("bytes=-50", len(bitstream) - 50, len(bitstream) - 1),
                               ("bytes=10-99999999", 10, len(bitstream) - 1)]:  # fmt: skip
        response = client.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.headers["content-range"] == f"bytes {start}-{end}/{len(bitstream)}"
        assert response.content == bitstream[start : end + 1]
        assert response.headers["content-length"] == str(end - start + 1)


def test_multiple_ranges(client: httpx.Client, uploaded: dict, bitstream: bytes) -> None:
    response = client.get(uploaded["urls"]["bitstream"], headers={"Range": "bytes=0-3,100-109,-5"})
    assert response.status_code == 206
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    assert response.headers["content-length"] == str(len(response.content))
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + response.content
    )
    size = len(bitstream)
    parts = [(p["Content-Range"], p.get_payload(decode=True)) for p in message.iter_parts()]
    assert parts == [
        (f"bytes 0-3/{size}", bitstream[0:4]),
        (f"bytes 100-109/{size}", bitstream[100:110]),
        (f"bytes {size - 5}-{size - 1}/{size}", bitstream[-5:]),
    ]
    overlapping = client.get(uploaded["urls"]["bitstream"], headers={"Range": "bytes=0-50,20-99"})
    assert overlapping.status_code == 206 and overlapping.headers["content-range"] == f"bytes 0-99/{size}"


def test_too_many_ranges(client: httpx.Client, uploaded: dict, bitstream: bytes) -> None:
    header = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(9))  # the shared server allows 8
    response = client.get(uploaded["urls"]["bitstream"], headers={"Range": header})
    assert response.status_code == 416 and error_of(response) == "range_not_satisfiable"
    assert response.headers["content-range"] == f"bytes */{len(bitstream)}"


@pytest.mark.parametrize("header", ["bytes=99999999-", "bytes=-0"])
def test_unsatisfiable_range(client: httpx.Client, uploaded: dict, bitstream: bytes, header: str) -> None:
    response = client.get(uploaded["urls"]["bitstream"], headers={"Range": header})
    assert response.status_code == 416 and error_of(response) == "range_not_satisfiable"
    assert response.headers["content-range"] == f"bytes */{len(bitstream)}"


@pytest.mark.parametrize("header", ["bytes=5-2", "items=0-1", "bytes=abc", "bytes=0-1;x", "bytes"])
def test_malformed_range_is_ignored(client: httpx.Client, uploaded: dict, bitstream: bytes, header: str) -> None:
    response = client.get(uploaded["urls"]["bitstream"], headers={"Range": header})
    assert response.status_code == 200 and response.content == bitstream


def test_conditional_requests(client: httpx.Client, uploaded: dict, bitstream: bytes) -> None:
    url, etag = uploaded["urls"]["bitstream"], uploaded["etag"]
    matched = client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert matched.status_code == 206 and matched.content == bitstream[:10]
    for stale in ['"stale"', f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"]:
        response = client.get(url, headers={"Range": "bytes=0-9", "If-Range": stale})
        assert response.status_code == 200 and response.content == bitstream, stale
    not_modified = client.get(url, headers={"If-None-Match": f'"x", {etag}'})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert client.head(url, headers={"If-None-Match": "*"}).status_code == 304
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    failed = client.get(url, headers={"If-Match": '"other"'})
    assert failed.status_code == 412 and error_of(failed) == "precondition_failed"


def test_layer_prefix_decodes_like_the_picture(client: httpx.Client, uploaded: dict, codec_model) -> None:
    from codec.api import Decoder

    for layer in uploaded["layers"]:
        end = layer["cumulative_bytes"]
        prefix = client.get(uploaded["urls"]["bitstream"], headers={"Range": f"bytes=0-{end - 1}"})
        assert prefix.status_code == 206 and len(prefix.content) == end
        decoder = Decoder(prefix.content, codec_model)
        assert decoder.layers_available == layer["index"]
        expected = decoder.decode(layer["index"])
        picture = client.get(f"/image/{uploaded['id']}", params={"layers": layer["index"], "format": "png"})
        assert np.array_equal(pixels(picture.content), expected), f"layer {layer['index']}"


# listing and deletion


def test_listing_pages(writer: httpx.Client, client: httpx.Client, uploaded: dict) -> None:
    extra = [upload(writer, make_image(16, 16, seed=i)).json()["id"] for i in range(2)]
    seen, url = [], "/images?limit=1"
    count = None
    while url:
        page = client.get(url).json()
        count = page["count"]
        assert len(page["images"]) <= 1
        seen += [image["id"] for image in page["images"]]
        url = page["next"]
    assert len(seen) == len(set(seen)) == count
    assert {uploaded["id"], *extra} <= set(seen)
    assert seen.index(extra[1]) < seen.index(extra[0])  # newest first
    summary = client.get("/images", params={"limit": 500}).json()["images"]
    assert next(s for s in summary if s["id"] == uploaded["id"])["layer_count"] == len(uploaded["layers"])
    for image_id in extra:
        writer.delete(f"/image/{image_id}")


@pytest.mark.parametrize(
    ("params", "code"),
    [({"limit": 0}, "validation_error"), ({"limit": 100000}, "validation_error"),
     ({"limit": "x"}, "validation_error"), ({"cursor": "abc"}, "invalid_cursor"),
     ({"cursor": "-1"}, "invalid_cursor")],
)  # fmt: skip
def test_listing_parameters(client: httpx.Client, params: dict, code: str) -> None:
    response = client.get("/images", params=params)
    assert response.status_code == 422 and error_of(response) == code


def test_delete(writer: httpx.Client, client: httpx.Client) -> None:
    document = upload(writer, make_image(16, 16, seed=9)).json()
    url = f"/image/{document['id']}"
    assert client.get(url).status_code == 200  # now cached
    refused = client.delete(url)
    assert refused.status_code == 401 and error_of(refused) == "unauthorized"
    assert writer.delete(url).status_code == 204
    for suffix in ("", "/info", "/bitstream"):
        response = client.get(url + suffix)
        assert response.status_code == 404 and error_of(response) == "image_not_found"
    again = writer.delete(url)
    assert again.status_code == 404 and error_of(again) == "image_not_found"
    assert writer.delete("/image/..%2F..%2Fx").status_code == 404
    assert document["id"] not in [i["id"] for i in client.get("/images", params={"limit": 500}).json()["images"]]


# service endpoints


def test_health_ready_metrics(client: httpx.Client, uploaded: dict) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["device"] == "cpu" and ready["model"] == uploaded["model"]
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "codec_server_requests_total",
        "codec_server_request_seconds_bucket",
        "codec_server_model_queue_depth",
        'codec_server_stage_seconds_count{operation="encode",stage="layers"}',
        'codec_server_stage_seconds_count{operation="encode",stage="verify"}',
        'codec_server_cache_total{cache="picture"',
        "codec_server_ws_streams",
    ):
        assert name in metrics.text, name
    assert 'route="/image/{image_id}"' in metrics.text  # route templates, not raw ids
    assert uploaded["id"] not in metrics.text


def test_an_absent_metric_sample_raises(server) -> None:
    """`RunningServer.metric` must not read a renamed or misspelt metric as 0: the assertions built on it
    would pass whatever the server does. Registered counters without labels are exposed at 0 from the
    start; a labelled one appears only at its first increment, so a reader expecting that passes `default`."""
    with pytest.raises(LookupError, match="codec_server_no_such_metric"):
        server.metric("codec_server_no_such_metric")
    with pytest.raises(LookupError):
        server.metric("codec_server_cache_total", 'cache="no-such-cache",result="hit"')
    assert server.metric("codec_server_cache_total", 'cache="no-such-cache",result="hit"', default=0.0) == 0.0
    assert server.metric("codec_server_ws_send_timeouts_total") >= 0  # unlabelled: present before any timeout


def test_openapi_documents_every_endpoint(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths["/image/{image_id}/bitstream"]) >= {"get", "head"}
    assert set(paths["/image/{image_id}"]) >= {"get", "delete"}
    for path in ("/encode", "/image/{image_id}/info", "/images", "/health", "/ready", "/metrics"):
        assert path in paths, path
    assert client.get("/docs").status_code == 200


HEAD_COMPARED = ("content-type", "content-length", "etag", "cache-control", "x-layers", "content-security-policy")


@pytest.mark.parametrize(
    "target",
    ["/", "/health", "info", "image", "image?layers=1&format=webp", "/ready", "/metrics", "/images", "/openapi.json"],
)
def test_head_wherever_get_works(client: httpx.Client, uploaded: dict, target: str) -> None:
    """RFC 9110 9.3.2: HEAD is answered wherever GET is, with the GET's status and headers and no body."""
    name, _, query = target.partition("?")
    url = uploaded["urls"][name] if name in uploaded["urls"] else name
    url = f"{url}?{query}" if query else url
    got = client.get(url)
    head = client.head(url)
    assert (head.status_code, got.status_code) == (200, 200), head.text
    assert head.content == b""
    if target != "/metrics":  # its numbers (and so its length) change with every request
        assert {h: head.headers.get(h) for h in HEAD_COMPARED} == {h: got.headers.get(h) for h in HEAD_COMPARED}
        assert int(head.headers["content-length"]) == len(got.content)


def test_head_keeps_the_errors_and_conditions_of_get(client: httpx.Client, uploaded: dict) -> None:
    unknown = client.head("/image/" + "0" * 32 + "/info")
    assert unknown.status_code == 404 and unknown.content == b""
    assert client.head(uploaded["urls"]["image"] + "?layers=0").status_code == 422
    etag = client.get(uploaded["urls"]["info"]).headers["etag"]
    assert client.head(uploaded["urls"]["info"], headers={"If-None-Match": etag}).status_code == 304
    assert client.head("/encode").status_code == 405  # POST only: no GET, so no HEAD either


def test_unknown_routes_and_methods(client: httpx.Client) -> None:
    missing = client.get("/no/such/path")
    assert missing.status_code == 404 and error_of(missing) == "not_found"
    wrong = client.put("/images")
    assert wrong.status_code == 405 and error_of(wrong) == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]
    assert client.post("/health").status_code == 405


def test_cors(client: httpx.Client, uploaded: dict) -> None:
    origin = {"Origin": "http://viewer.example"}
    response = client.get(uploaded["urls"]["bitstream"], headers={**origin, "Range": "bytes=0-1"})
    assert response.headers["access-control-allow-origin"] == "http://viewer.example"
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"content-range", "etag", "accept-ranges"} <= exposed
    preflight = client.options(
        uploaded["urls"]["bitstream"],
        headers={**origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"},
    )
    assert preflight.status_code == 200
    stranger = client.get("/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers


def test_the_info_psnr_is_that_of_the_decoded_layer(client: httpx.Client, writer: httpx.Client) -> None:
    """Computed here independently of the server: 10·log10(255² / MSE) against the uploaded pixels."""
    original = make_image(72, 40, seed=9)
    document = upload(writer, original).json()
    source = pixels(original).astype(np.float64)
    for layer in document["layers"]:
        decoded = pixels(client.get(document["urls"]["image"], params={"layers": layer["index"]}).content)
        mse = np.mean((decoded.astype(np.float64) - source) ** 2)
        assert layer["psnr"] == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-3)
