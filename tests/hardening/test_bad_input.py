"""The bad-input table: hostile or broken requests against the session's real server, each with its exact
status and error code, every answer free of tracebacks and paths; afterwards the server is healthy.

Valid oddities (1xN, CMYK, 16-bit, EXIF rotation, RGBA, float TIFF) are in the table too: they must be
stored (201) with the right size. GIF is not an accepted format (settings.allowed_formats), so an
animated GIF is refused with 415 before any decoding.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.harness import SESSION_SERVER_ENV, WRITE_KEY, RunningServer, make_image, upload

from . import hostile
from .answers import assert_no_leak, error_code

MAX_UPLOAD = int(SESSION_SERVER_ENV["CODEC_SERVER_MAX_UPLOAD_BYTES"])  # the session server's limits
MAX_RANGES = int(SESSION_SERVER_ENV["CODEC_SERVER_MAX_RANGES"])
MAX_PIXELS = int(SESSION_SERVER_ENV["CODEC_SERVER_MAX_PIXELS"])


@dataclass(frozen=True)
class Target:
    writer: httpx.Client  # sends the write key
    anonymous: httpx.Client
    image: dict  # the info document of a stored 48x40 image
    bitstream: bytes

    @property
    def bitstream_url(self) -> str:
        return self.image["urls"]["bitstream"]

    def encode(self, data: bytes, name: str = "upload.png", mime: str = "image/png") -> httpx.Response:
        return upload(self.writer, data, name, mime)

    def ranged(self, range_header: str, **headers: str) -> httpx.Response:
        return self.anonymous.get(self.bitstream_url, headers={"Range": range_header, **headers})

    def picture(self, **params: str) -> httpx.Response:
        return self.anonymous.get(self.image["urls"]["image"], params=params)

    def iiif(self, request: str, image_id: str | None = None) -> httpx.Response:
        """`/iiif/3/{id}/{request}` (the raw path: nothing is re-encoded on the way)."""
        return self.anonymous.get(f"/iiif/3/{image_id or self.image['id']}/{request}")


Check = Callable[[httpx.Response, Target], None]


@dataclass(frozen=True)
class BadInput:
    name: str
    send: Callable[[Target], httpx.Response]
    status: int
    code: str | None  # the error code; None for an answer that is not an error
    check: Check | None = None


def stored_as(width: int, height: int, source_format: str) -> Check:
    def check(response: httpx.Response, _: Target) -> None:
        document = response.json()
        assert (document["width"], document["height"], document["source_format"]) == (width, height, source_format)

    return check


def shown_turned_clockwise(response: httpx.Response, target: Target) -> None:
    """The 24x16 gradient (red rising left to right, green top to bottom) stored with EXIF orientation 6 is
    served 16x24 and turned clockwise: red rises top to bottom, green falls left to right. Turned the other
    way, both would run the opposite direction."""
    stored_as(16, 24, "JPEG")(response, target)
    answer = target.anonymous.get(response.json()["urls"]["image"])
    assert answer.status_code == 200
    with Image.open(io.BytesIO(answer.content)) as picture:
        pixels = np.asarray(picture.convert("RGB")).astype(float)
    assert pixels.shape == (24, 16, 3)
    red, green = pixels[:, :, 0], pixels[:, :, 1]
    assert red[-6:].mean() > red[:6].mean() + 100, (red[:6].mean(), red[-6:].mean())
    assert green[:, :4].mean() > green[:, -4:].mean() + 100, (green[:, :4].mean(), green[:, -4:].mean())


def whole_body(response: httpx.Response, target: Target) -> None:
    assert response.content == target.bitstream and "content-range" not in response.headers


def content_range(first: int, last: int | None = None) -> Check:
    """A single-part 206 for bytes first..last (default: to the end)."""

    def check(response: httpx.Response, target: Target) -> None:
        size = len(target.bitstream)
        end = size - 1 if last is None else last
        assert response.headers["content-range"] == f"bytes {first}-{end}/{size}"
        assert response.content == target.bitstream[first : end + 1]

    return check


def unsatisfied(response: httpx.Response, target: Target) -> None:
    assert response.headers["content-range"] == f"bytes */{len(target.bitstream)}"


def streamed_body(size: int) -> Iterator[bytes]:
    """A multipart body sent in chunks, without Content-Length."""
    yield b'--edge\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    for _ in range(size // 65536 + 1):
        yield b"\0" * 65536
    yield b"\r\n--edge--\r\n"


def many_fields(count: int) -> bytes:
    parts = [f'--edge\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n' for i in range(count)]
    return ("".join(parts) + "--edge--\r\n").encode()


MULTIPART = {"Content-Type": "multipart/form-data; boundary=edge"}
UPPER = "ABCDEF0123456789" * 2
TABLE = [
    # not images, or not accepted ones
    BadInput("text file", lambda t: t.encode(b"hello, I am not a picture"), 415, "unsupported_format"),
    BadInput("empty file", lambda t: t.encode(b""), 415, "unsupported_format"),
    BadInput("pdf", lambda t: t.encode(b"%PDF-1.7\n1 0 obj\n", "a.pdf", "application/pdf"), 415, "unsupported_format"),
    BadInput("svg", lambda t: t.encode(b'<svg xmlns="http://www.w3.org/2000/svg"/>', "a.svg"), 415,
             "unsupported_format"),
    BadInput("png signature only", lambda t: t.encode(hostile.PNG_SIGNATURE), 415, "unsupported_format"),
    BadInput("jpeg header only", lambda t: t.encode(make_image(32, 24, "JPEG")[:20]), 415, "unsupported_format"),
    BadInput("animated gif", lambda t: t.encode(hostile.animated_gif(), "a.gif", "image/gif"), 415,
             "unsupported_format"),
    BadInput("icon", lambda t: t.encode(hostile.icon(), "a.ico"), 415, "unsupported_format"),
    BadInput("0x0 png", lambda t: t.encode(hostile.png_declaring(0, 0)), 415, "unsupported_format"),
    BadInput("0x40 png", lambda t: t.encode(hostile.png_declaring(0, 40)), 415, "unsupported_format"),
    # damaged
    BadInput("truncated png", lambda t: t.encode(hostile.truncated(make_image(64, 48, noise=True))), 400,
             "invalid_image"),
    BadInput("truncated jpeg", lambda t: t.encode(hostile.truncated(make_image(64, 48, "JPEG", noise=True))), 400,
             "invalid_image"),
    BadInput("png declaring a size its data lacks", lambda t: t.encode(hostile.png_declaring(300, 200)), 400,
             "invalid_image"),
    # too many pixels: refused from the header, nothing allocated
    BadInput("png bomb 100000x100000", lambda t: t.encode(hostile.png_declaring(100_000, 100_000)), 413,
             "too_many_pixels"),
    BadInput("jpeg bomb 65000x65000", lambda t: t.encode(hostile.jpeg_declaring(65_000, 65_000)), 413,
             "too_many_pixels"),
    BadInput("bmp bomb 60000x60000", lambda t: t.encode(hostile.bmp_declaring(60_000, 60_000)), 413,
             "too_many_pixels"),
    BadInput("above max_pixels", lambda t: t.encode(hostile.png_declaring(1000, MAX_PIXELS // 1000 + 1)), 413,
             "too_many_pixels"),
    # valid oddities: converted and stored
    BadInput("1x40 png", lambda t: t.encode(hostile.solid_png(1, 40)), 201, None, stored_as(1, 40, "PNG")),
    BadInput("40x1 png", lambda t: t.encode(hostile.solid_png(40, 1)), 201, None, stored_as(40, 1, "PNG")),
    BadInput("cmyk jpeg", lambda t: t.encode(hostile.cmyk_jpeg(24, 16), "c.jpg", "image/jpeg"), 201, None,
             stored_as(24, 16, "JPEG")),
    BadInput("16-bit png", lambda t: t.encode(hostile.sixteen_bit_png(24, 16)), 201, None,
             stored_as(24, 16, "PNG")),
    BadInput("exif rotated jpeg", lambda t: t.encode(hostile.rotated_jpeg(24, 16), "r.jpg", "image/jpeg"), 201,
             None, shown_turned_clockwise),
    BadInput("rgba png", lambda t: t.encode(hostile.rgba_png(24, 16)), 201, None, stored_as(24, 16, "PNG")),
    BadInput("float tiff", lambda t: t.encode(hostile.float_tiff(24, 16), "f.tif", "image/tiff"), 201, None,
             stored_as(24, 16, "TIFF")),
    BadInput("traversal filename, wrong mime", lambda t: t.encode(make_image(8, 8), "../../etc/passwd", "text/plain"),
             201, None, stored_as(8, 8, "PNG")),
    # the request itself
    BadInput("oversized upload", lambda t: t.encode(hostile.PNG_SIGNATURE + b"\0" * (MAX_UPLOAD + 100)), 413,
             "upload_too_large"),
    BadInput("oversized upload without content-length",
             lambda t: t.writer.post("/encode", content=streamed_body(2 * MAX_UPLOAD), headers=MULTIPART), 413,
             "upload_too_large"),
    BadInput("missing file field", lambda t: t.writer.post("/encode", data={"image": "x"}), 422, "validation_error"),
    BadInput("file as a text field", lambda t: t.writer.post("/encode", data={"file": "x"}), 422, "validation_error"),
    BadInput("json body", lambda t: t.writer.post("/encode", json={"file": "x"}), 422, "validation_error"),
    BadInput("raw image body", lambda t: t.writer.post("/encode", content=make_image(8, 8),
                                                       headers={"Content-Type": "image/png"}), 422,
             "validation_error"),
    BadInput("multipart without boundary", lambda t: t.writer.post("/encode", content=b"--x\r\n",
                                                                   headers={"Content-Type": "multipart/form-data"}),
             400, "bad_request"),
    BadInput("multipart cut short", lambda t: t.writer.post("/encode", content=b"--edge\r\nContent-Disp",
                                                            headers=MULTIPART), 422, "validation_error"),
    BadInput("2000 multipart fields", lambda t: t.writer.post("/encode", content=many_fields(2000),
                                                              headers=MULTIPART), 400, "bad_request"),
    # credentials
    BadInput("no key", lambda t: t.anonymous.post("/encode", files={"file": ("a.png", make_image(8, 8))}), 401,
             "unauthorized"),
    BadInput("wrong key", lambda t: t.anonymous.post("/encode", files={"file": ("a.png", make_image(8, 8))},
                                                     headers={"Authorization": f"Bearer {WRITE_KEY}x"}), 401,
             "unauthorized"),
    BadInput("key as basic auth", lambda t: t.anonymous.post("/encode", files={"file": ("a.png", make_image(8, 8))},
                                                             headers={"Authorization": f"Basic {WRITE_KEY}"}), 401,
             "unauthorized"),
    BadInput("key in the query", lambda t: t.anonymous.post(f"/encode?key={WRITE_KEY}",
                                                            files={"file": ("a.png", make_image(8, 8))}), 401,
             "unauthorized"),
    BadInput("delete without key", lambda t: t.anonymous.delete(t.image["urls"]["image"]), 401, "unauthorized"),
    # ids and paths
    BadInput("id with encoded traversal", lambda t: t.anonymous.get("/image/..%2F..%2Fetc%2Fpasswd/info"), 404,
             "not_found"),  # %2F is a slash once decoded: no route matches
    BadInput("id of dots", lambda t: t.anonymous.get("/image/%2e%2e/bitstream"), 404, "image_not_found"),
    BadInput("id in upper case", lambda t: t.anonymous.get(f"/image/{t.image['id'].upper()}/info"), 404,
             "image_not_found"),
    BadInput("id with a nul byte", lambda t: t.anonymous.get(f"/image/{t.image['id'][:-1]}%00"), 404,
             "image_not_found"),
    BadInput("id one digit longer", lambda t: t.anonymous.get(f"/image/{t.image['id']}0/info"), 404,
             "image_not_found"),
    BadInput("id of non-ascii digits", lambda t: t.anonymous.get("/image/" + "\u0663" * 32), 404, "image_not_found"),
    BadInput("delete with traversal", lambda t: t.writer.delete("/image/..%2F..%2Findex.sqlite3"), 404,
             "not_found"),
    BadInput("static with traversal", lambda t: t.anonymous.get("/static/..%2Fserver%2Fapp.py"), 404, "not_found"),
    BadInput("static with dot segments", lambda t: t.anonymous.get("/static/%2e%2e/%2e%2e/etc/passwd"), 404,
             "not_found"),
    # layers and format
    BadInput("layers 0", lambda t: t.picture(layers="0"), 422, "layers_out_of_range"),
    BadInput("layers -1", lambda t: t.picture(layers="-1"), 422, "layers_out_of_range"),
    BadInput("layers 10^9", lambda t: t.picture(layers=str(10**9)), 422, "layers_out_of_range"),
    BadInput("layers a string", lambda t: t.picture(layers="two"), 422, "validation_error"),
    BadInput("layers empty", lambda t: t.picture(layers=""), 422, "validation_error"),
    BadInput("layers of 5000 digits", lambda t: t.picture(layers="9" * 5000), 422, "validation_error"),
    BadInput("format gif", lambda t: t.picture(format="gif"), 422, "validation_error"),
    # ranges
    BadInput("inverted range", lambda t: t.ranged("bytes=50-10"), 200, None, whole_body),
    BadInput("overlapping ranges", lambda t: t.ranged("bytes=0-50,20-99,90-120"), 206, None, content_range(0, 120)),
    BadInput("1000 ranges", lambda t: t.ranged("bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(1000))), 416,
             "range_not_satisfiable", unsatisfied),
    BadInput("ranges just above the limit",
             lambda t: t.ranged("bytes=" + ",".join(f"{9 * i}-{9 * i}" for i in range(MAX_RANGES + 1))), 416,
             "range_not_satisfiable", unsatisfied),
    BadInput("non-byte unit", lambda t: t.ranged("pages=0-1"), 200, None, whole_body),
    BadInput("suffix range past the size", lambda t: t.ranged("bytes=-99999999"), 206, None, content_range(0)),
    BadInput("start past the size", lambda t: t.ranged("bytes=99999999-"), 416, "range_not_satisfiable",
             unsatisfied),
    BadInput("empty suffix", lambda t: t.ranged("bytes=-0"), 416, "range_not_satisfiable", unsatisfied),
    BadInput("5000-digit end", lambda t: t.ranged("bytes=10-" + "9" * 5000), 206, None, content_range(10)),
    BadInput("signed numbers", lambda t: t.ranged("bytes=+1-+5"), 200, None, whole_body),
    BadInput("8 KiB of range garbage", lambda t: t.ranged("bytes=" + "0-1;" * 2048), 200, None, whole_body),
    BadInput("if-range with a weak etag", lambda t: t.ranged("bytes=0-9", **{"If-Range": f"W/{t.image['etag']}"}),
             200, None, whole_body),
    BadInput("if-range with a date", lambda t: t.ranged("bytes=0-9", **{"If-Range": "Wed, 21 Oct 2015 07:28:00 GMT"}),
             200, None, whole_body),
    BadInput("if-match with a weak etag", lambda t: t.anonymous.get(t.bitstream_url,
                                                                    headers={"If-Match": f"W/{t.image['etag']}"}),
             412, "precondition_failed"),
    # IIIF image requests (the stored picture is 48x40): 400 malformed, 404 unknown, 501 not served
    BadInput("iiif region outside the picture", lambda t: t.iiif("100,100,10,10/max/0/default.png"), 400,
             "bad_request"),
    BadInput("iiif zero-width region", lambda t: t.iiif("0,0,0,10/max/0/default.png"), 400, "bad_request"),
    BadInput("iiif 5000-digit region", lambda t: t.iiif("9" * 5000 + ",0,1,1/max/0/default.png"), 400,
             "bad_request"),
    BadInput("iiif percent region of 5000 digits", lambda t: t.iiif("pct:0,0," + "9" * 5000 + ",1/max/0/default.png"),
             400, "bad_request"),
    BadInput("iiif upscaling without ^", lambda t: t.iiif("full/4000,/0/default.png"), 400, "bad_request"),
    BadInput("iiif upscaling past maxArea", lambda t: t.iiif("full/^100000,100000/0/default.png"), 400,
             "bad_request"),
    BadInput("iiif negative size", lambda t: t.iiif("full/-5,/0/default.png"), 400, "bad_request"),
    BadInput("iiif zero size", lambda t: t.iiif("full/0,0/0/default.png"), 400, "bad_request"),
    BadInput("iiif arbitrary rotation", lambda t: t.iiif("full/max/45/default.png"), 501, "not_implemented"),
    BadInput("iiif rotation past float range", lambda t: t.iiif("full/max/1e309/default.png"), 400, "bad_request"),
    BadInput("iiif unknown quality", lambda t: t.iiif("full/max/0/sepia.png"), 400, "bad_request"),
    BadInput("iiif format not served", lambda t: t.iiif("full/max/0/default.gif"), 501, "not_implemented"),
    BadInput("iiif unknown format", lambda t: t.iiif("full/max/0/default.exe"), 400, "bad_request"),
    BadInput("iiif no format", lambda t: t.iiif("full/max/0/default"), 400, "bad_request"),
    BadInput("iiif unknown image", lambda t: t.iiif("full/max/0/default.png", "0" * 32), 404, "image_not_found"),
    BadInput("iiif info of a malformed id", lambda t: t.iiif("info.json", "x" * 40), 404, "image_not_found"),
    # methods and origins
    BadInput("put on encode", lambda t: t.writer.put("/encode", content=b"x"), 405, "method_not_allowed"),
    BadInput("preflight from another origin",
             lambda t: t.anonymous.options("/encode", headers={"Origin": "http://evil.example",
                                                              "Access-Control-Request-Method": "POST"}),
             400, "bad_request"),
]  # fmt: skip


@pytest.fixture(scope="module")
def target(writer: httpx.Client, client: httpx.Client, uploaded: dict) -> Target:
    return Target(writer, client, uploaded, client.get(uploaded["urls"]["bitstream"]).content)


@pytest.fixture(scope="module")
def log_start(server: RunningServer) -> int:
    """Where the server log stood before the table ran."""
    return len(server.log())


def test_the_table_has_thirty_distinct_bad_inputs() -> None:
    names = [case.name for case in TABLE]
    assert len(set(names)) == len(names) and len(names) >= 30
    print(f"bad inputs in the table: {len(names)}")


@pytest.mark.parametrize("case", TABLE, ids=[case.name for case in TABLE])
def test_bad_input(case: BadInput, target: Target, server: RunningServer, log_start: int) -> None:
    response = case.send(target)
    assert response.status_code == case.status, response.text[:300]
    if case.code is None:
        assert_no_leak(response, str(server.data_dir))
    else:
        assert error_code(response, str(server.data_dir)) == case.code
    if case.check is not None:
        case.check(response, target)
    if response.status_code == 201:
        assert target.writer.delete(response.json()["urls"]["image"]).status_code == 204


def test_the_server_is_healthy_after_the_table(target: Target, server: RunningServer, log_start: int) -> None:
    assert server.process.poll() is None
    assert target.anonymous.get("/health").json() == {"status": "ok"}
    assert target.anonymous.get("/ready").status_code == 200
    assert target.anonymous.get(target.bitstream_url).content == target.bitstream  # the stored image is intact
    response = target.encode(make_image(32, 24, seed=7))
    assert response.status_code == 201, response.text
    assert target.anonymous.get(response.json()["urls"]["image"], params={"layers": 2}).status_code == 200
    assert target.writer.delete(response.json()["urls"]["image"]).status_code == 204
    assert "Traceback" not in server.log()[log_start:]
