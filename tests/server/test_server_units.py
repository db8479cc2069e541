"""In-process units: settings, storage (filesystem + SQLite), the worker pool and error mapping."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest

from codec import LayerEntry
from codec.api import Decoder
from codec.imageio import read_image
from codec.model import ScalableCodec
from codec.quality import psnr
from server import encoding
from server.__main__ import settings_from
from server.config import Settings
from server.metrics import Metrics
from server.pool import ModelPool, PoolBusy
from server.storage import (
    FileBlobStore,
    SqliteIndex,
    Storage,
    StorageError,
    StorageFullError,
    StoredImage,
    valid_id,
)


def stored(image_id: str, created: float = 0.0) -> StoredImage:
    return StoredImage(
        id=image_id,
        width=4,
        height=3,
        model="ab" * 16,
        header_bytes=4,
        sha256="cd" * 32,
        created=created or time.time(),
        layers=(LayerEntry(1, 4, 3, 123), LayerEntry(2, 7, 3, 456)),
        psnr=(30.5, None),
        source_format="PNG",
    )


# settings


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEC_SERVER_PORT", "9001")
    monkeypatch.setenv("CODEC_SERVER_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("CODEC_SERVER_ALLOWED_FORMATS", "png,jpeg")
    monkeypatch.setenv("CODEC_SERVER_WRITE_KEY", "secret")
    settings = Settings()
    assert settings.port == 9001
    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    assert settings.allowed_formats == ["PNG", "JPEG"]
    assert settings.write_key is not None and settings.write_key.get_secret_value() == "secret"
    assert "secret" not in repr(settings)


@pytest.mark.parametrize("blank", ["", "  "])
def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    """`KEY: ${KEY:-}` in docker-compose.yml passes the empty string when the host has no such variable:
    that must mean "no key" (an empty write key used to answer 401 to every upload)."""
    for name in ("WRITE_KEY", "READ_KEY", "CORS_ORIGINS"):
        monkeypatch.setenv(f"CODEC_SERVER_{name}", blank)
    settings = Settings()
    assert settings.write_key is None and settings.read_key is None and settings.cors_origins == []
    assert Settings(write_key=blank, read_key=blank).write_key is None  # the same through arguments
    monkeypatch.setenv("CODEC_SERVER_WRITE_KEY", " secret ")
    assert Settings().write_key.get_secret_value() == "secret"  # the Bearer token is stripped too


def test_an_empty_write_key_leaves_uploads_open(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, weights_path: Path
) -> None:
    from tests.harness import make_image
    from tests.in_process import TestClient, create_app

    monkeypatch.setenv("CODEC_SERVER_WRITE_KEY", "")
    monkeypatch.setenv("CODEC_SERVER_READ_KEY", "")
    settings = Settings(data_dir=tmp_path / "data", weights=weights_path, torch_threads=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post("/encode?wait=true", files={"file": ("a.png", make_image(24, 16), "image/png")})
        assert response.status_code == 201, response.text
        assert client.get(response.json()["urls"]["info"]).status_code == 200


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CODEC_SERVER_PORT", "9001")
    monkeypatch.setenv("CODEC_SERVER_WORKERS", "3")
    settings = settings_from(["--port", "9002", "--data-dir", str(tmp_path)])
    assert (settings.port, settings.workers, settings.data_dir) == (9002, 3, tmp_path)


def test_defaults() -> None:
    settings = Settings(_env_file=None)
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 8000, Path("data"))
    assert settings.write_key is None and settings.read_key is None
    assert settings.allowed_formats == ["PNG", "JPEG", "WEBP", "TIFF", "BMP"]


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        Settings(allowed_formats=["GIF"])
    with pytest.raises(ValueError):
        Settings(workers=0)


# storage


def test_ids() -> None:
    assert valid_id("0123456789abcdef0123456789abcdef")
    for bad in ("0123456789ABCDEF0123456789ABCDEF", "../../etc/passwd", "", "0" * 31, "0" * 33, "g" * 32):
        assert not valid_id(bad)


def test_put_get_read_delete(tmp_path: Path) -> None:
    storage = Storage.local(tmp_path)
    image = stored("a" * 32)
    storage.put(image, b"0123456789")
    assert storage.get("a" * 32) == image
    assert storage.read(image) == b"0123456789"
    assert storage.read(image, 4, 7) == b"456"
    assert storage.count() == 1
    assert [p.name for p in (tmp_path / "blobs").rglob("*")] == ["aa", "a" * 32 + ".sric"]  # no temp file left
    assert storage.delete("a" * 32)
    assert storage.get("a" * 32) is None
    assert not storage.delete("a" * 32)
    assert not (tmp_path / "blobs" / "aa" / ("a" * 32 + ".sric")).exists()
    assert storage.get("../../etc/passwd") is None
    storage.close()


def test_the_index_keeps_its_row_format(tmp_path: Path) -> None:
    """Databases written before keep loading: the layers column is JSON rows with their PSNR."""
    index = SqliteIndex(tmp_path / "index.sqlite3")
    image = stored("c" * 32)
    index.insert(image)
    total, layers = index._db.execute("SELECT total_bytes, layers FROM images").fetchone()
    assert total == image.total_bytes == 10
    assert json.loads(layers) == [
        {"index": 1, "offset": 4, "size": 3, "crc32": 123, "psnr": 30.5},
        {"index": 2, "offset": 7, "size": 3, "crc32": 456, "psnr": None},
    ]
    assert index.get("c" * 32) == image
    assert (image.end_of_layer(1), image.layers_within(9), image.bpp(2)) == (7, 1, 10 * 8 / 12)
    index.close()


def test_index_survives_reopen_and_pages(tmp_path: Path) -> None:
    storage = Storage.local(tmp_path)
    ids = [f"{i:032x}" for i in range(5)]
    for number, image_id in enumerate(ids):
        storage.put(stored(image_id, created=1000.0 + number), image_id.encode())
    storage.close()
    storage = Storage.local(tmp_path)
    seen, cursor = [], None
    while True:
        page, cursor = storage.page(2, cursor)
        seen += [image.id for image in page]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, every image once
    assert storage.read(storage.get(ids[3])) == ids[3].encode()
    assert (tmp_path / "index.sqlite3").exists()
    assert storage.index._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    storage.close()


def test_crash_leftovers_are_invisible_and_swept(tmp_path: Path) -> None:
    storage = Storage.local(tmp_path)
    storage.put(stored("b" * 32), b"kept")
    # a crash before the rename leaves a temp file; a crash before the index row leaves an orphan blob
    partial = tmp_path / "blobs" / "cc" / ("c" * 32 + ".sric.1.2.partial")
    partial.parent.mkdir()
    partial.write_bytes(b"half")
    orphan = tmp_path / "blobs" / "dd" / ("d" * 32 + ".sric")
    orphan.parent.mkdir()
    orphan.write_bytes(b"unindexed")
    assert storage.get("c" * 32) is None and storage.get("d" * 32) is None
    assert storage.sweep() == 0  # young files are left alone (another worker may be mid-write)
    old = time.time() - 7200
    os.utime(partial, (old, old))
    os.utime(orphan, (old, old))
    assert storage.sweep() == 2
    assert not partial.exists() and not orphan.exists()
    assert storage.read(storage.get("b" * 32)) == b"kept"
    storage.close()


def test_full_disk_maps_to_storage_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage.local(tmp_path)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageFullError):
        storage.put(stored("e" * 32), b"data")
    monkeypatch.undo()
    assert storage.get("e" * 32) is None
    assert list((tmp_path / "blobs").rglob("*.partial")) == []
    storage.close()


def test_blob_store_rejects_bad_keys(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    with pytest.raises(KeyError):
        blobs.path("../x")


def test_sqlite_index_unwritable(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.sqlite3")
    index.check_writable()
    index.close()
    with pytest.raises(StorageError):
        SqliteIndex(tmp_path / "missing-dir" / "index.sqlite3")


# worker pool


def test_pool_refuses_when_full_and_releases_slots() -> None:
    async def scenario() -> None:
        metrics = Metrics()
        pool = ModelPool(workers=1, queue_size=1, retry_after=7, metrics=metrics)
        gate = threading.Event()
        first = asyncio.create_task(pool.run(gate.wait))
        second = asyncio.create_task(pool.run(lambda: 2))
        await asyncio.sleep(0.05)
        assert pool.admitted == 2
        with pytest.raises(PoolBusy) as refused:
            await pool.run(lambda: 3)
        assert refused.value.retry_after == 7
        waiting = asyncio.create_task(pool.run(lambda: 4, wait=5.0))  # waits for a slot instead
        await asyncio.sleep(0.05)
        gate.set()
        assert await first is True
        assert await second == 2
        assert await waiting == 4
        assert pool.admitted == 0
        assert metrics.rejected._value.get() == 1
        pool.shutdown()

    asyncio.run(scenario())


def test_pool_slot_is_held_until_the_thread_finishes() -> None:
    async def scenario() -> None:
        pool = ModelPool(workers=1, queue_size=0, retry_after=1, metrics=Metrics())
        gate = threading.Event()
        task = asyncio.create_task(pool.run(gate.wait))
        await asyncio.sleep(0.05)
        task.cancel()  # the client went away, the thread still runs
        await asyncio.sleep(0.05)
        with pytest.raises(PoolBusy):
            await pool.run(lambda: None)
        gate.set()
        await asyncio.sleep(0.1)
        assert await pool.run(lambda: 5) == 5
        pool.shutdown()

    asyncio.run(scenario())


def test_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from server.app import choose_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto") == "cpu"
    assert choose_device("cpu") == "cpu"


def test_an_upload_is_verified_in_one_pass_and_its_psnr_is_each_layers(
    codec_model: ScalableCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.harness import make_image

    upload = make_image(150, 200, seed=3)
    pixels = read_image(upload)
    encoded = encoding.encode_verified(upload, codec_model, Metrics())
    decoder = Decoder(encoded.container, codec_model)
    assert encoded.psnr == tuple(round(psnr(pixels, decoder.decode(n)), 3) for n in range(1, 7))
    assert encoded.decoder is not None and encoded.decoder.layers_decoded == 6  # warm: handed on for caching
    monkeypatch.setattr(encoding, "WARM_DECODER_PIXELS", 150 * 200 - 1)
    large = encoding.encode_verified(upload, codec_model, Metrics())
    assert large.decoder is None and large.psnr == encoded.psnr  # too large to keep: nothing held
