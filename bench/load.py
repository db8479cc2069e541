"""A bounded load generator for loopback: a fixed number of concurrent clients for a fixed time.

Every client sends its next request as soon as its last one is answered (a closed loop), so
the load never exceeds `concurrency` requests in flight. HTTP goes through one
`httpx.AsyncClient` with one keep-alive connection per client; WebSocket streams through
`websockets`. Latencies count only answers with the expected status; everything else is
counted by status, close code or exception name.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
HTTP_TIMEOUT = 120.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


@dataclass
class LoadResult:
    """Answers of one phase: latencies of the good ones, counts of the rest."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)

    @property
    def good(self) -> int:
        return len(self.latencies)

    @property
    def errors(self) -> int:
        return sum(self.outcomes.values()) - self.good

    @property
    def rate(self) -> float:
        return self.good / self.seconds if self.seconds else math.nan

    def error_text(self, good: str) -> str:
        bad = {key: n for key, n in self.outcomes.items() if key != good}
        return ", ".join(f"{n}× {key}" for key, n in sorted(bad.items())) or "0"


def _client(concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=HTTP_TIMEOUT)


async def http_load(
    send: Send, *, concurrency: int, duration: float, expect: int, expect_bytes: int | None = None, warm_up: bool = True
) -> LoadResult:
    """`concurrency` clients repeat `send` for `duration` seconds; a body of another size counts as an error."""
    result = LoadResult()
    async with _client(concurrency) as client:
        if warm_up:  # open every connection before the clock starts
            await asyncio.gather(*(send(client) for _ in range(concurrency)), return_exceptions=True)
        deadline = time.perf_counter() + duration

        async def loop() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await send(client)
                except httpx.HTTPError as error:
                    result.outcomes[type(error).__name__] += 1
                    continue
                if response.status_code != expect:
                    result.outcomes[str(response.status_code)] += 1
                elif expect_bytes is not None and len(response.content) != expect_bytes:
                    result.outcomes[f"{expect} with {len(response.content)} bytes"] += 1
                else:
                    result.outcomes[str(expect)] += 1
                    result.latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


@dataclass
class Answer:
    status: int | str
    seconds: float
    retry_after: str | None = None
    document: dict | None = None  # a JSON body


async def burst(send: Send, count: int) -> list[Answer]:
    """`count` requests at the same instant, each on its own connection."""
    async with _client(count) as client:

        async def one() -> Answer:
            started = time.perf_counter()
            try:
                response = await send(client)
            except httpx.HTTPError as error:
                return Answer(type(error).__name__, time.perf_counter() - started)
            seconds = time.perf_counter() - started
            document = response.json() if response.headers.get("content-type") == "application/json" else None
            return Answer(response.status_code, seconds, response.headers.get("retry-after"), document)

        return list(await asyncio.gather(*(one() for _ in range(count))))


@dataclass
class StreamResult:
    """Progressive streams of one phase: time to the first and to the last layer of each good one."""

    seconds: float = 0.0
    first: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)

    @property
    def good(self) -> int:
        return len(self.last)

    @property
    def rate(self) -> float:
        return self.good / self.seconds if self.seconds else math.nan

    def error_text(self) -> str:
        bad = {key: n for key, n in self.outcomes.items() if key != "ok"}
        return ", ".join(f"{n}× {key}" for key, n in sorted(bad.items())) or "0"


@dataclass
class StreamTimes:
    """One WebSocket stream: when its first and last layer (and preview) arrived, from the open."""

    first_layer: float
    last_layer: float
    first_preview: float | None
    last_preview: float | None


async def stream_once(url: str, layers: int) -> StreamTimes:
    """Open `url` (a /ws/image/ID with credit for every layer), read to `done`; raise on anything else."""
    started = time.perf_counter()
    layer_times: list[float] = []
    preview_times: list[float] = []
    async with connect(url, max_size=None, open_timeout=HTTP_TIMEOUT) as websocket:
        picture_next = False
        while True:
            message = await asyncio.wait_for(websocket.recv(), HTTP_TIMEOUT)
            if isinstance(message, str):
                kind = json.loads(message)["type"]
                picture_next = kind == "preview"
                if kind == "done":
                    break
            elif picture_next:
                preview_times.append(time.perf_counter() - started)
                picture_next = False
            else:
                layer_times.append(time.perf_counter() - started)
        await websocket.wait_closed()
        if websocket.close_code != 1000:
            raise ConnectionClosed(websocket.close_rcvd, websocket.close_sent)
    if len(layer_times) != layers + 1:  # the header, then one message per layer
        raise ValueError(f"{len(layer_times) - 1} layers instead of {layers}")
    return StreamTimes(
        layer_times[1],
        layer_times[-1],
        preview_times[0] if preview_times else None,
        preview_times[-1] if preview_times else None,
    )


def _close_code(error: ConnectionClosed) -> str:
    frame = error.rcvd or error.sent
    return f"close {frame.code}" if frame else "closed without a code"


async def stream_load(url: str, layers: int, *, concurrency: int, duration: float) -> StreamResult:
    """`concurrency` clients open streams one after another for `duration` seconds."""
    result = StreamResult()
    deadline = time.perf_counter() + duration

    async def loop() -> None:
        while time.perf_counter() < deadline:
            try:
                times = await stream_once(url, layers)
            except ConnectionClosed as error:
                result.outcomes[_close_code(error)] += 1
                continue
            except (WebSocketException, OSError, TimeoutError, ValueError) as error:
                result.outcomes[type(error).__name__] += 1
                continue
            result.outcomes["ok"] += 1
            result.first.append(times.first_layer)
            result.last.append(times.last_layer)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


async def range_fetch_load(url: str, first_end: int, total: int, *, concurrency: int, duration: float) -> StreamResult:
    """The same progressive pattern over HTTP: `Range` for layer 1 (header included), then one for the rest."""
    result = StreamResult()
    async with _client(concurrency) as client:
        await asyncio.gather(*(client.get(url) for _ in range(concurrency)), return_exceptions=True)
        deadline = time.perf_counter() + duration

        async def loop() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    head = await client.get(url, headers={"Range": f"bytes=0-{first_end - 1}"})
                    first = time.perf_counter() - started
                    rest = await client.get(url, headers={"Range": f"bytes={first_end}-{total - 1}"})
                except httpx.HTTPError as error:
                    result.outcomes[type(error).__name__] += 1
                    continue
                if (head.status_code, rest.status_code) != (206, 206) or len(head.content) + len(rest.content) != total:
                    result.outcomes[f"{head.status_code}/{rest.status_code}"] += 1
                    continue
                result.outcomes["ok"] += 1
                result.first.append(first)
                result.last.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result
