"""The upload use case as a job: accepted bytes in, a stored image out, watched while it runs.

`EncodeJobs.start` admits the encode to the model pool at once (or refuses it
with `PoolBusy`, 429), records the job and returns it; the route answers 202.
The worker reports its progress (tiles × layers coded, then the verification),
which pollers read with `get` and event streams follow with `watch`. When the
encode is verified, the image is stored under the storage visibility rule and
the job is done; any failure ends it failed with the status, code and message
the upload would have answered.

With a job queue (`server.job_queue`, the index on PostgreSQL) `start` only
records the job and its upload; `serve_queue`, in every process with a model,
claims queued jobs and runs them the same way, whichever process accepted them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from codec.effort import DEFAULT_EFFORT
from server.decoders import Reconstructions
from server.encoding import Encoded, UploadFacts, encode_verified
from server.errors import as_api_error
from server.job_queue import ClaimedJob, PostgresJobQueue
from server.job_store import FINISHED_JOB_RETENTION_SECONDS, EncodeJob, JobError, SqliteJobStore
from server.metrics import Metrics
from server.pool import ModelPool, PoolBusy
from server.storage import Storage, StorageError, StoredImage

if TYPE_CHECKING:
    from codec.model import ScalableCodec

log = logging.getLogger("server.jobs")

STORE_POLL_SECONDS = 1.0  # how often `watch` rereads a job that this process does not run
QUEUE_POLL_SECONDS = 0.5  # how often an idle worker looks for a queued job
QUEUE_LIMIT = 1000  # queued jobs beyond which an upload is refused (429), as a full pool is
INTERRUPTED = JobError(503, "interrupted", "the server stopped while this job ran; upload the image again")
INTERNAL = JobError(500, "internal_error", "internal server error")


class LeaseLost(Exception):
    """Another worker took over the job: this one stops and keeps nothing."""


def valid_job_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


def stored_image(encoded: Encoded, facts: UploadFacts) -> StoredImage:
    """The index row of a verified encode."""
    header = encoded.header
    return StoredImage(
        id=secrets.token_hex(16),
        width=header.width,
        height=header.height,
        model=header.model_id.hex(),
        header_bytes=header.header_bytes,
        sha256=encoded.sha256,
        created=time.time(),
        source_format=facts.format,
        layers=header.layers,
        psnr=encoded.psnr,
    )


def job_error(error: BaseException) -> JobError:
    """What a failed job reports: the upload's answer for known failures, a plain 500 for bugs."""
    if isinstance(error, asyncio.CancelledError):
        return INTERRUPTED
    answer = as_api_error(error) if isinstance(error, Exception) else None
    if answer is None:
        log.error("encode job failed", exc_info=error)
        return INTERNAL
    return JobError(answer.status, answer.code, answer.message)


