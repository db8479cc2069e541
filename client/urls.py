"""Where one image can be read: its bitstream, info document and WebSocket, from any of its URLs."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from client.errors import ClientError
from protocol import BITSTREAM_PATH, IMAGE_URL_PATH, INFO_PATH, WEBSOCKET_PATH


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
    match = IMAGE_URL_PATH.match(parsed.path)
    if match is None:
        if scheme != parsed.scheme:
            raise ClientError(f"a WebSocket URL must end in /ws/image/ID: {url!r}")
        return ImageLocation(bitstream=url, info=None, websocket=None)
    root = str(parsed.copy_with(scheme=scheme, path=match["root"] or "/", query=None, fragment=None)).rstrip("/")
    socket_root = root.replace("http", "ws", 1)
    image_id = match["id"]
    return ImageLocation(
        bitstream=root + BITSTREAM_PATH.format(image_id=image_id),
        info=root + INFO_PATH.format(image_id=image_id),
        websocket=socket_root + WEBSOCKET_PATH.format(image_id=image_id),
    )
