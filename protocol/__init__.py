"""The wire protocol between the server, the Python client and the viewer, written once.

- `PROTOCOL_VERSION`: the WebSocket stream's version, sent in its first (`info`) message.
- The WebSocket subprotocols: `SUBPROTOCOL`, which the server selects when offered, and
  `KEY_PROTOCOL`, the prefix of the one that carries a read key (`key.<base64url of the key>`).
- The WebSocket close codes (`NORMAL` .. `TOO_MANY_STREAMS`) and what each means: `CLOSE_CODES`,
  with a `meaning` for programs and logs and a `viewer` sentence for the page.
- The URL layout: the path templates of one image's resources (`INFO_PATH`, ...; `{image_id}` is the
  placeholder FastAPI routes use), `image_paths()` to fill them in, and `IMAGE_URL_PATH`, the regex
  a client matches a URL's path with.
- The error body every HTTP error answers: `{"error": {"code", "message"}}`, written by
  `error_body()` and read by `read_error_body()`.

The viewer reads the same values from static/protocol.js, generated from this module by
`python -m protocol > static/protocol.js`; tests/test_protocol.py checks the two agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = [
    "PROTOCOL_VERSION",
    "SUBPROTOCOL",
    "KEY_PROTOCOL",
    "CloseCode",
    "CLOSE_CODES",
    "close_meaning",
    "NORMAL",
    "UNSUPPORTED_DATA",
    "POLICY",
    "TOO_BIG",
    "SERVER_ERROR",
    "TRY_LATER",
    "UNAUTHORIZED",
    "UNKNOWN_IMAGE",
    "IDLE",
    "TOO_MANY_STREAMS",
    "IMAGE_ID_PATTERN",
    "ENCODE_PATH",
    "IMAGES_PATH",
    "INFO_PATH",
    "IMAGE_PATH",
    "BITSTREAM_PATH",
    "WEBSOCKET_PATH",
    "VIEWER_PATH",
    "PATHS",
    "image_paths",
    "IMAGE_URL_PATH",
    "error_body",
    "read_error_body",
    "as_dict",
]

PROTOCOL_VERSION = 1

# --- WebSocket subprotocols (the names server/ws.py uses) -----------------------------------------
SUBPROTOCOL = "codec.v1"  # selected when offered: browsers fail a handshake whose offered protocols get none
KEY_PROTOCOL = "key."  # key.<base64url of the read key, padding optional>: how a browser sends the key

# --- WebSocket close codes (the names server/ws.py uses) -------------------------------------------
NORMAL = 1000
UNSUPPORTED_DATA = 1003
POLICY = 1008
TOO_BIG = 1009
SERVER_ERROR = 1011
TRY_LATER = 1013
UNAUTHORIZED = 4401
UNKNOWN_IMAGE = 4404
IDLE = 4408
TOO_MANY_STREAMS = 4429


@dataclass(frozen=True)
class CloseCode:
    """One close code: `meaning` for programs and logs, `viewer` for a person looking at the page
    (None: the viewer says what it says for any early close)."""

    code: int
    name: str
    meaning: str
    viewer: str | None


CLOSE_CODES: dict[int, CloseCode] = {
    close.code: close
    for close in (
        CloseCode(NORMAL, "NORMAL", "the stream ended", None),
        CloseCode(
            UNSUPPORTED_DATA,
            "UNSUPPORTED_DATA",
            "the server refused a binary client message",
            "The server refused a message of the viewer",
        ),
        CloseCode(POLICY, "POLICY", "the server refused a client message", "The server refused the stream"),
        CloseCode(
            TOO_BIG,
            "TOO_BIG",
            "the server refused a client message as too large",
            "The server refused a message of the viewer as too large",
        ),
        CloseCode(SERVER_ERROR, "SERVER_ERROR", "server error", "Server error while streaming"),
        CloseCode(
            TRY_LATER,
            "TRY_LATER",
            "the server is busy; retry later",
            "The server is busy making pictures; try again shortly",
        ),
        CloseCode(UNAUTHORIZED, "UNAUTHORIZED", "a read key is required", "This image needs the access key"),
        CloseCode(UNKNOWN_IMAGE, "UNKNOWN_IMAGE", "no image with this id", "No image with this id"),
        CloseCode(IDLE, "IDLE", "the server waited too long for credit", "The stream waited too long for the viewer"),
        CloseCode(
            TOO_MANY_STREAMS,
            "TOO_MANY_STREAMS",
            "too many streams are open; retry later",
            "Too many streams are open on the server; try again later",
        ),
    )
}
CLOSE_FALLBACK = CloseCode(0, "", "the stream ended", "The connection closed before every layer arrived")


def close_meaning(code: int) -> str:
    """What a close code means, for programs and logs; any other code: the stream ended."""
    return CLOSE_CODES.get(code, CLOSE_FALLBACK).meaning


# --- URL layout -----------------------------------------------------------------------------------
IMAGE_ID_PATTERN = r"[0-9a-f]{32}"  # 128 random bits, lowercase hex
ENCODE_PATH = "/encode"  # POST an upload; answers 202 and its job (201 and the info document with ?wait=true)
JOB_PATH = "/jobs/{job_id}"  # one encode job: state, progress, and the image when done
JOB_EVENTS_PATH = "/jobs/{job_id}/events"  # the same document pushed as server-sent events at every change
# An encode job's states, in the order it passes them; it ends in one of the last two.
JOB_STATES = ("queued", "running", "verifying", "done", "failed")
JOB_FINAL_STATES = ("done", "failed")
IMAGES_PATH = "/images"  # the stored images, newest first, a page at a time
INFO_PATH = "/image/{image_id}/info"  # the discovery document: sizes, model, layer table, URLs
IMAGE_PATH = "/image/{image_id}"  # the reconstruction (?layers=n&format=png|webp|jpeg)
BITSTREAM_PATH = "/image/{image_id}/bitstream"  # the container, with byte ranges
WEBSOCKET_PATH = "/ws/image/{image_id}"  # the layer stream (ws:// or wss://)
VIEWER_PATH = "/?id={image_id}"  # the viewer showing one image
PATHS: dict[str, str] = {
    "info": INFO_PATH,
    "image": IMAGE_PATH,
    "bitstream": BITSTREAM_PATH,
    "websocket": WEBSOCKET_PATH,
    "viewer": VIEWER_PATH,
}
# The path of any of an image's URLs but the viewer's, below an optional root (a proxy's prefix).
IMAGE_URL_PATH = re.compile(rf"^(?P<root>.*?)/(?:ws/)?image/(?P<id>{IMAGE_ID_PATTERN})(?:/info|/bitstream)?/?$")


def job_paths(job_id: str, root: str = "") -> dict[str, str]:
    """The paths of one encode job's resources, below `root`."""
    return {"job": root + JOB_PATH.format(job_id=job_id), "events": root + JOB_EVENTS_PATH.format(job_id=job_id)}