class EncodeJobs:
    """Encode jobs of this process: live ones in memory, every state change in the job store."""

    def __init__(
        self,
        store: SqliteJobStore | PostgresJobQueue,
        model: ScalableCodec,
        storage: Storage,
        pool: ModelPool,
        reconstructions: Reconstructions | None,
        metrics: Metrics,
        effort: int = DEFAULT_EFFORT,
    ) -> None:
        self.store = store
        self.effort = effort
        self.queue = store if isinstance(store, PostgresJobQueue) else None
        self.model = model
        self.storage = storage
        self.pool = pool
        self.reconstructions = reconstructions
        self.metrics = metrics
        self._live: dict[str, EncodeJob] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task] = set()

    def recover(self) -> int:
        """At start-up: jobs of a process that died read as failed; old finished jobs are pruned."""
        now = time.time()
        self.store.prune(now - FINISHED_JOB_RETENTION_SECONDS)
        if self.queue is not None:
            return 0  # other processes' jobs: their leases decide, not this start
        failed = self.store.fail_unfinished(INTERRUPTED, now)
        if failed:
            log.warning("%d encode jobs were cut off by the last stop; they read as failed", failed)
        return failed

    async def start(self, data: bytes, facts: UploadFacts, total: int) -> EncodeJob:
        """Record the job as queued, admit the encode to the pool, and run it.

        The row comes first, so a job that runs is always on record (a full disk answers 507
        before any work). If the pool filled meanwhile, the row ends failed and PoolBusy (429)
        is raised.
        """
        now = time.time()
        job = EncodeJob(secrets.token_hex(16), "queued", 0, total, now, now)
        if self.queue is not None:
            if not await asyncio.to_thread(self.queue.enqueue, job, data, facts, QUEUE_LIMIT):
                raise PoolBusy(self.pool.retry_after)
            return job
        await asyncio.to_thread(self.store.save, job)
        loop = asyncio.get_running_loop()

        def report(state: str, done: int, total: int) -> None:  # on the worker thread
            loop.call_soon_threadsafe(self._progress, job.id, state, done, total)

        try:
            work = self.pool.submit(lambda: encode_verified(data, self.model, self.metrics, report, self.effort))
        except PoolBusy as busy:
            await asyncio.to_thread(self.store.save, job.moved("failed", time.time(), error=job_error(busy)))
            raise
        self._publish(job)
        task = asyncio.create_task(self._finish(job.id, work, facts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _finish(self, job_id: str, work: asyncio.Future[Encoded], facts: UploadFacts) -> None:
        try:
            encoded = await work
            image = stored_image(encoded, facts)
            with self.metrics.stage("encode", "store"):
                await asyncio.to_thread(self.storage.put, image, encoded.container)
            self.metrics.images_encoded.inc()
            if self.reconstructions is not None and encoded.decoder is not None:
                self.reconstructions.adopt(image, encoded.decoder)
            job = self._live[job_id]
            final = job.moved("done", time.time(), done=job.total, image_id=image.id)
        except BaseException as error:  # noqa: BLE001 - every failure ends the job visibly
            final = self._live[job_id].moved("failed", time.time(), error=job_error(error))
            if not isinstance(error, Exception):
                await self._settle(final)
                raise
        await self._settle(final)

    async def _settle(self, job: EncodeJob) -> None:
        """Record the final state, then let watchers see it and forget the live copy."""
        try:
            await asyncio.shield(asyncio.to_thread(self.store.save, job))
        except Exception:  # noqa: BLE001 - a store that fails now leaves the row to recover()
            log.exception("cannot record the end of encode job %s", job.id)
        self._publish(job)
        self._live.pop(job.id, None)
        self._changed.pop(job.id, None)

    def _progress(self, job_id: str, state: str, done: int, total: int) -> None:
        job = self._live.get(job_id)
        if job is None or job.finished:
            return
        moved = job.moved(state, time.time(), done=done, total=total)
        self._publish(moved)
        if state != job.state and self.queue is None:  # recorded; in a queue the heartbeat records progress
            task = asyncio.create_task(asyncio.to_thread(self.store.save, moved))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _publish(self, job: EncodeJob) -> None:
        self._live[job.id] = job
        previous = self._changed.get(job.id)
        self._changed[job.id] = asyncio.Event()
        if previous is not None:
            previous.set()

    async def serve_queue(self, worker: str, stop: asyncio.Event) -> None:
        """Claim queued jobs while this process has an idle model worker, until `stop` is set."""
        assert self.queue is not None
        while not stop.is_set():
            claimed = None
            if self.pool.admitted < self.pool.workers:
                try:
                    claimed = await asyncio.to_thread(self.queue.claim, worker)
                except StorageError as error:
                    log.warning("cannot read the job queue: %s", error)
            if claimed is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(QUEUE_POLL_SECONDS):
                        await stop.wait()
                continue
            log.info("encode job %s: attempt %d on %s", claimed.job.id, claimed.attempt, worker)
            task = asyncio.create_task(self._run_claimed(claimed, worker))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_claimed(self, claimed: ClaimedJob, worker: str) -> None:
        """Run a job from the queue under its lease; store the image only while the lease holds."""
        assert self.queue is not None
        queue, job_id = self.queue, claimed.job.id
        self._publish(claimed.job)
        loop = asyncio.get_running_loop()

        def report(state: str, done: int, total: int) -> None:  # on the worker thread
            loop.call_soon_threadsafe(self._progress, job_id, state, done, total)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(queue.heartbeat_seconds)
                live = self._live[job_id]
                if not await asyncio.to_thread(queue.renew, claimed, worker, live.state, live.done, live.total):
                    raise LeaseLost(job_id)

        beating = asyncio.create_task(heartbeat())
        image = None
        try:
            work = asyncio.ensure_future(
                self.pool.run(
                    lambda: encode_verified(claimed.upload, self.model, self.metrics, report, self.effort), wait=60.0
                )
            )
            await asyncio.wait({work, beating}, return_when=asyncio.FIRST_COMPLETED)
            if beating.done():
                work.cancel()
                beating.result()  # raises LeaseLost, or why the heartbeat failed
            encoded = work.result()
            image = stored_image(encoded, claimed.facts)
            with self.metrics.stage("encode", "store"):
                await asyncio.to_thread(self.storage.put, image, encoded.container)
            if self.reconstructions is not None and encoded.decoder is not None:
                self.reconstructions.adopt(image, encoded.decoder)
            final = self._live[job_id].moved("done", time.time(), done=self._live[job_id].total, image_id=image.id)
        except LeaseLost:
            log.warning("encode job %s: the lease was lost; another worker has it", job_id)
            final = None
        except Exception as error:  # noqa: BLE001 - every failure ends the job visibly
            final = self._live[job_id].moved("failed", time.time(), error=job_error(error))
        finally:
            beating.cancel()
        if final is not None:
            try:
                recorded = await asyncio.to_thread(queue.finish, claimed, worker, final)
            except StorageError as error:  # the lease runs out, and another worker takes the job again
                log.warning("encode job %s: cannot record its end (%s)", job_id, error)
                recorded = False
            if not recorded:
                log.warning("encode job %s: not recorded as its lease holder; its result is discarded", job_id)
                final = None
        if final is None and image is not None:
            with contextlib.suppress(StorageError):  # else an orphan, which sweep() removes
                await asyncio.to_thread(self.storage.delete, image.id)  # another worker stores its own
        if final is not None and final.state == "done":
            self.metrics.images_encoded.inc()
        self._publish(final or dataclasses.replace(self._live[job_id], state="queued"))
        self._live.pop(job_id, None)
        self._changed.pop(job_id, None)

    async def drain(self, timeout: float | None = 10.0) -> None:
        """At shutdown: let every job record how it ended (interrupted if it never ran)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def get(self, job_id: str) -> EncodeJob | None:
        if job_id in self._live:
            return self._live[job_id]
        return await asyncio.to_thread(self.store.get, job_id) if valid_job_id(job_id) else None

    async def watch(self, job_id: str) -> AsyncIterator[EncodeJob]:
        """The job now, then at every change, until it has finished."""
        while True:
            changed = self._changed.get(job_id)
            job = await self.get(job_id)
            if job is None:
                return
            yield job
            if job.finished:
                return
            if changed is None:  # not live here: finished meanwhile, or recorded by another process
                await asyncio.sleep(STORE_POLL_SECONDS)
                continue
            await changed.wait()

    async def wait(self, job_id: str) -> EncodeJob:
        """The job once it has finished."""
        last = None
        async for update in self.watch(job_id):
            last = update
        assert last is not None
        return last
