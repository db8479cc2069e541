"""A progressive client: fetch a stored image layer by layer and decode it here.

The server stores every image once as a layered container; any prefix that ends
at a layer boundary is a valid file. So the client decides how many bytes to
spend and refines the picture itself, one RNN step per layer:

    with RangeFetch("http://127.0.0.1:8000/image/ID", model) as fetch:
        for refinement in fetch.refine(max_layers=2):   # header + layers 1..2, one Range request
            ...
        for refinement in fetch.refine():               # only the bytes of layers 3..L
            ...

    for index, pixels in iter_layers(url, model, via="ws", max_bytes=20_000):
        ...

Over HTTP ranges the layer table comes from the server's info document (or,
for a bare container URL, from the header through small Range requests); over
the WebSocket it comes in the first message and each layer arrives as one
message, granted one credit at a time. A damaged or truncated layer raises the
codec's own error after the layers before it have been yielded; the server's
refusals raise `ServerError` or `StreamClosedError` with the server's words.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
from PIL import Image
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from codec import container
from codec.api import Decoder
from codec.errors import CodecError, ModelMismatchError, TruncatedLayerError
from codec.imageio import write_image
from codec.model import ScalableCodec

Via = Literal["range", "ws"]
PROTOCOL_VERSION = 1
CREDIT_WINDOW = 2  # layers in flight over the WebSocket: one decodes while the next arrives
MAX_MESSAGE_BYTES = 1 << 28  # a hard bound on one WebSocket message; layers are checked against the table too
ERROR_BODY_LIMIT = 65536  # bytes of an error answer read for its message
_IMAGE_PATH = re.compile(r"^(?P<root>.*?)/(?:ws/)?image/(?P<id>[0-9a-f]{32})(?:/info|/bitstream)?/?$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_CLOSE_MEANINGS = {
    1008: "the server refused a client message",
    1011: "server error",
    1013: "the server is busy; retry later",
    4401: "a read key is required (--key)",
    4404: "no image with this id",
    4408: "the server waited too long for credit",
    4429: "too many streams are open; retry later",
}


class ClientError(Exception):
    """The server or the network failed, or the request cannot be met; the codec's data is not at fault."""


class ServerError(ClientError):
    """The server answered with an error status and its `{"error": {"code", "message"}}` body."""

    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        retry = f" (retry after {retry_after} s)" if retry_after else ""
        super().__init__(f"server answered {status} {code}: {message}{retry}")


class StreamClosedError(ClientError):
    """The server closed the WebSocket before the requested layers had arrived."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        meaning = _CLOSE_MEANINGS.get(code, "the stream ended")
        detail = meaning if reason in ("", meaning) else f"{meaning}: {reason}"
        super().__init__(f"WebSocket closed with {code}: {detail}")


class ProtocolError(ClientError):
    """The server's answer does not follow the protocol (a status, a range or a message out of place)."""


@dataclass(frozen=True)
class ImageLocation:
    """Where one image can be read. `info` and `websocket` are None for a bare container URL."""

    bitstream: str
    info: str | None
    websocket: str | None


