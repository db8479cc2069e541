"""Receive one image over the server's WebSocket stream and decode each layer as it arrives.

The layer table comes in the first (`info`) message, the container header in the second; each
layer then arrives as one binary message, granted one credit at a time (protocol in docs/server.md).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from client.errors import ClientError, ProtocolError, StreamClosedError
from client.layers import Fetch, Reconstruction, Refinement, RemoteImage, check_model
from client.urls import locate
from codec import ScalableCodec, TruncatedLayerError
from protocol import PROTOCOL_VERSION

CREDIT_WINDOW = 2  # layers in flight over the WebSocket: one decodes while the next arrives
MAX_MESSAGE_BYTES = 1 << 28  # a hard bound on one WebSocket message; layers are checked against the table too


class WebSocketFetch(Fetch):
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
        self.table: RemoteImage | None = None
        self.bytes_received = 0
        self._headers = {"Authorization": f"Bearer {key}"} if key else None
        self._started = False
        self._socket: ClientConnection | None = None

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
        table = RemoteImage.from_info(info)
        check_model(table, self.model)
        self.table = table
        upto = table.target(max_layers, max_bytes, psnr_target)
        held = Reconstruction(self.model)
        held.table = table
        header = self._bitstream(socket)
        if len(header) != table.header_bytes:
            raise ProtocolError(f"the header message has {len(header)} bytes, the info says {table.header_bytes}")
        held.feed(header)
        granted = min(self.window, upto)
        socket.send(json.dumps({"type": "credit", "layers": granted}))
        for layer in range(1, upto + 1):
            data = self._bitstream(socket)
            expected = table.layers[layer - 1].size
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
