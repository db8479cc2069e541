"""`open_storage(settings)`: the `Storage` the settings name, for the app and for `python -m server`'s check.

With `blob_url` empty, `Storage.local(data_dir)` (blobs in `DATA_DIR/blobs/`);
with `blob_url` = `s3://bucket[/prefix]`, an `S3BlobStore` there (its bucket
checked with a HEAD first) and the same SQLite index in `DATA_DIR`. boto3 is
imported only in the second case.
"""

from __future__ import annotations

from server.config import Settings
from server.storage import SqliteIndex, Storage, StorageError

INDEX_FILE = "index.sqlite3"  # the name Storage.local gives it


def open_storage(settings: Settings) -> Storage:
    """StorageError (with a message for the operator) when the data directory or the bucket cannot be used."""
    if not settings.blob_url:
        return Storage.local(settings.data_dir)

    from server.s3 import S3BlobStore

    blobs = S3BlobStore.from_url(settings.blob_url, settings.s3_endpoint or None)
    try:
        blobs.check_bucket()
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot use the data directory {settings.data_dir}: {error.strerror}") from error
        return Storage(blobs, SqliteIndex(settings.data_dir / INDEX_FILE))
    except StorageError:
        blobs.close()
        raise


def describe(settings: Settings) -> str:
    """Where the bitstreams live, for the start-up log line."""
    if settings.blob_url:
        return f"{settings.blob_url} (index in {settings.data_dir.resolve()})"
    return str(settings.data_dir.resolve())
