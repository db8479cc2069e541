"""The WebSocket stream of one image, layer by layer, with credit-based flow control.

Protocol 1 (full text in docs/server.md):

    server -> text   {"type": "info", "protocol": 1, ...info document..., "previews": fmt|null, "credit": n}
    server -> binary the container header (bytes 0 .. header_bytes)
    client -> text   {"type": "credit", "layers": k}    allow k more layers
    client -> text   {"type": "request", "layer": n}    allow every layer up to n
    server -> binary layer i's bytes, i = 1, 2, ... while credit lasts
    server -> text   {"type": "preview", "layer": i, "format": f, "bytes": b}   (only with ?previews=f)
    server -> binary the preview picture
    server -> text   {"type": "done", "layers": L, "bytes": total}, then close 1000

The read key (when one is set) travels in a header, never in the URL, which access logs keep: the
subprotocol `key.<base64url of the key>` offered next to `codec.v1` (the server selects `codec.v1`),
or `Authorization: Bearer` for clients that can set it. A browser's `Origin` must be the server's own
or one of `cors_origins`; any other is refused (HTTP 403) before the handshake completes.

Every binary message that does not directly follow a `preview` text message is
bitstream; those concatenated are the container. Each send is awaited with a
timeout, so a client that stops reading costs the server at most one message
plus the transport's write buffer, and is dropped after `ws_send_timeout`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from codec.container import parse_header, verify_layer
from codec.errors import CodecError
from protocol import (
    IDLE,
    KEY_PROTOCOL,
    NORMAL,
    POLICY,
    PROTOCOL_VERSION,
    SERVER_ERROR,
    SUBPROTOCOL,
    TOO_BIG,
    TOO_MANY_STREAMS,
    TRY_LATER,
    UNAUTHORIZED,
    UNKNOWN_IMAGE,
    UNSUPPORTED_DATA,
    WEBSOCKET_PATH,
)
from server.decoders import PICTURE_FORMATS
from server.deps import get_service, read_allowed
from server.errors import as_api_error
from server.pool import PoolBusy
from server.schemas import info_document
from server.service import Service
from server.storage import ImageDeleted, StorageError, StoredImage, valid_id

router = APIRouter()
log = logging.getLogger("server.ws")

CLOSE_GRACE = 1.0


class Close(Exception):
    """End the stream with this close code."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]


class SendTimeout(Exception):
    """The client stopped reading."""


@dataclass
class Flow:
    """How many layers the client allows; changed by the receiver, awaited by the sender."""

    allowed: int
    layer_count: int

    def __post_init__(self) -> None:
        self.changed = asyncio.Event()
        self.allowed = min(self.allowed, self.layer_count)

    def grant(self, layers: int) -> None:
        self.allowed = min(self.layer_count, self.allowed + layers)
        self.changed.set()

    def request(self, layer: int) -> None:
        self.allowed = max(self.allowed, layer)
        self.changed.set()


def _int(value: object, low: int, high: int) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    return None


def _query_int(text: str | None, default: int) -> int | None:
    if text is None:
        return default
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 3 else None


def offered_key(websocket: WebSocket) -> str | None:
    """The read key of a `key.<base64url>` subprotocol; "" (a key that matches nothing) when malformed."""
    for protocol in websocket.scope.get("subprotocols") or ():
        if protocol.startswith(KEY_PROTOCOL):
            encoded = protocol[len(KEY_PROTOCOL) :]
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, ValueError):
                return ""
    return None


def origin_allowed(websocket: WebSocket, cors_origins: list[str]) -> bool:
    """No Origin (not a browser), the server's own origin (its viewer), or a configured CORS origin."""
    origin = websocket.headers.get("origin")
    if origin is None or origin in cors_origins or "*" in cors_origins:
        return True
    host = websocket.headers.get("host", "").lower()
    return bool(host) and origin.lower() in (f"http://{host}", f"https://{host}")


