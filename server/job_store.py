"""Where encode jobs are recorded, so that a job outlives the request that started it.

A job row is written when the job is accepted and whenever its state changes;
progress within a state lives in memory only (`EncodeJobs`). A process killed
mid-job leaves its rows queued or running: the next start marks them failed
(`fail_unfinished`), so no job ever reads as running forever. The image itself
follows the storage visibility rule, so a killed job never leaves a partial
image behind.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from protocol import JOB_FINAL_STATES
from server.storage import StorageError, translate_error

# Finished jobs are kept this long for late pollers, then pruned at start-up.
FINISHED_JOB_RETENTION_SECONDS = 7 * 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    done INTEGER NOT NULL,
    total INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    image_id TEXT,
    error_status INTEGER,
    error_code TEXT,
    error_message TEXT
)
"""


@dataclass(frozen=True)
class JobError:
    """Why a job failed: the status, code and message an upload would have answered."""

    status: int
    code: str
    message: str


@dataclass(frozen=True)
class EncodeJob:
    id: str
    state: str
    done: int  # tile-layers coded so far
    total: int  # tiles x layers
    created: float
    updated: float
    image_id: str | None = None
    error: JobError | None = None

    @property
    def finished(self) -> bool:
        return self.state in JOB_FINAL_STATES

    def moved(self, state: str, now: float, **changes: object) -> EncodeJob:
        return replace(self, state=state, updated=now, **changes)


def job_columns(job: EncodeJob) -> tuple:
    """The ten columns every job store keeps, in order: id, state, done, total, created, updated, image_id,
    error_status, error_code, error_message."""
    error = job.error
    return (
        job.id,
        job.state,
        job.done,
        job.total,
        job.created,
        job.updated,
        job.image_id,
        error.status if error else None,
        error.code if error else None,
        error.message if error else None,
    )


def job_from_columns(row: tuple) -> EncodeJob:
    job_id, state, done, total, created, updated, image_id, status, code, message = row
    error = JobError(status, code, message) if code is not None else None
    return EncodeJob(job_id, state, done, total, created, updated, image_id, error)


class SqliteJobStore:
    """Jobs in one SQLite file (WAL), one connection behind a lock, like the image index."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as error:
            raise StorageError(f"cannot open the job store {path}: {error}") from error

    def _execute(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise translate_error(error, "record the encode job") from error

    def save(self, job: EncodeJob) -> None:
        self._execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", job_columns(job))

    def get(self, job_id: str) -> EncodeJob | None:
        rows = self._execute("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        return job_from_columns(rows[0])

    def fail_unfinished(self, error: JobError, now: float) -> int:
        """Mark every job that was queued or running when its process died as failed; how many."""
        finals = ", ".join("?" for _ in JOB_FINAL_STATES)
        rows = self._execute(
            f"UPDATE jobs SET state = 'failed', updated = ?, error_status = ?, error_code = ?, error_message = ?"
            f" WHERE state NOT IN ({finals}) RETURNING id",
            (now, error.status, error.code, error.message, *JOB_FINAL_STATES),
        )
        return len(rows)

    def prune(self, before: float) -> int:
        finals = ", ".join("?" for _ in JOB_FINAL_STATES)
        rows = self._execute(
            f"DELETE FROM jobs WHERE updated < ? AND state IN ({finals}) RETURNING id", (before, *JOB_FINAL_STATES)
        )
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()
