"""`python -m server worker`: encode jobs from the PostgreSQL queue, with no HTTP listener.

This is how a GPU machine joins a cluster: it shares the index, the job queue and the blob store
with the API servers, claims the next queued job whenever one of its model workers is idle, and
stores the image as an API server would. SIGTERM or SIGINT stops claiming; jobs already running
finish first (a job cut off anyway is taken again by another worker when its lease runs out).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from codec import ScalableCodec
from server.config import Settings
from server.encode_jobs import EncodeJobs
from server.job_queue import PostgresJobQueue
from server.metrics import Metrics
from server.pool import ModelPool
from server.storage import Storage

log = logging.getLogger("server.worker")


def worker_name() -> str:
    """Who holds a lease, as the queue records it: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_worker(settings: Settings, model: ScalableCodec, storage: Storage, queue: PostgresJobQueue) -> None:
    """Serve the queue until a stop signal, then let running jobs end."""
    metrics = Metrics()
    pool = ModelPool(settings.workers, settings.queue_size, settings.retry_after, metrics)
    jobs = EncodeJobs(queue, model, storage, pool, None, metrics, settings.effort)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    name = worker_name()
    log.info("worker %s: %d model worker(s), waiting for encode jobs", name, settings.workers)
    await jobs.serve_queue(name, stop)
    log.info("worker %s: stopping once the running jobs have ended", name)
    await jobs.drain(timeout=None)
    pool.shutdown()
