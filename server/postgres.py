"""`PostgresIndex`: the `ImageIndex` in a PostgreSQL database, shared by every worker and host that names it.

Same rows and semantics as `SqliteIndex` (server/storage.py): one row per complete, verified blob, the
layers as JSONB in the shape `{index, offset, size, crc32, psnr}`, newest first by a sequence number
`seq` (the keyset cursor of `page`). Connections come from a `psycopg_pool.ConnectionPool` that checks
each one before lending it, so after PostgreSQL restarts the pool reconnects on its own; every psycopg
or pool error (server down, refused connection, pool timeout, ...) is a `StorageError` (503) within
about `POOL_TIMEOUT` seconds, never a raw 500.

The schema is versioned: `MIGRATIONS[k]` is version k+1, applied once in order and recorded in
`schema_migrations`, under a transaction-scoped `pg_advisory_xact_lock` so that concurrent start-ups
never both apply one. `open_index` migrates at start-up; `python -m server migrate` does only that.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from codec import LayerEntry
from server.storage import StorageError, StorageFullError, StoredImage

CONNECT_TIMEOUT = 3  # seconds for one connection attempt (libpq's connect_timeout; it counts 2 at least)
POOL_TIMEOUT = 3.0  # seconds a request waits for a pooled connection before its 503
POOL_MAX_SIZE = 8
# seconds the pool retries a lost connection (backoff 1, 2, 4 s, ...) before it gives up and connects again at
# the next request: bounds how long the index stays unavailable after PostgreSQL is back (psycopg_pool: 300)
RECONNECT_TIMEOUT = 8.0
MIGRATION_LOCK = 0x5C0DEC1D  # the advisory lock key of migrations (any bigint, the same for every process)

MIGRATIONS: tuple[str, ...] = (
    # 1: the images table, the columns of SqliteIndex's with PostgreSQL types
    """
    CREATE TABLE images (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        created DOUBLE PRECISION NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        model TEXT NOT NULL,
        total_bytes BIGINT NOT NULL,
        header_bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        source_format TEXT NOT NULL,
        layers JSONB NOT NULL
    )
    """,
    # 2: encode jobs and their queue (server.job_queue): the job row, the upload while it waits or runs,
    # and the lease of the worker that runs it
    """
    CREATE TABLE encode_jobs (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        done INTEGER NOT NULL,
        total INTEGER NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        updated DOUBLE PRECISION NOT NULL,
        image_id TEXT,
        error_status INTEGER,
        error_code TEXT,
        error_message TEXT,
        upload BYTEA,
        facts JSONB,
        attempts INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        lease_until DOUBLE PRECISION
    )
    """,
    # 3: the jobs a worker may claim, oldest first
    "CREATE INDEX encode_jobs_waiting ON encode_jobs (created) WHERE upload IS NOT NULL",
)

_COLUMNS = "seq, id, created, width, height, model, total_bytes, header_bytes, sha256, source_format, layers"


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "the index URL"


def translate(error: Exception, action: str) -> StorageError:
    """The storage error for a failed psycopg or pool call: 507 for a full disk, else 503."""
    state = getattr(error, "sqlstate", None)
    if state == "53100":  # disk_full
        return StorageFullError(f"no space left to {action}")
    if isinstance(error, psycopg.OperationalError) and state is None:  # down, refused, timed out, pool timeout
        return StorageError(f"storage cannot {action} (PostgreSQL unreachable)")
    return StorageError(f"storage cannot {action} (PostgreSQL {state or type(error).__name__})")


def migrate(connection: psycopg.Connection) -> list[int]:
    """Apply the migrations this database lacks, in order, in one transaction; the versions applied now."""
    applied_now = []
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        exists = connection.execute("SELECT to_regclass('schema_migrations')").fetchone()[0]
        if exists is None:  # (IF NOT EXISTS would still ask for CREATE on the schema on every start)
            connection.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                " applied TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        done = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
        newer = sorted(v for v in done if v > len(MIGRATIONS))
        if newer:
            raise StorageError(
                f"the index schema has version {newer[-1]}, newer than this server's {len(MIGRATIONS)}: "
                "upgrade the server"
            )
        for version, statement in enumerate(MIGRATIONS, start=1):
            if version not in done:
                connection.execute(statement)
                connection.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied_now.append(version)
    return applied_now


def connect(url: str) -> psycopg.Connection:
    """One direct connection (start-up, migrations): StorageError with libpq's reason when refused."""
    try:
        return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, autocommit=True)
    except psycopg.Error as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise StorageError(f"cannot connect to the index at {redacted(url)}: {reason}") from error


