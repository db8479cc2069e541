"""Encode jobs through a queue on PostgreSQL: any process with a free model worker takes the next job.

With the index on PostgreSQL (`CODEC_SERVER_INDEX_URL`), POST /encode records the job with its
upload in the `encode_jobs` table and answers 202; it runs no model work itself. Every process with a
model pool, `python -m server worker` and the API servers alike, claims queued jobs with
`SELECT … FOR UPDATE SKIP LOCKED`, so each job runs once, and holds a lease on it that a heartbeat
renews while the job runs; progress goes to the row with it, so a poller on any server sees it. A job
whose lease ran out (its process was killed) is claimed again by another worker, at most
`MAX_ATTEMPTS` times in all, and then fails visibly. The image follows the storage visibility rule, and
a worker that lost its lease discards what it stored, so a job never lists two images or a partial one.

The table is migration 2 of `server.postgres`. Times are PostgreSQL's clock (`clock_timestamp()`),
so leases hold across hosts whose clocks differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from protocol import JOB_FINAL_STATES
from server.encoding import UploadFacts
from server.job_store import EncodeJob, SqliteJobStore, job_columns, job_from_columns
from server.postgres import PostgresIndex
from server.storage import Storage, StorageError

HEARTBEATS_PER_LEASE = 5  # a running job renews its lease and writes its progress this often per lease
MAX_ATTEMPTS = 2  # a job whose worker died twice fails instead of killing a third
NOW = "extract(epoch from clock_timestamp())"

_COLUMNS = "id, state, done, total, created, updated, image_id, error_status, error_code, error_message"


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds the lease on, with what it needs to run."""

    job: EncodeJob
    upload: bytes
    facts: UploadFacts
    attempt: int


