"""The storage contract (server/storage.py `Storage`) over every pair of a blob store and an index the server
can be configured with: files + SQLite (the default), S3 + PostgreSQL (the cluster), and the mixed pairs.

The engines are real: moto's S3 server and a PostgreSQL started by tests/server/conftest.py. What a backend
does on its own (temp files, WAL, multipart uploads, migrations) is tested in its own module.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.engines import BUCKET
from server.postgres import PostgresIndex
from server.s3 import S3BlobStore
from server.storage import FileBlobStore, ImageDeleted, SqliteIndex, Storage, StorageError, StoredImage
from tests.server.test_server_units import stored

PAIRS = ["file+sqlite", "s3+postgres", "s3+sqlite", "file+postgres"]


@pytest.fixture(params=PAIRS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    blob_kind, index_kind = request.param.split("+")
    if blob_kind == "file":
        blobs = FileBlobStore(tmp_path / "blobs")
    else:
        moto = request.getfixturevalue("moto")
        prefix = f"contract/{uuid.uuid4().hex[:8]}"
        blobs = S3BlobStore(BUCKET, prefix, endpoint_url=moto.url, session=moto.session())
    if index_kind == "sqlite":
        index = SqliteIndex(tmp_path / "index.sqlite3")
    else:
        index = PostgresIndex(request.getfixturevalue("postgres").database())
    made = Storage(blobs, index)
    yield made
    made.close()


def has_blob(storage: Storage, image_id: str) -> bool:
    try:
        storage.blobs.read(image_id, 0, 1)
    except FileNotFoundError:
        return False
    return True


def test_put_get_read_delete(storage: Storage) -> None:
    image = stored("a" * 32)
    storage.put(image, b"0123456789")
    assert storage.get("a" * 32) == image
    assert storage.read(image) == b"0123456789"
    assert storage.read(image, 4, 7) == b"456"
    assert storage.read(image, 8) == b"89"
    assert storage.count() == 1 and storage.index.ids() == {"a" * 32}
    assert storage.delete("a" * 32)
    assert storage.get("a" * 32) is None and not has_blob(storage, "a" * 32)
    assert not storage.delete("a" * 32)
    with pytest.raises(ImageDeleted):  # a reader that looked the image up before the delete
        storage.read(image)
    assert storage.get("../../etc/passwd") is None and not storage.delete("../../etc/passwd")


def test_pages_newest_first_every_image_once(storage: Storage) -> None:
    ids = [f"{i:032x}" for i in range(5)]
    for number, image_id in enumerate(ids):
        storage.put(stored(image_id, created=1000.0 + number), image_id.encode())
    seen, cursor = [], None
    while True:
        page, cursor = storage.page(2, cursor)
        assert len(page) <= 2
        seen += [image.id for image in page]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert storage.read(storage.get(ids[3])) == ids[3].encode()


def test_stored_images_are_immutable(storage: Storage) -> None:
    storage.put(stored("f" * 32), b"one")
    with pytest.raises(StorageError):
        storage.put(stored("f" * 32), b"two")
    assert storage.read(storage.get("f" * 32)) == b"one"


def test_an_index_failure_removes_the_new_blob(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(image: StoredImage) -> None:
        raise StorageError("index is read-only")

    monkeypatch.setattr(storage.index, "insert", refuse)
    with pytest.raises(StorageError):
        storage.put(stored("9" * 32), b"data")
    assert storage.get("9" * 32) is None and not has_blob(storage, "9" * 32)


def test_a_crash_between_blob_and_row_is_invisible_then_swept(storage: Storage) -> None:
    """The visibility rule: an image exists once its row does; a blob whose row never came is an orphan
    that nothing lists or serves, and sweep() removes it once older than the grace period."""
    storage.put(stored("b" * 32), b"kept")
    storage.blobs.put("d" * 32, b"unindexed")  # the process died before the index row
    assert storage.get("d" * 32) is None and storage.count() == 1
    assert [image.id for image in storage.page(10, None)[0]] == ["b" * 32]
    assert storage.sweep() == 0  # young: another process may be between its blob and its row
    time.sleep(1.1)  # S3 keeps LastModified to the second
    assert storage.sweep(grace=1.0) == 1
    assert not has_blob(storage, "d" * 32)
    assert storage.read(storage.get("b" * 32)) == b"kept"


def test_check_writable(storage: Storage) -> None:
    storage.check_writable()
    assert storage.count() == 0 and storage.sweep(grace=0.0) == 0  # the probes leave nothing behind
