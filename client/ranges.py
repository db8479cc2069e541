"""Fetch one image over HTTP byte ranges: exactly the bytes of the layers asked for.

The layer table comes from the server's info document or, for a bare container URL, from the
container's header through two small Range requests. Every later `refine()` asks for only the
bytes it lacks, in one Range request, with `If-Range` on the image's ETag.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx

from client.errors import ClientError, ProtocolError, ServerError
from client.layers import Fetch, Reconstruction, Refinement, RemoteImage, check_model
from client.urls import locate
from codec import FIXED_HEADER_BYTES, ScalableCodec, TruncatedLayerError, parse_header, required_header_bytes
from protocol import read_error_body

ERROR_BODY_LIMIT = 65536  # bytes of an error answer read for its message
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def server_error(response: httpx.Response) -> ServerError:
    """The server's `{"error": {"code", "message"}}`, or what there is of a foreign error body."""
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > ERROR_BODY_LIMIT:
            break
    detail = read_error_body(body)
    if detail is not None:
        code, message = detail
    else:
        code = response.reason_phrase.lower().replace(" ", "_") or "error"
        message = body[:200].decode("utf-8", "replace").strip() or response.reason_phrase
    return ServerError(response.status_code, code, message, response.headers.get("retry-after"))


def unexpected(response: httpx.Response, wanted: str) -> ClientError:
    """The error for an answer other than the `wanted` status."""
    if response.status_code >= 400:
        return server_error(response)
    if response.status_code == 200 and wanted == "206":
        return ProtocolError(
            "the server answered 200 to a Range request: it does not serve ranges, or the bitstream changed"
        )
    return ProtocolError(f"the server answered {response.status_code}, expected {wanted}")


class RangeFetch(Fetch):
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
        self._held = Reconstruction(model)
        self._etag: str | None = None

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    @property
    def table(self) -> RemoteImage:
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

    def _discover(self) -> RemoteImage:
        assert self.location.info is not None
        try:
            response = self._http.get(self.location.info, headers=self._headers)
        except httpx.TransportError as error:
            raise ClientError(f"cannot reach {self.location.info}: {error}") from error
        if response.status_code != 200:
            raise unexpected(response, "200")
        try:
            info = response.json()
        except ValueError:
            raise ProtocolError("the info document is not JSON") from None
        table = RemoteImage.from_info(info)
        check_model(table, self.model)
        return table

    def _discover_from_header(self) -> RemoteImage:
        """A bare container: its fixed header part, then the layer table, through two small ranges."""
        fixed = b"".join(self._ranged(0, FIXED_HEADER_BYTES))
        head = fixed + b"".join(self._ranged(len(fixed), required_header_bytes(fixed)))
        header = parse_header(head)
        self._held.feed(head)  # held only once whole, so a failed discovery can simply be tried again
        return RemoteImage.from_header(header, self._etag)

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
                    raise unexpected(response, "206")
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
        part = "the header" if table is None else f"layer {table.layers_within(position) + 1}"
        return f"{part} is incomplete: bytes end at {position}; {why}"

    def _check_content_range(self, value: str, start: int, end: int) -> None:
        match = _CONTENT_RANGE.match(value.strip())
        total = self._held.table.total_bytes if self._held.table is not None else None
        if (
            match is None
            or (int(match[1]), int(match[2])) != (start, end - 1)
            or (total is not None and match[3] != str(total))
        ):
            raise ProtocolError(f"asked for bytes {start}-{end - 1}, the server sent Content-Range {value!r}")
