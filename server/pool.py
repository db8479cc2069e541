"""The bounded pool that runs model work (encode, verify, decode) off the event loop.

At most `workers` jobs run and at most `queue_size` more wait. A job that finds
the pool full is refused at once with `PoolBusy` (HTTP 429 with Retry-After),
unless the caller chose to wait a bounded time for a slot. Slots are released
when the thread finishes, not when the awaiting request gives up, so a client
that disconnects cannot make the pool overcommit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

from server.metrics import Metrics

T = TypeVar("T")


class PoolBusy(Exception):
    """Every worker is busy and the queue is full."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the model queue is full")
        self.retry_after = retry_after


class ModelPool:
    def __init__(self, workers: int, queue_size: int, retry_after: int, metrics: Metrics) -> None:
        self.workers = workers
        self.capacity = workers + queue_size
        self.retry_after = retry_after
        self.metrics = metrics
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="model")
        self._admitted = 0
        self._running = 0
        self._freed: asyncio.Event | None = None

    @property
    def admitted(self) -> int:
        """Jobs running or waiting."""
        return self._admitted

    def _publish(self) -> None:
        self.metrics.queue_depth.set(max(0, self._admitted - self._running))
        self.metrics.jobs_running.set(self._running)

    async def run(self, job: Callable[[], T], *, wait: float = 0.0) -> T:
        """Run `job` on a worker thread; PoolBusy when full (after waiting up to `wait` seconds)."""
        loop = asyncio.get_running_loop()
        if self._freed is None:
            self._freed = asyncio.Event()
        deadline = loop.time() + wait
        while self._admitted >= self.capacity:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break  # submit refuses it
            self._freed.clear()
            try:  # asyncio.timeout, not wait_for: wait_for (3.11) may swallow a cancel that meets the event
                async with asyncio.timeout(remaining):
                    await self._freed.wait()
            except TimeoutError:
                pass
        return await self.submit(job)

    def submit(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """Admit `job` now, or raise PoolBusy at once; the future resolves when it has run.

        Admission happens before this returns, with no await in between, so callers that
        check and submit together can never overcommit the pool.
        """
        loop = asyncio.get_running_loop()
        if self._freed is None:
            self._freed = asyncio.Event()
        if self._admitted >= self.capacity:
            self.metrics.rejected.inc()
            raise PoolBusy(self.retry_after)
        self._admitted += 1
        self._publish()

        def started() -> T:
            loop.call_soon_threadsafe(self._started)
            return job()

        try:
            future = self._executor.submit(started)
        except RuntimeError:  # shut down
            self._admitted -= 1
            self._publish()
            raise PoolBusy(self.retry_after) from None
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(self._finished, f))
        return asyncio.wrap_future(future)

    def _started(self) -> None:
        self._running += 1
        self._publish()

    def _finished(self, future: concurrent.futures.Future) -> None:
        self._admitted -= 1
        if not future.cancelled():
            self._running -= 1
        self._publish()
        if self._freed is not None:
            self._freed.set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