@router.websocket(WEBSOCKET_PATH)
async def stream_image(websocket: WebSocket, image_id: str) -> None:
    """Query: `previews=png|webp|jpeg` (optional), `credit=N` (initial credit). The read key, if one is
    set: subprotocol `key.<base64url>` (with `codec.v1`) or `Authorization: Bearer`."""
    service = get_service(websocket)
    if not origin_allowed(websocket, service.settings.cors_origins):
        await _close(websocket, POLICY)  # before accept: uvicorn answers the handshake with 403
        return
    offered = websocket.scope.get("subprotocols") or ()
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    query = websocket.query_params
    slot = False
    try:
        try:
            if not read_allowed(websocket, offered_key(websocket)):
                if "key" in query:
                    raise Close(UNAUTHORIZED, "read key required: send it in Sec-WebSocket-Protocol, not the URL")
                raise Close(UNAUTHORIZED, "read key required")
            previews = query.get("previews")
            if previews is not None and previews not in PICTURE_FORMATS:
                raise Close(POLICY, "previews must be png, webp or jpeg")
            credit = _query_int(query.get("credit"), service.settings.ws_initial_credit)
            if credit is None or credit > 255:
                raise Close(POLICY, "credit must be an integer 0..255")
            if service.streams >= service.settings.ws_max_streams:
                service.metrics.ws_rejected.inc()
                raise Close(TOO_MANY_STREAMS, "too many streams; retry later")
            # The slot is taken with the check, before any await: handshakes arriving together cannot all
            # pass the check before one of them counts (the storage lookup below awaits).
            service.streams += 1
            slot = True
            service.metrics.ws_streams.set(service.streams)
            storage = service.storage
            if storage is None or service.reconstructions is None:
                raise Close(TRY_LATER, "not ready")
            try:
                image = await asyncio.to_thread(storage.get, image_id) if valid_id(image_id) else None
            except StorageError:
                raise Close(SERVER_ERROR, "storage_unavailable") from None
            if image is None:
                raise Close(UNKNOWN_IMAGE, "no image with this id")
        except Close as close:
            await _close(websocket, close.code, close.reason)
            return
        await Stream(service, websocket, image, previews, credit).run()
    finally:
        if slot:
            service.streams -= 1
            service.metrics.ws_streams.set(service.streams)


async def _close(websocket: WebSocket, code: int, reason: str = "") -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code, reason), CLOSE_GRACE)