def image_paths(image_id: str, root: str = "") -> dict[str, str]:
    """The paths of one image's resources (the keys of `PATHS`), below `root`."""
    return {name: root + template.format(image_id=image_id) for name, template in PATHS.items()}


# --- The error body -------------------------------------------------------------------------------
def error_body(code: str, message: str) -> dict:
    """`{"error": {"code": code, "message": message}}`: the body of every HTTP error answer."""
    return {"error": {"code": code, "message": message}}


def read_error_body(body: bytes | str) -> tuple[str, str] | None:
    """(code, message) of an error body, or None when the body is not of that shape."""
    try:
        detail = json.loads(body)["error"]
        return str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def as_dict() -> dict:
    """Everything the viewer needs, as plain JSON values (what static/protocol.js holds)."""
    return {
        "PROTOCOL_VERSION": PROTOCOL_VERSION,
        "SUBPROTOCOL": SUBPROTOCOL,
        "KEY_PROTOCOL": KEY_PROTOCOL,
        "CLOSE": {close.name: close.code for close in CLOSE_CODES.values()},
        "CLOSE_MEANINGS": {str(code): close.meaning for code, close in CLOSE_CODES.items()},
        "CLOSE_MESSAGES": {str(code): close.viewer for code, close in CLOSE_CODES.items() if close.viewer},
        "CLOSE_FALLBACK_MESSAGE": CLOSE_FALLBACK.viewer,
        "PATHS": dict(PATHS),
        "JOB_PATHS": {"job": JOB_PATH, "events": JOB_EVENTS_PATH},
        "JOB_FINAL_STATES": list(JOB_FINAL_STATES),
    }