def run_migrations(url: str) -> list[int]:
    """`python -m server migrate`: the versions applied (empty when the schema was up to date)."""
    with connect(url) as connection:
        try:
            return migrate(connection)
        except psycopg.Error as error:
            reason = " ".join(str(error).split())
            raise StorageError(f"cannot migrate the index at {redacted(url)}: {reason}") from error


class PostgresIndex:
    """The index in PostgreSQL, through a checked connection pool; see the module docstring."""

    def __init__(self, url: str, *, max_size: int = POOL_MAX_SIZE, timeout: float = POOL_TIMEOUT) -> None:
        self.url = url
        run_migrations(url)  # also the start-up check: bad URL, wrong credentials, nothing listening
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            reconnect_timeout=RECONNECT_TIMEOUT,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
            check=ConnectionPool.check_connection,
            name="codec-index",
            open=False,
        )
        self._pool.open(wait=False)

    @property
    def pool(self) -> ConnectionPool:
        """The connections, shared with the job queue (server.job_queue), which lives in the same database."""
        return self._pool

    @staticmethod
    def _row(row: tuple) -> StoredImage:
        _seq, image_id, created, width, height, model, _total, header, sha, source, entries = row
        if isinstance(entries, str):
            entries = json.loads(entries)
        return StoredImage(
            id=image_id,
            width=width,
            height=height,
            model=model,
            header_bytes=header,
            sha256=sha,
            created=created,
            source_format=source,
            layers=tuple(LayerEntry(e["index"], e["offset"], e["size"], e["crc32"]) for e in entries),
            psnr=tuple(e.get("psnr") for e in entries),
        )

    def _execute(self, action: str, query: str, arguments: tuple = ()) -> list[tuple]:
        """Rows of one statement on a pooled connection (empty for none); StorageError on any failure."""
        try:
            with self._pool.connection() as connection:
                cursor = connection.execute(query, arguments)
                return cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as error:
            raise translate(error, action) from error

    def insert(self, image: StoredImage) -> None:
        layers = json.dumps(
            [
                {"index": e.index, "offset": e.offset, "size": e.size, "crc32": e.crc32, "psnr": quality}
                for e, quality in zip(image.layers, image.psnr, strict=True)
            ]
        )
        self._execute(
            "record the image",
            "INSERT INTO images (id, created, width, height, model, total_bytes, header_bytes, sha256,"
            " source_format, layers) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
            (
                image.id,
                image.created,
                image.width,
                image.height,
                image.model,
                image.total_bytes,
                image.header_bytes,
                image.sha256,
                image.source_format,
                layers,
            ),
        )

    def get(self, image_id: str) -> StoredImage | None:
        rows = self._execute("read the index", f"SELECT {_COLUMNS} FROM images WHERE id = %s", (image_id,))
        return self._row(rows[0]) if rows else None

    def delete(self, image_id: str) -> bool:
        rows = self._execute("delete from the index", "DELETE FROM images WHERE id = %s RETURNING seq", (image_id,))
        return bool(rows)

    def page(self, limit: int, after: int | None) -> tuple[list[StoredImage], int | None]:
        """Newest first; `after` is the cursor of the previous page. Returns the rows and the next cursor."""
        query = f"SELECT {_COLUMNS} FROM images"
        arguments: tuple = ()
        if after is not None:
            query += " WHERE seq < %s"
            arguments = (after,)
        query += " ORDER BY seq DESC LIMIT %s"
        rows = self._execute("read the index", query, (*arguments, limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        return [self._row(row) for row in rows], (rows[-1][0] if more and rows else None)

    def count(self) -> int:
        return int(self._execute("read the index", "SELECT COUNT(*) FROM images")[0][0])

    def ids(self) -> set[str]:
        return {row[0] for row in self._execute("read the index", "SELECT id FROM images")}

    def check_writable(self) -> None:
        """A write the database must accept (privilege, not read-only, not a standby), rolled back."""
        try:
            with self._pool.connection() as connection, connection.transaction(force_rollback=True):
                connection.execute("DELETE FROM images WHERE false")
        except psycopg.Error as error:
            raise translate(error, "write the index") from error

    def close(self) -> None:
        self._pool.close(timeout=5.0)