class Stream:
    def __init__(
        self, service: Service, websocket: WebSocket, image: StoredImage, previews: str | None, credit: int
    ) -> None:
        self.service = service
        self.settings = service.settings
        self.websocket = websocket
        self.image = image
        self.previews = previews
        self.flow = Flow(credit, image.layer_count)
        self.disconnected = False

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_all())
        receiver = asyncio.create_task(self._receive_all())
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this task is cancelled (shutdown): never leave the pair running
            for task in (sender, receiver):
                task.cancel()
            await asyncio.wait({sender, receiver})
            for task in (sender, receiver):  # retrieved: a send cut short by the client's hang-up is no error
                if not task.cancelled():
                    task.exception()
        first = sender if sender in done else receiver
        outcome = first.exception() if not first.cancelled() else None
        if self.disconnected and not isinstance(outcome, Close):
            return
        if outcome is None:
            await _close(self.websocket, NORMAL, "done")
        elif isinstance(outcome, Close):
            await _close(self.websocket, outcome.code, outcome.reason)
        elif isinstance(outcome, SendTimeout):
            self.service.metrics.ws_send_timeouts.inc()
            log.info("dropping a WebSocket client that stopped reading (%s)", self.image.id)
            await _close(self.websocket, POLICY, "send timeout: the client stopped reading")
        elif isinstance(outcome, WebSocketDisconnect | OSError):
            return
        else:
            log.error("WebSocket stream of %s failed", self.image.id, exc_info=outcome)
            await _close(self.websocket, SERVER_ERROR, "server error")

    async def _send(self, message: str | bytes) -> None:
        try:  # asyncio.timeout, not wait_for: wait_for (3.11) swallows a cancel that meets a finished send
            async with asyncio.timeout(self.settings.ws_send_timeout):
                if isinstance(message, bytes):
                    await self.websocket.send_bytes(message)
                else:
                    await self.websocket.send_text(message)
        except TimeoutError as error:
            raise SendTimeout() from error
        self.service.metrics.ws_bytes.inc(len(message))

    async def _read(self, start: int, end: int) -> bytes:
        storage = self.service.storage
        assert storage is not None
        try:
            data = await asyncio.to_thread(storage.read, self.image, start, end)
        except ImageDeleted as error:
            raise Close(UNKNOWN_IMAGE, "no image with this id") from error
        except StorageError as error:
            raise Close(SERVER_ERROR, "storage_unavailable") from error
        if len(data) != end - start:
            raise Close(SERVER_ERROR, "corrupt_bitstream")
        return data

    async def _send_all(self) -> None:
        image = self.image
        document = info_document(image, self.websocket.scope.get("root_path", "")).model_dump()
        info = {"type": "info", "protocol": PROTOCOL_VERSION, **document, "previews": self.previews}
        info["credit"] = self.flow.allowed
        await self._send(json.dumps(info))
        header = await self._read(0, image.header_bytes)
        try:
            parsed = parse_header(header)
        except CodecError as error:
            raise Close(SERVER_ERROR, "corrupt_bitstream") from error
        await self._send(header)
        for layer in image.layers:
            while self.flow.allowed < layer.index:
                self.flow.changed.clear()
                try:
                    async with asyncio.timeout(self.settings.ws_idle_timeout):
                        await self.flow.changed.wait()
                except TimeoutError:
                    raise Close(IDLE, "idle: no credit granted") from None
            payload = await self._read(layer.offset, layer.end)
            try:
                verify_layer(parsed, layer.index, payload)
            except CodecError as error:
                raise Close(SERVER_ERROR, "corrupt_bitstream") from error
            await self._send(payload)
            del payload
            if self.previews:
                await self._send_preview(layer.index)
        await self._send(json.dumps({"type": "done", "layers": image.layer_count, "bytes": image.total_bytes}))

    async def _send_preview(self, layer: int) -> None:
        reconstructions = self.service.reconstructions
        assert reconstructions is not None and self.previews is not None
        try:
            picture = await reconstructions.picture(
                self.image, layer, self.previews, wait=self.settings.ws_send_timeout
            )
        except PoolBusy:
            raise Close(TRY_LATER, "busy: previews cannot be made now") from None
        except Exception as error:
            mapped = as_api_error(error)
            if mapped is None:
                raise
            raise Close(UNKNOWN_IMAGE if mapped.status == 404 else SERVER_ERROR, mapped.code) from error
        announce = {
            "type": "preview",
            "layer": layer,
            "format": self.previews,
            "mime": PICTURE_FORMATS[self.previews][1],
            "bytes": len(picture),
        }
        await self._send(json.dumps(announce))
        await self._send(picture)

    async def _receive_all(self) -> None:
        """Read client messages until it disconnects; a bad message ends the stream with Close."""
        limit = self.settings.ws_max_message_bytes
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.disconnected = True
                return
            if message.get("bytes") is not None:
                raise Close(UNSUPPORTED_DATA, "binary messages are not accepted")
            text = message.get("text") or ""
            if len(text) > limit:
                raise Close(TOO_BIG, f"messages are limited to {limit} bytes")
            self._handle(text)

    def _handle(self, text: str) -> None:
        try:
            request = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: deeply nested arrays, well within the size limit
            raise Close(POLICY, "messages must be JSON objects") from None
        if not isinstance(request, dict):
            raise Close(POLICY, "messages must be JSON objects")
        kind = request.get("type")
        if kind == "credit":
            layers = _int(request.get("layers"), 1, 255)
            if layers is None:
                raise Close(POLICY, "credit needs an integer `layers` in 1..255")
            self.flow.grant(layers)
        elif kind == "request":
            layer = _int(request.get("layer"), 1, self.image.layer_count)
            if layer is None:
                raise Close(POLICY, f"request needs an integer `layer` in 1..{self.image.layer_count}")
            self.flow.request(layer)
        else:
            raise Close(POLICY, "unknown message type; use credit or request")