class PostgresJobQueue:
    """The job store and the queue in one table; every call is one short transaction."""

    def __init__(self, pool: ConnectionPool, lease_seconds: float) -> None:
        self.pool = pool
        self.lease_seconds = lease_seconds

    @property
    def heartbeat_seconds(self) -> float:
        return self.lease_seconds / HEARTBEATS_PER_LEASE

    def _run(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        try:
            with self.pool.connection() as connection, connection.cursor() as cursor:
                cursor.execute(sql, parameters)
                return cursor.fetchall() if cursor.description else []
        except (psycopg.Error, OSError) as error:  # the pool's timeout is a psycopg.Error too
            raise StorageError("storage cannot record the encode job") from error

    # -- the job store (what EncodeJobs and the job routes read) --------------

    def save(self, job: EncodeJob) -> None:
        """Record a final state (or any state of a job run outside the queue); clears the upload once final."""
        self._run(
            f"INSERT INTO encode_jobs ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, done = EXCLUDED.done, total = EXCLUDED.total,"
            " updated = EXCLUDED.updated, image_id = EXCLUDED.image_id, error_status = EXCLUDED.error_status,"
            " error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message,"
            " upload = CASE WHEN EXCLUDED.state = ANY(%s) THEN NULL ELSE encode_jobs.upload END",
            (*job_columns(job), list(JOB_FINAL_STATES)),
        )

    def get(self, job_id: str) -> EncodeJob | None:
        rows = self._run(f"SELECT {_COLUMNS} FROM encode_jobs WHERE id = %s", (job_id,))
        return job_from_columns(rows[0]) if rows else None

    def prune(self, before: float) -> int:
        rows = self._run(
            "DELETE FROM encode_jobs WHERE updated < %s AND state = ANY(%s) RETURNING id",
            (before, list(JOB_FINAL_STATES)),
        )
        return len(rows)

    def close(self) -> None:
        """The pool belongs to whoever opened it (the storage factory)."""

    # -- the queue --------------------------------------------------------------

    def enqueue(self, job: EncodeJob, upload: bytes, facts: UploadFacts, limit: int) -> bool:
        """Record a queued job with its upload; False (nothing recorded) if `limit` jobs already wait."""
        rows = self._run(
            f"INSERT INTO encode_jobs ({_COLUMNS}, upload, facts)"
            " SELECT %s, 'queued', 0, %s, %s, %s, NULL, NULL, NULL, NULL, %s, %s"
            " WHERE (SELECT count(*) FROM encode_jobs WHERE state = 'queued') < %s RETURNING id",
            (job.id, job.total, job.created, job.updated, upload, Jsonb(facts.__dict__), limit),
        )
        return bool(rows)

    def claim(self, worker: str) -> ClaimedJob | None:
        """Take the oldest waiting job (queued, or running with an expired lease) and lease it to `worker`.

        A job that has already had MAX_ATTEMPTS fails here instead of running again; the next one is
        tried. None when nothing waits.
        """
        while True:
            try:
                with self.pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT id, attempts FROM encode_jobs WHERE upload IS NOT NULL"
                        f" AND (state = 'queued' OR lease_until < {NOW})"
                        " ORDER BY created LIMIT 1 FOR UPDATE SKIP LOCKED"
                    )
                    candidate = cursor.fetchone()
                    if candidate is None:
                        return None
                    job_id, attempts = candidate
                    if attempts >= MAX_ATTEMPTS:
                        cursor.execute(
                            f"UPDATE encode_jobs SET state = 'failed', updated = {NOW}, upload = NULL,"
                            " error_status = 503, error_code = 'interrupted', error_message = %s WHERE id = %s",
                            (f"the encode was cut off {attempts} times; upload the image again", job_id),
                        )
                        continue
                    cursor.execute(
                        f"UPDATE encode_jobs SET state = 'running', attempts = attempts + 1, worker = %s,"
                        f" lease_until = {NOW} + %s, updated = {NOW} WHERE id = %s"
                        f" RETURNING {_COLUMNS}, upload, facts, attempts",
                        (worker, self.lease_seconds, job_id),
                    )
                    row = cursor.fetchone()
            except (psycopg.Error, OSError) as error:
                raise StorageError("storage cannot read the job queue") from error
            assert row is not None
            facts = row[11]
            return ClaimedJob(job_from_columns(row[:10]), bytes(row[10]), UploadFacts(**facts), row[12])

    def renew(self, claimed: ClaimedJob, worker: str, state: str, done: int, total: int) -> bool:
        """Extend the lease and record the progress; False if the lease was lost (another worker has the job)."""
        rows = self._run(
            f"UPDATE encode_jobs SET lease_until = {NOW} + %s, state = %s, done = %s, total = %s, updated = {NOW}"
            " WHERE id = %s AND worker = %s AND attempts = %s AND upload IS NOT NULL RETURNING id",
            (self.lease_seconds, state, done, total, claimed.job.id, worker, claimed.attempt),
        )
        return bool(rows)

    def finish(self, claimed: ClaimedJob, worker: str, job: EncodeJob) -> bool:
        """Record the final state if this worker still holds the lease; False if it was lost."""
        columns = job_columns(job)  # state, done, total, then image_id and the error
        rows = self._run(
            f"UPDATE encode_jobs SET state = %s, done = %s, total = %s, updated = {NOW}, image_id = %s,"
            " error_status = %s, error_code = %s, error_message = %s, upload = NULL, lease_until = NULL"
            " WHERE id = %s AND worker = %s AND attempts = %s AND upload IS NOT NULL RETURNING id",
            (*columns[1:4], *columns[6:], job.id, worker, claimed.attempt),
        )
        return bool(rows)


def open_job_store(storage: Storage, local: Path, lease_seconds: float) -> SqliteJobStore | PostgresJobQueue:
    """The queue in the index's database when the index is PostgreSQL, else jobs in `local` (SQLite)."""
    if isinstance(storage.index, PostgresIndex):
        return PostgresJobQueue(storage.index.pool, lease_seconds)
    return SqliteJobStore(local)
