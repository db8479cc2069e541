"""`open_storage(settings)`: the `Storage` the settings name, for the app and for `python -m server`'s check.

Blobs: with `blob_url` empty, files in `DATA_DIR/blobs/`; with `blob_url` = `s3://bucket[/prefix]`, an
`S3BlobStore` there (its bucket checked with a HEAD first). Index: with `index_url` empty, SQLite in
`DATA_DIR`; with `index_url` = `postgresql://...`, a `PostgresIndex` there (connected and migrated
first). boto3 and psycopg are imported only when they are needed.
"""

from __future__ import annotations

from server.config import Settings
from server.storage import BlobStore, FileBlobStore, ImageIndex, SqliteIndex, Storage, StorageError

INDEX_FILE = "index.sqlite3"  # the name Storage.local gives it


def open_storage(settings: Settings) -> Storage:
    """StorageError (with a message for the operator) when the data directory, the bucket or the index
    database cannot be used."""
    index_url = settings.index_url.get_secret_value()
    if not settings.blob_url and not index_url:
        return Storage.local(settings.data_dir)

    blobs: BlobStore
    if settings.blob_url:
        from server.s3 import S3BlobStore

        s3 = S3BlobStore.from_url(settings.blob_url, settings.s3_endpoint or None)
        try:
            s3.check_bucket()
        except StorageError:
            s3.close()
            raise
        blobs = s3
    try:
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)  # the job store stays here in every case
            if not settings.blob_url:
                blobs = FileBlobStore(settings.data_dir / "blobs")
        except OSError as error:
            raise StorageError(f"cannot use the data directory {settings.data_dir}: {error.strerror}") from error
        index: ImageIndex
        if index_url:
            from server.postgres import PostgresIndex

            index = PostgresIndex(index_url)
        else:
            index = SqliteIndex(settings.data_dir / INDEX_FILE)
        return Storage(blobs, index)
    except StorageError:
        close = getattr(blobs, "close", None) if settings.blob_url else None
        if close is not None:
            close()
        raise


def describe(settings: Settings) -> str:
    """Where the bitstreams and the index live, for the start-up log line."""
    index_url = settings.index_url.get_secret_value()
    if index_url:
        from server.postgres import redacted

        where = settings.blob_url or str((settings.data_dir / "blobs").resolve())
        return f"{where} (index in {redacted(index_url)})"
    if settings.blob_url:
        return f"{settings.blob_url} (index in {settings.data_dir.resolve()})"
    return str(settings.data_dir.resolve())
