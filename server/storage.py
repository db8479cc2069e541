"""Where bitstreams and their metadata live.

`Storage` is what routes see. It combines a `BlobStore` (the container bytes,
written once, read by range) with an `ImageIndex` (one row per image). The
default pair is `FileBlobStore` (temp file, fsync, rename) plus `SqliteIndex`
(WAL). For several workers or hosts, an S3-compatible `BlobStore` (PUT is
atomic there; GET with a Range header) and a shared `ImageIndex` (e.g.
PostgreSQL) implement the same two protocols; nothing else changes.

Visibility rule: the blob is complete and durable before its index row is
committed, and the row is deleted before the blob. A crash therefore leaves at
most an orphan blob or a temp file, never a listed image with missing bytes;
`sweep()` removes orphans older than a grace period.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from codec import LayerEntry, LayerTable

ID_PATTERN = re.compile(r"[0-9a-f]{32}")
BLOB_SUFFIX = ".sric"
TEMP_SUFFIX = ".partial"
ORPHAN_GRACE_SECONDS = 3600.0


def valid_id(image_id: str) -> bool:
    """Ids are 32 lowercase hex digits (128 random bits); anything else names no image."""
    return ID_PATTERN.fullmatch(image_id) is not None


class StorageError(Exception):
    """Storage cannot serve the request (HTTP 503)."""


class StorageFullError(StorageError):
    """No space left for a new bitstream (HTTP 507)."""


class ImageDeleted(StorageError):
    """The image was deleted while a request was reading it (HTTP 404, WebSocket 4404)."""


def translate_error(error: Exception, action: str) -> StorageError:
    """The storage error for a failed file or SQLite operation: full (507) or unavailable (503)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(f"no space left to {action}")
    if isinstance(error, sqlite3.OperationalError) and "full" in str(error).lower():
        return StorageFullError(f"no space left to {action}")
    return StorageError(f"storage cannot {action}")


@dataclass(frozen=True)
class StoredImage(LayerTable):
    """One index row. `psnr[k]` (dB, None if unmeasured) is layer k+1's, measured when the upload was
    verified; the layer arithmetic (`end_of_layer`, `total_bytes`, ...) is the codec's `LayerTable`."""

    id: str
    width: int
    height: int
    model: str
    header_bytes: int
    sha256: str
    created: float
    layers: tuple[LayerEntry, ...]
    psnr: tuple[float | None, ...]
    source_format: str = ""

    @property
    def etag(self) -> str:
        """Strong entity tag: the content never changes, so the content hash is the version."""
        return f'"{self.sha256[:32]}"'


class BlobStore(Protocol):
    """Immutable byte objects by key."""

    def put(self, key: str, data: bytes) -> None: ...
    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def check_writable(self) -> None: ...
    def sweep(self, live: set[str], grace: float = ORPHAN_GRACE_SECONDS) -> int: ...


class ImageIndex(Protocol):
    """The metadata rows; a row exists only for a complete, verified blob."""

    def insert(self, image: StoredImage) -> None: ...
    def get(self, image_id: str) -> StoredImage | None: ...
    def delete(self, image_id: str) -> bool: ...
    def page(self, limit: int, after: int | None) -> tuple[list[StoredImage], int | None]: ...
    def count(self) -> int: ...
    def ids(self) -> set[str]: ...
    def check_writable(self) -> None: ...
    def close(self) -> None: ...


class FileBlobStore:
    """Blobs as files `blobs/ab/abcdef….sric`; written to a temp file, fsynced, renamed, directory fsynced."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not valid_id(key):
            raise KeyError(key)
        return self.root / key[:2] / f"{key}{BLOB_SUFFIX}"

    def put(self, key: str, data: bytes) -> None:
        final = self.path(key)
        temporary = final.with_name(f"{final.name}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}")
        try:
            final.parent.mkdir(exist_ok=True)
            with open(temporary, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            _fsync_directory(final.parent)
        except OSError as error:
            _discard(temporary)
            raise translate_error(error, "write the bitstream") from error

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes `start` up to (not including) `end`; FileNotFoundError when absent."""
        try:
            with open(self.path(key), "rb") as handle:
                handle.seek(start)
                return handle.read(-1 if end is None else max(0, end - start))
        except FileNotFoundError:
            raise
        except OSError as error:
            raise translate_error(error, "read the bitstream") from error

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as error:
            raise translate_error(error, "delete the bitstream") from error

    def check_writable(self) -> None:
        probe = self.root / f".probe.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}"
        try:
            with open(probe, "wb") as handle:
                handle.write(b"ok")
                os.fsync(handle.fileno())
        except OSError as error:
            raise translate_error(error, "write to the data directory") from error
        finally:
            _discard(probe)

    def sweep(self, live: set[str], grace: float = ORPHAN_GRACE_SECONDS) -> int:
        """Remove temp files and blobs without an index row, once older than `grace` seconds."""
        removed = 0
        now = time.time()
        for path in self._files():
            name = path.name
            orphan = name.endswith(TEMP_SUFFIX) or (
                name.endswith(BLOB_SUFFIX) and name[: -len(BLOB_SUFFIX)] not in live
            )
            try:
                if orphan and now - path.stat().st_mtime > grace:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def _files(self) -> Iterator[Path]:
        for directory in self.root.iterdir():
            if directory.is_dir():
                yield from directory.iterdir()


