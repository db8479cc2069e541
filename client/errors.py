"""What the client raises when the server, the network or the request is at fault.

A damaged or truncated layer, or other weights, raise the codec's own errors (`codec.CodecError`).
"""

from __future__ import annotations

from protocol import UNAUTHORIZED, close_meaning

# What to do about a close, for a user of this client (the protocol says what the code means).
_CLOSE_HINTS = {UNAUTHORIZED: " (--key)"}


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
        meaning = close_meaning(code) + _CLOSE_HINTS.get(code, "")
        detail = meaning if reason in ("", meaning) else f"{meaning}: {reason}"
        super().__init__(f"WebSocket closed with {code}: {detail}")


class ProtocolError(ClientError):
    """The server's answer does not follow the protocol (a status, a range or a message out of place)."""
