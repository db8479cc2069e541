"""`PostgresIndex` (server/postgres.py) against a real PostgreSQL that these tests start themselves
(bench/engines.py, the fixture of tests/server/conftest.py).

The ImageIndex contract runs over both `SqliteIndex` and `PostgresIndex`; then migrations, an outage
(PostgreSQL stopped under a running server, then started again), start-up errors of `python -m server`,
and two real servers that share one PostgreSQL index and one S3 bucket (moto).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from websockets.sync.client import connect

from bench import processes
from bench.engines import BUCKET, PASSWORD, Postgres, remove, start_moto, start_postgres
from server.config import Settings
from server.postgres import MIGRATIONS, PostgresIndex, run_migrations
from server.storage import SqliteIndex, StorageError
from server.storage_factory import open_storage
from tests.harness import REPO, WRITE_KEY, ServerFactory, make_image, upload
from tests.server.test_server_units import stored

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
QUICK = 8.0  # seconds within which a stopped PostgreSQL must have become a StorageError (pool timeout 3 s)


# the ImageIndex contract, over both indexes


@pytest.fixture(params=["sqlite", "postgres"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    if request.param == "sqlite":
        made = SqliteIndex(tmp_path / "index.sqlite3")
    else:
        made = PostgresIndex(request.getfixturevalue("postgres").database())
    yield made
    made.close()


def test_insert_get_delete(index) -> None:  # type: ignore[no-untyped-def]
    image = stored("a" * 32)
    assert index.get("a" * 32) is None
    index.insert(image)
    assert index.get("a" * 32) == image
    assert index.count() == 1 and index.ids() == {"a" * 32}
    with pytest.raises(StorageError):
        index.insert(image)  # ids are unique
    assert index.delete("a" * 32)
    assert not index.delete("a" * 32)
    assert index.get("a" * 32) is None and index.count() == 0 and index.ids() == set()
    index.check_writable()


def test_rows_keep_their_layers_and_psnr(index) -> None:  # type: ignore[no-untyped-def]
    image = stored("c" * 32)
    index.insert(image)
    back = index.get("c" * 32)
    assert back == image and back.psnr == (30.5, None) and back.total_bytes == 10
    assert (back.end_of_layer(1), back.layers_within(9)) == (7, 1)


def test_pages_newest_first_with_a_cursor(index) -> None:  # type: ignore[no-untyped-def]
    ids = [f"{i:032x}" for i in range(5)]
    for number, image_id in enumerate(ids):
        index.insert(stored(image_id, created=1000.0 + number))
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = index.page(2, cursor)
        pages += 1
        seen += [image.id for image in page]
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and pages == 3  # every image once
    everything, last = index.page(5, None)
    assert [image.id for image in everything] == list(reversed(ids)) and last is None
    first, cursor = index.page(2, None)
    index.delete(first[1].id)  # a delete between pages skips nothing else
    rest, _ = index.page(10, cursor)
    assert [image.id for image in rest] == list(reversed(ids))[2:]
    assert index.page(3, None)[0][0].id == ids[-1]


def test_the_postgres_row_format(postgres: Postgres) -> None:
    url = postgres.database()
    index = PostgresIndex(url)
    image = stored("d" * 32)
    index.insert(image)
    index.close()
    with psycopg.connect(url) as connection:
        total, layers = connection.execute("SELECT total_bytes, layers FROM images").fetchone()
        kind = connection.execute("SELECT jsonb_typeof(layers) FROM images").fetchone()[0]
    assert total == 10 and kind == "array"
    assert layers == [
        {"index": 1, "offset": 4, "size": 3, "crc32": 123, "psnr": 30.5},
        {"index": 2, "offset": 7, "size": 3, "crc32": 456, "psnr": None},
    ]


# migrations


def test_a_fresh_database_gets_every_migration_once(postgres: Postgres) -> None:
    url = postgres.database()
    assert run_migrations(url) == list(range(1, len(MIGRATIONS) + 1))
    assert run_migrations(url) == []  # a no-op the second time
    PostgresIndex(url).close()  # and at start-up
    with psycopg.connect(url) as connection:
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


def test_concurrent_migrations_apply_each_version_once(postgres: Postgres) -> None:
    import concurrent.futures

    url = postgres.database()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run_migrations(url), range(4)))
    assert sorted(map(len, results)) == [0, 0, 0, len(MIGRATIONS)]


def test_a_newer_schema_is_refused(postgres: Postgres) -> None:
    url = postgres.database()
    run_migrations(url)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(StorageError, match="newer than this server"):
        PostgresIndex(url)


def run_server(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        env=processes.server_environment({"CODEC_SERVER_LOG_LEVEL": "info", **env}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_the_migrate_command(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.database()
    first = run_server(["migrate"], {"CODEC_SERVER_INDEX_URL": url, "CODEC_SERVER_DATA_DIR": str(tmp_path)})
    assert first.returncode == 0, first.stderr
    assert "applied 1" in first.stdout and PASSWORD not in first.stdout
    again = run_server(["migrate"], {"CODEC_SERVER_INDEX_URL": url})
    assert again.returncode == 0 and "nothing to apply" in again.stdout, again.stderr
    assert "migrate" in run_server(["--help"], {}).stdout
    assert "INDEX_URL" in one_line_error(run_server(["migrate"], {}))
    wrong = one_line_error(run_server(["migrate"], {"CODEC_SERVER_INDEX_URL": postgres.url(password="wrong")}))
    assert "password authentication failed" in wrong and ":***@" in wrong


# settings and start-up


def test_index_url_settings() -> None:
    assert Settings().index_url.get_secret_value() == ""
    assert Settings(index_url="  ").index_url.get_secret_value() == ""
    url = "postgresql://u:secret@db:5432/codec"
    assert Settings(index_url=url).index_url.get_secret_value() == url
    assert "secret" not in repr(Settings(index_url=url))
    Settings(index_url="postgres://db/codec")
    for bad in ("mysql://u:p@db/x", "db:5432/codec", "postgresql://u:p@db:port/x"):
        with pytest.raises(ValueError, match="index_url"):
            Settings(index_url=bad)


def test_open_storage_uses_postgres_when_index_url_is_set(postgres: Postgres, tmp_path: Path) -> None:
    storage = open_storage(Settings(data_dir=tmp_path / "data", index_url=postgres.database()))
    try:
        assert isinstance(storage.index, PostgresIndex)
        assert not (tmp_path / "data" / "index.sqlite3").exists()
        storage.put(stored("e" * 32), b"bitstream")
        assert storage.read(storage.get("e" * 32)) == b"bitstream"
        storage.check_writable()
    finally:
        storage.close()


@pytest.mark.parametrize("case", ["malformed-url", "wrong-password", "nothing-listening", "no-database"])
def test_unusable_index_url_fails_fast(postgres: Postgres, weights_path: Path, tmp_path: Path, case: str) -> None:
    url, expected = {
        "malformed-url": ("mysql://codec:pw@127.0.0.1/x", "invalid settings: index_url"),
        "wrong-password": (postgres.url(password="not-it"), "password authentication failed"),
        "nothing-listening": (f"postgresql://codec:pw@127.0.0.1:{processes.free_port()}/x", "cannot connect"),
        "no-database": (postgres.url("no_such_db"), 'database "no_such_db" does not exist'),
    }[case]
    started = time.monotonic()
    args = ["--weights", str(weights_path), "--data-dir", str(tmp_path / "data")]
    line = one_line_error(run_server(args, {"CODEC_SERVER_INDEX_URL": url}))
    assert expected in line, line
    assert "not-it" not in line and time.monotonic() - started < 60


# outage: PostgreSQL stopped under a running server, then started again


def test_postgres_down_is_a_quick_storage_error_then_recovers(server_factory: ServerFactory, tmp_path: Path) -> None:
    own = start_postgres()
    try:
        url = own.database()
        index = PostgresIndex(url)
        index.insert(stored("1" * 32))
        env = {"CODEC_SERVER_WRITE_KEY": WRITE_KEY, "CODEC_SERVER_INDEX_URL": url}
        running = server_factory.start(env, data_dir=tmp_path / "data")
        with httpx.Client(base_url=running.url, timeout=120, headers=AUTH) as http:
            document = upload(http, make_image(32, 32)).json()
            own.stop()
            calls = [index.count, index.ids, lambda: index.get("1" * 32), lambda: index.page(5, None)]
            calls += [lambda: index.insert(stored("2" * 32)), lambda: index.delete("1" * 32), index.check_writable]
            for call in calls:
                started = time.monotonic()
                with pytest.raises(StorageError, match="PostgreSQL unreachable"):
                    call()
                assert time.monotonic() - started < QUICK
            for path in [document["urls"]["info"], document["urls"]["bitstream"], "/images", "/ready"]:
                started = time.monotonic()
                response = http.get(path)
                assert response.status_code == 503, (path, response.status_code, response.text)
                assert time.monotonic() - started < QUICK
            assert http.get(document["urls"]["info"]).json()["error"]["code"] == "storage_unavailable"
            assert upload(http, make_image(32, 32, seed=1)).status_code == 503

            own.start()
            deadline = time.monotonic() + 90
            while http.get("/ready").status_code != 200:  # the pools reconnect; nothing restarts
                assert time.monotonic() < deadline, "the server did not reconnect to PostgreSQL"
                time.sleep(0.5)
            assert http.get(document["urls"]["info"]).json() == document
            while True:
                with contextlib.suppress(StorageError):
                    assert index.count() == 2 and index.get("1" * 32) is not None
                    break
                assert time.monotonic() < deadline, "the index did not reconnect to PostgreSQL"
                time.sleep(0.5)
        assert running.process.poll() is None
        running.stop()
        assert "Traceback" not in running.log()
        index.close()
    finally:
        remove(own)


# two servers, one PostgreSQL index, one bucket


def test_a_cluster_of_two_servers_and_a_worker(
    postgres: Postgres, server_factory: ServerFactory, weights_path: Path, tmp_path: Path
) -> None:
    """The cluster on loopback: API servers A and B that do not encode, one `python -m server worker`, one
    PostgreSQL index and job queue, one S3 bucket. Upload through A, read through B, delete through B."""
    moto = start_moto(tmp_path, authenticate=False)
    worker = None
    try:
        url = postgres.database()
        env = {
            "CODEC_SERVER_WRITE_KEY": WRITE_KEY,
            "CODEC_SERVER_INDEX_URL": url,
            "CODEC_SERVER_BLOB_URL": f"s3://{BUCKET}/shared",
            "CODEC_SERVER_S3_ENDPOINT": moto.url,
            "CODEC_SERVER_CLAIM_JOBS": "false",
            **moto.aws_env(),
        }
        a = server_factory.start(env, data_dir=tmp_path / "a")
        b = server_factory.start(env, data_dir=tmp_path / "b")
        worker = processes.start_worker(tmp_path / "w", env, tmp_path / "worker.log", weights_path)
        with (
            httpx.Client(base_url=a.url, timeout=120, headers=AUTH) as via_a,
            httpx.Client(base_url=b.url, timeout=120, headers=AUTH) as via_b,
        ):
            response = upload(via_a, make_image(64, 48))
            assert response.status_code == 201, response.text
            document = response.json()
            image_id = document["id"]
            assert via_b.get(document["urls"]["info"]).json() == document
            assert [item["id"] for item in via_b.get("/images").json()["images"]] == [image_id]
            picture = via_b.get(document["urls"]["image"], params={"layers": 1})
            assert picture.status_code == 200 and picture.headers["x-layers"] == "1"
            stored_bytes = via_a.get(document["urls"]["bitstream"]).content
            end = document["layers"][0]["end"]
            ranged = via_b.get(document["urls"]["bitstream"], headers={"Range": f"bytes=0-{end - 1}"})
            assert ranged.status_code == 206 and ranged.content == stored_bytes[:end]

            with connect(f"{b.ws_url}/ws/image/{image_id}") as ws:
                info = json.loads(ws.recv(timeout=30))
                assert info["type"] == "info" and info["id"] == image_id
                parts = [ws.recv(timeout=30)]
                ws.send(json.dumps({"type": "credit", "layers": 100}))
                parts += [ws.recv(timeout=30) for _ in document["layers"]]
                assert json.loads(ws.recv(timeout=30))["type"] == "done"
            assert b"".join(parts) == stored_bytes

            assert via_b.delete(f"/image/{image_id}").status_code == 204
            assert via_a.get(document["urls"]["info"]).status_code == 404
            assert via_a.get(document["urls"]["bitstream"]).status_code == 404
        with psycopg.connect(url) as connection:
            (encoded_by,) = connection.execute("SELECT worker FROM encode_jobs").fetchone()
        assert encoded_by.endswith(f":{worker.pid}")  # neither API server encoded
        for running in (a, b):
            assert not (running.data_dir / "jobs.sqlite").exists()  # jobs are in the database too
            assert not (running.data_dir / "index.sqlite3").exists()
            running.stop()
            assert "Traceback" not in running.log()
        assert processes.stop(worker) == 0 and "Traceback" not in (tmp_path / "worker.log").read_text()
    finally:
        if worker is not None:
            processes.stop(worker)
        moto.stop()