def _discard(path: Path) -> None:
    """Remove a temp or probe file if possible. A read-only directory refuses even this (EROFS), and the
    error being handled already says why; sweep() removes whatever stays behind."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    model TEXT NOT NULL,
    total_bytes INTEGER NOT NULL,
    header_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    source_format TEXT NOT NULL,
    layers TEXT NOT NULL
)
"""


class SqliteIndex:
    """The index in one SQLite file in WAL mode with synchronous=FULL; one connection behind a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as error:
            raise StorageError(f"cannot open the index {path}: {error}") from error

    def _row(self, row: tuple) -> StoredImage:
        """The image of a row; `total_bytes` is not read back, it is the last layer's end."""
        _seq, image_id, created, width, height, model, _total, header, sha, source, layers = row
        entries = json.loads(layers)
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

    _COLUMNS = "seq, id, created, width, height, model, total_bytes, header_bytes, sha256, source_format, layers"

    def insert(self, image: StoredImage) -> None:
        layers = json.dumps(
            [
                {"index": e.index, "offset": e.offset, "size": e.size, "crc32": e.crc32, "psnr": quality}
                for e, quality in zip(image.layers, image.psnr, strict=True)
            ]
        )
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO images (id, created, width, height, model, total_bytes, header_bytes, sha256,"
                    " source_format, layers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        except sqlite3.Error as error:
            raise translate_error(error, "record the image") from error

    def get(self, image_id: str) -> StoredImage | None:
        try:
            with self._lock:
                row = self._db.execute(f"SELECT {self._COLUMNS} FROM images WHERE id = ?", (image_id,)).fetchone()
        except sqlite3.Error as error:
            raise translate_error(error, "read the index") from error
        return self._row(row) if row else None

    def delete(self, image_id: str) -> bool:
        try:
            with self._lock:
                cursor = self._db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        except sqlite3.Error as error:
            raise translate_error(error, "delete from the index") from error
        return cursor.rowcount > 0

    def page(self, limit: int, after: int | None) -> tuple[list[StoredImage], int | None]:
        """Newest first; `after` is the cursor of the previous page. Returns the rows and the next cursor."""
        query = f"SELECT {self._COLUMNS} FROM images"
        arguments: tuple = ()
        if after is not None:
            query += " WHERE seq < ?"
            arguments = (after,)
        query += " ORDER BY seq DESC LIMIT ?"
        try:
            with self._lock:
                rows = self._db.execute(query, (*arguments, limit + 1)).fetchall()
        except sqlite3.Error as error:
            raise translate_error(error, "read the index") from error
        more = len(rows) > limit
        rows = rows[:limit]
        return [self._row(row) for row in rows], (rows[-1][0] if more and rows else None)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT id FROM images")}

    def check_writable(self) -> None:
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("ROLLBACK")
        except sqlite3.Error as error:
            raise translate_error(error, "write the index") from error

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Storage:
    """Bitstreams plus their index, with the visibility rule of this module's docstring."""

    def __init__(self, blobs: BlobStore, index: ImageIndex) -> None:
        self.blobs = blobs
        self.index = index

    @classmethod
    def local(cls, data_dir: Path) -> Storage:
        """The default: `DIR/blobs/` and `DIR/index.sqlite3`."""
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            blobs = FileBlobStore(data_dir / "blobs")
        except OSError as error:
            raise StorageError(f"cannot use the data directory {data_dir}: {error.strerror}") from error
        return cls(blobs, SqliteIndex(data_dir / "index.sqlite3"))

    def put(self, image: StoredImage, data: bytes) -> None:
        if self.index.get(image.id) is not None:
            raise StorageError(f"an image {image.id} exists already")  # blobs are immutable
        self.blobs.put(image.id, data)
        try:
            self.index.insert(image)
        except StorageError:
            self.blobs.delete(image.id)
            raise

    def get(self, image_id: str) -> StoredImage | None:
        return self.index.get(image_id) if valid_id(image_id) else None

    def read(self, image: StoredImage, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of a stored bitstream; ImageDeleted when a delete came first, StorageError
        when the blob has gone while its row is still there."""
        try:
            return self.blobs.read(image.id, start, end)
        except FileNotFoundError as error:
            if self.index.get(image.id) is None:
                raise ImageDeleted(f"image {image.id} was deleted") from error
            raise StorageError(f"the bitstream of {image.id} is missing") from error

    def delete(self, image_id: str) -> bool:
        if not valid_id(image_id) or not self.index.delete(image_id):
            return False
        with contextlib.suppress(StorageError):  # the row is gone, so is the image; sweep() removes the blob
            self.blobs.delete(image_id)
        return True

    def page(self, limit: int, after: int | None) -> tuple[list[StoredImage], int | None]:
        return self.index.page(limit, after)

    def count(self) -> int:
        return self.index.count()

    def check_writable(self) -> None:
        self.blobs.check_writable()
        self.index.check_writable()

    def sweep(self, grace: float = ORPHAN_GRACE_SECONDS) -> int:
        return self.blobs.sweep(self.index.ids(), grace)

    def close(self) -> None:
        self.index.close()