def locate(url: str) -> ImageLocation:
    """Accept `…/image/ID`, `…/image/ID/info`, `…/image/ID/bitstream` or `ws://…/ws/image/ID`;
    any other http(s) URL is taken as a bare container served with byte ranges."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise ClientError(f"not a URL: {url!r} ({error})") from None
    scheme = {"ws": "http", "wss": "https"}.get(parsed.scheme, parsed.scheme)
    if scheme not in ("http", "https") or not parsed.host:
        raise ClientError(f"not an http(s) or ws(s) URL: {url!r}")
    match = _IMAGE_PATH.match(parsed.path)
    if match is None:
        if scheme != parsed.scheme:
            raise ClientError(f"a WebSocket URL must end in /ws/image/ID: {url!r}")
        return ImageLocation(bitstream=url, info=None, websocket=None)
    root = str(parsed.copy_with(scheme=scheme, path=match["root"] or "/", query=None, fragment=None)).rstrip("/")
    image = f"{root}/image/{match['id']}"
    socket_root = root.replace("http", "ws", 1)
    return ImageLocation(
        bitstream=f"{image}/bitstream", info=f"{image}/info", websocket=f"{socket_root}/ws/image/{match['id']}"
    )


@dataclass(frozen=True)
class LayerTable:
    """What the client knows before any layer arrives: sizes, layer ends and the server's PSNR."""

    width: int
    height: int
    model: str | None
    header_bytes: int
    ends: tuple[int, ...]
    psnr: tuple[float | None, ...]
    etag: str | None = None

    @classmethod
    def from_info(cls, info: object) -> LayerTable:
        if not isinstance(info, dict):
            raise ProtocolError("the info document is not a JSON object")
        try:
            layers = info["layers"]
            table = cls(
                width=int(info["width"]),
                height=int(info["height"]),
                model=str(info["model"]),
                header_bytes=int(info["header_bytes"]),
                ends=tuple(int(layer["end"]) for layer in layers),
                psnr=tuple(None if layer.get("psnr") is None else float(layer["psnr"]) for layer in layers),
                etag=info.get("etag"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ProtocolError(f"the info document lacks the layer table ({error!r})") from None
        if not table.ends or list(table.ends) != sorted(table.ends) or table.ends[0] <= table.header_bytes:
            raise ProtocolError("the info document's layer table is not in order")
        return table

    @classmethod
    def from_header(cls, header: container.ContainerHeader, etag: str | None) -> LayerTable:
        return cls(
            width=header.width,
            height=header.height,
            model=header.model_id.hex(),
            header_bytes=header.header_bytes,
            ends=tuple(entry.end for entry in header.layers),
            psnr=(None,) * header.layer_count,
            etag=etag,
        )

    @property
    def layer_count(self) -> int:
        return len(self.ends)

    def end_of_layer(self, n: int) -> int:
        """Bytes that decode layers 1..n, header included (n = 0: the header)."""
        return self.ends[n - 1] if n else self.header_bytes

    def bpp(self, n: int) -> float:
        return self.end_of_layer(n) * 8 / (self.width * self.height)

    def target(self, max_layers: int | None, max_bytes: int | None, psnr_target: float | None) -> int:
        """The layer to stop at: at most `max_layers`, the last whole layer within `max_bytes`, or the
        first layer the server measured at `psnr_target` dB (all layers when none reaches it)."""
        if sum(rule is not None for rule in (max_layers, max_bytes, psnr_target)) > 1:
            raise ClientError("give at most one of max_layers, max_bytes and psnr_target")
        if max_layers is not None:
            if not 1 <= max_layers <= self.layer_count:
                raise ClientError(f"layers must be within 1..{self.layer_count} for this image")
            return max_layers
        if max_bytes is not None:
            fitting = sum(1 for end in self.ends if end <= max_bytes)
            if fitting == 0:
                raise ClientError(f"{max_bytes} bytes hold no whole layer: layer 1 needs {self.ends[0]}")
            return fitting
        if psnr_target is not None:
            if any(value is None for value in self.psnr):
                raise ClientError("the server reports no PSNR for this image: use max_layers or max_bytes")
            reached = [index for index, value in enumerate(self.psnr, 1) if value is not None and value >= psnr_target]
            return reached[0] if reached else self.layer_count
        return self.layer_count

    def check_header(self, header: container.ContainerHeader) -> None:
        """The container's own header must describe the same layers as the table the client planned with."""
        if (header.width, header.height, header.header_bytes) != (self.width, self.height, self.header_bytes) or (
            tuple(entry.end for entry in header.layers) != self.ends
        ):
            raise ProtocolError("the container header disagrees with the server's layer table")


@dataclass(frozen=True)
class Refinement:
    """One decoded layer: the picture from layers 1..layer, and what it cost."""

    layer: int
    pixels: np.ndarray
    bytes: int  # bitstream bytes behind this picture: header and layers 1..layer
    bpp: float
    decode_seconds: float


class _Reconstruction:
    """The bytes held so far and the incremental decoder that turns whole layers into pictures."""

    def __init__(self, model: ScalableCodec) -> None:
        self.decoder = Decoder(b"", model)
        self.table: LayerTable | None = None
        self.failure: CodecError | None = None

    @property
    def bytes_held(self) -> int:
        return self.decoder.bytes_held

    def feed(self, data: bytes) -> None:
        """Append bytes that follow those held; once the header is whole, it must match the table."""
        before = self.decoder.bytes_held
        try:
            self.decoder.feed(data)
        except CodecError as error:
            self.failure = error
            raise
        if self.table is not None and before < self.table.header_bytes <= self.decoder.bytes_held:
            self.table.check_header(self.decoder.header)

    def refinements(self, upto: int) -> Iterator[Refinement]:
        """Decode every whole layer held, up to `upto`, that is not decoded yet."""
        if self.failure is not None:
            raise self.failure  # the held bytes are damaged: a later call fails the same way
        table = self.table
        assert table is not None
        while self.decoder.layers_decoded < min(upto, self.decoder.layers_available):
            layer = self.decoder.layers_decoded + 1
            started = time.perf_counter()
            try:
                pixels = self.decoder.decode(layer)
            except CodecError as error:
                self.failure = error
                raise
            seconds = time.perf_counter() - started
            yield Refinement(layer, pixels, table.end_of_layer(layer), table.bpp(layer), seconds)


def _check_model(table: LayerTable, model: ScalableCodec) -> None:
    if table.model is not None and table.model != model.model_id.hex():
        raise ModelMismatchError(
            f"the image was written by model {table.model}, the loaded weights are {model.model_id.hex()}: "
            "fetch with the server's weights (--weights)"
        )


def _server_error(response: httpx.Response) -> ServerError:
    """The server's `{"error": {"code", "message"}}`, or what there is of a foreign error body."""
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > ERROR_BODY_LIMIT:
            break
    try:
        detail = json.loads(body)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        code = response.reason_phrase.lower().replace(" ", "_") or "error"
        message = body[:200].decode("utf-8", "replace").strip() or response.reason_phrase
    return ServerError(response.status_code, code, message, response.headers.get("retry-after"))


def _unexpected(response: httpx.Response, wanted: str) -> ClientError:
    if response.status_code >= 400:
        return _server_error(response)
    if response.status_code == 200 and wanted == "206":
        return ProtocolError(
            "the server answered 200 to a Range request: it does not serve ranges, or the bitstream changed"
        )
    return ProtocolError(f"the server answered {response.status_code}, expected {wanted}")


class RangeFetch:
    """Fetch one image over HTTP byte ranges, exactly the bytes of the layers asked for, and decode them.

    `refine()` may be called again for more layers: only the missing bytes are requested, and
    a transfer cut short resumes from the last byte held. `bytes_received` counts bitstream
    bytes (the info document aside). Memory: the container prefix up to the last layer asked
    for, one network chunk, and the decoder's pictures.
    """

    def __init__(
        self,
        url: str,
        model: ScalableCodec,
        *,
        key: str | None = None,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.location = locate(url)
        self.model = model
        self.bytes_received = 0
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout, follow_redirects=True)
        self._held = _Reconstruction(model)
        self._etag: str | None = None

    def __enter__(self) -> RangeFetch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    @property
    def table(self) -> LayerTable:
        """The layer table; the first use asks the server for it."""
        if self._held.table is None:
            table = self._discover() if self.location.info is not None else self._discover_from_header()
            self._etag = table.etag or self._etag
            self._held.table = table
        return self._held.table

    def refine(
        self, max_layers: int | None = None, max_bytes: int | None = None, psnr_target: float | None = None
    ) -> Iterator[Refinement]:
        """Yield the layers beyond those already decoded, up to the target (default: all), each
        as soon as its bytes are in: one Range request for all the missing bytes."""
        table = self.table
        upto = table.target(max_layers, max_bytes, psnr_target)
        held = self._held
        yield from held.refinements(upto)
        wanted = table.end_of_layer(upto)
        if held.bytes_held < wanted:
            for chunk in self._ranged(held.bytes_held, wanted):
                held.feed(chunk)
                yield from held.refinements(upto)

    def _discover(self) -> LayerTable:
        assert self.location.info is not None
        try:
            response = self._http.get(self.location.info, headers=self._headers)
        except httpx.TransportError as error:
            raise ClientError(f"cannot reach {self.location.info}: {error}") from error
        if response.status_code != 200:
            raise _unexpected(response, "200")
        try:
            info = response.json()
        except ValueError:
            raise ProtocolError("the info document is not JSON") from None
        table = LayerTable.from_info(info)
        _check_model(table, self.model)
        return table

    def _discover_from_header(self) -> LayerTable:
        """A bare container: its fixed header part, then the layer table, through two small ranges."""
        fixed = b"".join(self._ranged(0, container.FIXED_HEADER_BYTES))
        head = fixed + b"".join(self._ranged(len(fixed), container.required_header_bytes(fixed)))
        header = container.parse_header(head)
        self._held.feed(head)  # held only once whole, so a failed discovery can simply be tried again
        return LayerTable.from_header(header, self._etag)

    def _ranged(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes `start` .. `end - 1` of the bitstream as they arrive: exactly those, or an error.
        A transfer cut short raises the codec's TruncatedLayerError once the whole layers are out."""
        headers = {**self._headers, "Range": f"bytes={start}-{end - 1}"}
        if self._etag:
            headers["If-Range"] = self._etag
        received = 0
        answered = False
        try:
            with self._http.stream("GET", self.location.bitstream, headers=headers) as response:
                if response.status_code != 206:
                    raise _unexpected(response, "206")
                self._check_content_range(response.headers.get("content-range", ""), start, end)
                self._etag = self._etag or response.headers.get("etag")
                answered = True
                for chunk in response.iter_bytes():
                    if received + len(chunk) > end - start:
                        raise ProtocolError(f"the server sent more than the {end - start} bytes asked for")
                    received += len(chunk)
                    self.bytes_received += len(chunk)
                    yield chunk
        except httpx.TransportError as error:
            if not answered:
                raise ClientError(f"cannot reach {self.location.bitstream}: {error}") from error
            raise TruncatedLayerError(self._incomplete(start + received, f"the transfer broke off: {error}")) from error
        if received < end - start:
            raise TruncatedLayerError(self._incomplete(start + received, f"the server sent {received} bytes"))

    def _incomplete(self, position: int, why: str) -> str:
        table = self._held.table
        part = "the header" if table is None else f"layer {sum(1 for e in table.ends if e <= position) + 1}"
        return f"{part} is incomplete: bytes end at {position}; {why}"

    def _check_content_range(self, value: str, start: int, end: int) -> None:
        match = _CONTENT_RANGE.match(value.strip())
        total = self._held.table.ends[-1] if self._held.table is not None else None
        if (
            match is None
            or (int(match[1]), int(match[2])) != (start, end - 1)
            or (total is not None and match[3] != str(total))
        ):
            raise ProtocolError(f"asked for bytes {start}-{end - 1}, the server sent Content-Range {value!r}")


class WebSocketFetch:
    """Receive one image over the server's WebSocket (protocol 1) and decode each layer as it arrives.

    Credit is granted a layer at a time, `window` layers ahead, so one layer decodes while the next
    arrives and at most `window` layers are in flight; the stream stops at the target and closes
    with 1000. One fetch is one stream: it restarts from layer 1 on the server, so use `RangeFetch`
    to add layers later.
    """

    def __init__(
        self,
        url: str,
        model: ScalableCodec,
        *,
        key: str | None = None,
        timeout: float = 60.0,
        window: int = CREDIT_WINDOW,
    ) -> None:
        location = locate(url)
        if location.websocket is None:
            raise ClientError(f"the WebSocket path needs a server image URL (…/image/ID), not {url!r}")
        if not 1 <= window <= 255:
            raise ValueError("window must be within 1..255")
        self.url = location.websocket
        self.model = model
        self.timeout = timeout
        self.window = window
        self.table: LayerTable | None = None
        self.bytes_received = 0
        self._headers = {"Authorization": f"Bearer {key}"} if key else None
        self._started = False
        self._socket: ClientConnection | None = None

    def __enter__(self) -> WebSocketFetch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the stream (1000) if a `refine` left unfinished still holds it."""
        if self._socket is not None:
            self._socket.close()

    def refine(
        self, max_layers: int | None = None, max_bytes: int | None = None, psnr_target: float | None = None
    ) -> Iterator[Refinement]:
        if self._started:
            raise ClientError("a WebSocket fetch streams once; use RangeFetch to add layers later")
        self._started = True
        try:
            with connect(
                self.url,
                additional_headers=self._headers,
                open_timeout=self.timeout,
                close_timeout=5,
                max_size=MAX_MESSAGE_BYTES,
                compression=None,  # the bitstream does not compress
            ) as socket:
                self._socket = socket
                yield from self._stream(socket, max_layers, max_bytes, psnr_target)
        except ConnectionClosed as closed:
            code, reason = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (1006, "the connection dropped")
            raise StreamClosedError(code, reason) from None
        except TimeoutError:
            raise ClientError(f"no message from {self.url} within {self.timeout} s") from None
        except (InvalidHandshake, InvalidURI, OSError) as error:
            raise ClientError(f"cannot open {self.url}: {error}") from error

    def _stream(
        self, socket: ClientConnection, max_layers: int | None, max_bytes: int | None, psnr_target: float | None
    ) -> Iterator[Refinement]:
        info = self._message(socket)
        if not isinstance(info, dict) or info.get("type") != "info" or info.get("protocol") != PROTOCOL_VERSION:
            raise ProtocolError(f"expected the info message of protocol {PROTOCOL_VERSION}")
        table = LayerTable.from_info(info)
        _check_model(table, self.model)
        self.table = table
        upto = table.target(max_layers, max_bytes, psnr_target)
        held = _Reconstruction(self.model)
        held.table = table
        header = self._bitstream(socket)
        if len(header) != table.header_bytes:
            raise ProtocolError(f"the header message has {len(header)} bytes, the info says {table.header_bytes}")
        held.feed(header)
        granted = min(self.window, upto)
        socket.send(json.dumps({"type": "credit", "layers": granted}))
        for layer in range(1, upto + 1):
            data = self._bitstream(socket)
            expected = table.end_of_layer(layer) - table.end_of_layer(layer - 1)
            if len(data) < expected:
                raise TruncatedLayerError(f"layer {layer} arrived with {len(data)} of its {expected} bytes")
            if len(data) > expected:
                raise ProtocolError(f"layer {layer} arrived with {len(data)} bytes, the layer table says {expected}")
            held.feed(data)
            if granted < upto:
                with contextlib.suppress(ConnectionClosed):  # this layer still decodes; the next recv says why
                    socket.send(json.dumps({"type": "credit", "layers": 1}))
                granted += 1
            yield from held.refinements(upto)
        if upto == table.layer_count:
            done = self._message(socket)
            if not isinstance(done, dict) or done.get("type") != "done":
                raise ProtocolError("expected the done message after the last layer")

    def _message(self, socket: ClientConnection) -> object:
        message = socket.recv(timeout=self.timeout)
        if not isinstance(message, str):
            raise ProtocolError(f"expected a text message, got {len(message)} binary bytes")
        try:
            return json.loads(message)
        except ValueError:
            raise ProtocolError(f"a text message is not JSON: {message[:100]!r}") from None

    def _bitstream(self, socket: ClientConnection) -> bytes:
        message = socket.recv(timeout=self.timeout)
        if not isinstance(message, bytes):
            raise ProtocolError(f"expected bitstream bytes, got the text message {message[:100]!r}")
        self.bytes_received += len(message)
        return message


def open_fetch(
    url: str, model: ScalableCodec, *, via: Via = "range", key: str | None = None, timeout: float = 60.0
) -> RangeFetch | WebSocketFetch:
    """A fetch of the image at `url` over byte ranges or the WebSocket."""
    if via == "range":
        return RangeFetch(url, model, key=key, timeout=timeout)
    if via == "ws":
        return WebSocketFetch(url, model, key=key, timeout=timeout)
    raise ValueError(f"via must be 'range' or 'ws', not {via!r}")


def iter_layers(
    url: str,
    model: ScalableCodec,
    *,
    via: Via = "range",
    max_layers: int | None = None,
    max_bytes: int | None = None,
    psnr_target: float | None = None,
    key: str | None = None,
    timeout: float = 60.0,
) -> Iterator[tuple[int, np.ndarray]]:
    """(layer index, H×W×3 uint8 picture) for every refinement, fetched and decoded here.

    Stops at `max_layers`, at the last whole layer within `max_bytes`, or at the first layer the
    server measured at `psnr_target` dB; by default after the last layer.
    """
    with open_fetch(url, model, via=via, key=key, timeout=timeout) as fetch:
        for refinement in fetch.refine(max_layers, max_bytes, psnr_target):
            yield refinement.layer, refinement.pixels


def _write(pixels: np.ndarray, path: Path) -> None:
    write_image(pixels, path, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))


def fetch_command(model: ScalableCodec, args: argparse.Namespace) -> None:
    """`python -m codec fetch`: exit status 1 for a server, network or request error, 2 for a codec
    error (damaged or truncated data, other weights); the layers decoded before it are kept."""
    output = Path(args.output)
    last: Refinement | None = None
    try:
        with open_fetch(args.url, model, via=args.via, key=args.key) as fetch:
            for refinement in fetch.refine(args.layers, args.max_bytes, args.psnr_target):
                last = refinement
                if args.each:
                    path = output.with_name(f"{output.stem}-{refinement.layer}{output.suffix}")
                    _write(refinement.pixels, path)
                    print(
                        f"layer {refinement.layer}: {refinement.bytes} bytes, {refinement.bpp:.3f} bpp, "
                        f"decoded in {refinement.decode_seconds:.2f} s -> {path}",
                        flush=True,
                    )
    except (ClientError, CodecError) as error:
        print(f"error: {error}", file=sys.stderr)
        if last is not None:
            _write(last.pixels, output)
            print(f"kept layers 1..{last.layer} ({last.bytes} bytes) in {output}", file=sys.stderr)
        raise SystemExit(1 if isinstance(error, ClientError) else 2) from None
    assert last is not None and fetch.table is not None  # a fresh fetch decodes at least one layer
    _write(last.pixels, output)
    table = fetch.table
    quality = table.psnr[last.layer - 1]
    measured = "" if quality is None else f", {quality:.2f} dB (server's measure)"
    print(
        f"{output}: layer {last.layer} of {table.layer_count}, {fetch.bytes_received} bytes received, "
        f"{last.bpp:.3f} bpp{measured}"
    )
    if args.psnr_target is not None and quality is not None and quality < args.psnr_target:
        print(f"note: no layer reaches {args.psnr_target} dB; this is the last one", file=sys.stderr)
