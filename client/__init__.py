"""A progressive client of the image service: fetch a stored image layer by layer and decode it here.

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

One module a concern: `ranges` (HTTP byte ranges), `websocket` (the WebSocket stream), `uploads`
(POST /encode and its job), `layers` (the remote image and the reconstruction both share), `urls`
(an image's URLs), `errors`; the wire protocol itself is the `protocol` package. `python -m client fetch
URL OUT.png` and `python -m client upload SERVER FILE` are the command line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np

from client.errors import ClientError, ProtocolError, ServerError, StreamClosedError
from client.layers import Refinement, RemoteImage
from client.ranges import RangeFetch
from client.urls import ImageLocation, locate
from client.websocket import CREDIT_WINDOW, WebSocketFetch
from codec import ScalableCodec

__all__ = [
    "iter_layers",
    "open_fetch",
    "RangeFetch",
    "WebSocketFetch",
    "Refinement",
    "RemoteImage",
    "ImageLocation",
    "locate",
    "ClientError",
    "ServerError",
    "StreamClosedError",
    "ProtocolError",
    "CREDIT_WINDOW",
    "Via",
]

Via = Literal["range", "ws"]


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
