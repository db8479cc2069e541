"""`S3BlobStore` (server/s3.py) against a real S3 API: `moto_server` (moto[server], the test extras) as a
subprocess on a free loopback port (bench/engines.py, the fixture of tests/server/conftest.py).

The shared moto checks credentials (IAM authentication on: its first unauthenticated requests create a
user, its policy and its key, which every test then uses), so wrong credentials fail as they do on AWS.
The units compare `S3BlobStore` with `FileBlobStore` call by call; the end-to-end tests run `python -m
server` with `CODEC_SERVER_BLOB_URL` on moto.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from bench import processes
from bench.engines import BUCKET, REGION, Moto, start_moto
from server.config import Settings, parse_blob_url
from server.s3 import S3BlobStore
from server.storage import ORPHAN_GRACE_SECONDS, FileBlobStore, StorageError
from server.storage_factory import open_storage
from tests.harness import REPO, WRITE_KEY, ServerFactory, make_image, upload

READ_ONLY = {
    "Version": "2012-10-17",
    # AWS authorizes HeadBucket with s3:ListBucket; moto asks for an action of that name
    "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"], "Resource": "*"}],
}
AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
SOME_KEY = boto3.Session(aws_access_key_id="some", aws_secret_access_key="key", region_name=REGION)
QUICK = 6.0  # seconds within which a dead S3 must have become a StorageError


@pytest.fixture
def prefix() -> str:
    return f"t/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(moto: Moto, prefix: str) -> Iterator[S3BlobStore]:
    blobs = S3BlobStore(BUCKET, prefix, endpoint_url=moto.url, session=moto.session())
    yield blobs
    blobs.close()


def key(n: int) -> str:
    return f"{n:02x}" * 16


def names(moto: Moto, prefix: str) -> set[str]:
    pages = moto.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
    return {entry["Key"] for page in pages for entry in page.get("Contents", ())}


class Calls:
    """The S3 operations one client sends, with their request headers and parsed answers (botocore events)."""

    def __init__(self, blobs: S3BlobStore) -> None:
        self.operations: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.answers: list[dict] = []
        events = blobs.client.meta.events
        events.register("before-call.s3", self._call)
        events.register("before-send.s3", self._send)
        events.register("after-call.s3", self._answer)

    def _call(self, model, **_) -> None:  # type: ignore[no-untyped-def]
        self.operations.append(model.name)

    def _send(self, request, **_) -> None:  # type: ignore[no-untyped-def]
        self.headers.append(
            {name: value.decode() if isinstance(value, bytes) else value for name, value in request.headers.items()}
        )

    def _answer(self, parsed, **_) -> None:  # type: ignore[no-untyped-def]
        self.answers.append(parsed)


# the store, call by call


RANGES = [
    (0, None),
    (0, 1),
    (0, 100),
    (5, None),
    (100, 250),
    (9_990, 20_000),
    (9_999, None),
    (10_000, None),
    (20_000, None),
    (20_000, 30_000),
    (50, 50),
    (60, 40),
    (0, 0),
]


def test_reads_equal_the_file_store_for_every_range(store: S3BlobStore, tmp_path: Path) -> None:
    data = os.urandom(10_000)
    files = FileBlobStore(tmp_path / "blobs")
    for blobs in (store, files):
        blobs.put(key(1), data)
        blobs.put(key(2), b"")
    for start, end in RANGES:
        expected = data[start:end] if end is None or end > start else b""
        assert files.read(key(1), start, end) == expected
        assert store.read(key(1), start, end) == expected, (start, end)
        assert store.read(key(2), start, end) == files.read(key(2), start, end) == b""
    assert store.read(key(1)) == data


def test_a_range_read_asks_s3_for_those_bytes_only(store: S3BlobStore) -> None:
    data = os.urandom(50_000)
    store.put(key(3), data)
    calls = Calls(store)
    assert store.read(key(3), 1_000, 1_100) == data[1_000:1_100]
    assert calls.operations == ["GetObject"]
    assert calls.headers[-1]["Range"] == "bytes=1000-1099"
    assert calls.answers[-1]["ContentLength"] == 100
    assert calls.answers[-1]["ContentRange"] == "bytes 1000-1099/50000"

    assert store.read(key(3), 49_000) == data[49_000:]
    assert calls.headers[-1]["Range"] == "bytes=49000-" and calls.answers[-1]["ContentLength"] == 1_000
    assert store.read(key(3)) == data
    assert "Range" not in calls.headers[-1] and calls.answers[-1]["ContentLength"] == 50_000
    assert store.read(key(3), 7, 7) == b""  # no byte wanted: a HEAD, no body
    assert calls.operations[-1] == "HeadObject"


def test_missing_and_invalid_keys_behave_as_in_the_file_store(store: S3BlobStore, tmp_path: Path) -> None:
    files = FileBlobStore(tmp_path / "blobs")
    for blobs in (files, store):
        for start, end in [(0, None), (0, 10), (5, None), (5, 5), (9, 3)]:
            with pytest.raises(FileNotFoundError):
                blobs.read(key(4), start, end)
        blobs.delete(key(4))  # deleting what is absent is no error
        for bad in ("NOTANID", "AB" * 16, "../" + "ab" * 15 + "a", ""):
            with pytest.raises(KeyError):
                blobs.read(bad)
            with pytest.raises(KeyError):
                blobs.put(bad, b"x")
            with pytest.raises(KeyError):
                blobs.delete(bad)


def test_put_read_delete_and_the_object_names(moto: Moto, store: S3BlobStore, prefix: str) -> None:
    image_id = uuid.uuid4().hex
    store.put(image_id, b"SRIC and more")
    assert names(moto, prefix) == {f"{prefix}/{image_id[:2]}/{image_id}.sric"}  # FileBlobStore's layout
    assert store.read(image_id, 0, 4) == b"SRIC"
    store.delete(image_id)
    assert names(moto, prefix) == set()
    with pytest.raises(FileNotFoundError):
        store.read(image_id)


def test_a_bucket_without_prefix_names_objects_from_the_root(moto: Moto) -> None:
    blobs = S3BlobStore.from_url(f"s3://{BUCKET}", moto.url, session=moto.session())
    image_id = uuid.uuid4().hex
    blobs.put(image_id, b"root")
    assert moto.client().get_object(Bucket=BUCKET, Key=f"{image_id[:2]}/{image_id}.sric")["Body"].read() == b"root"
    blobs.delete(image_id)


def test_one_put_below_the_threshold_a_multipart_upload_above(moto: Moto, prefix: str) -> None:
    threshold = 5 * 1024 * 1024  # S3's smallest part
    blobs = S3BlobStore(BUCKET, prefix, endpoint_url=moto.url, session=moto.session(), multipart_threshold=threshold)
    calls = Calls(blobs)
    small, large = os.urandom(threshold), os.urandom(2 * threshold + 1000)
    blobs.put(key(5), small)
    assert calls.operations == ["PutObject"]
    calls.operations.clear()
    blobs.put(key(6), large)
    assert sorted(calls.operations) == sorted(
        ["CreateMultipartUpload", "UploadPart", "UploadPart", "UploadPart", "CompleteMultipartUpload"]
    )
    assert blobs.read(key(5)) == small and blobs.read(key(6)) == large
    assert blobs.read(key(6), threshold - 10, threshold + 10) == large[threshold - 10 : threshold + 10]


def test_a_failed_multipart_upload_leaves_no_object(moto: Moto, prefix: str) -> None:
    threshold = 5 * 1024 * 1024
    blobs = S3BlobStore(BUCKET, prefix, endpoint_url=moto.url, session=moto.session(), multipart_threshold=threshold)
    parts = []

    def fail_the_second_part(**_) -> None:  # type: ignore[no-untyped-def]
        parts.append(1)
        if len(parts) == 2:
            raise ClientError({"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "x")

    blobs.client.meta.events.register("before-call.s3.UploadPart", fail_the_second_part)
    with pytest.raises(StorageError, match="cannot write the bitstream"):
        blobs.put(key(7), os.urandom(3 * threshold))
    with pytest.raises(FileNotFoundError):
        blobs.read(key(7))
    uploads = moto.client().list_multipart_uploads(Bucket=BUCKET, Prefix=f"{prefix}/").get("Uploads", [])
    assert uploads == []  # boto3 aborted it


def test_sweep_removes_old_orphans_only(moto: Moto, store: S3BlobStore, prefix: str) -> None:
    s3 = moto.client()
    for n in (8, 9, 10):
        store.put(key(n), b"blob")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/.probe.1.2.partial", Body=b"ok")  # a probe left behind
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/notes.txt", Body=b"not ours")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/zz/{key(11)}.sric", Body=b"not our layout")
    before = names(moto, prefix)
    assert store.sweep({key(8)}, grace=ORPHAN_GRACE_SECONDS) == 0
    assert names(moto, prefix) == before

    unfinished = s3.create_multipart_upload(Bucket=BUCKET, Key=store.object_key(key(12)))["UploadId"]
    assert store.sweep({key(8)}, grace=1e9) == 0  # moto dates every unfinished upload 2010-11-10
    assert names(moto, prefix) == before
    time.sleep(0.01)
    assert store.sweep({key(8)}, grace=0) == 4  # two blobs, the probe, the unfinished upload
    assert names(moto, prefix) == {
        store.object_key(key(8)),
        f"{prefix}/notes.txt",
        f"{prefix}/zz/{key(11)}.sric",
    }
    uploads = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{prefix}/").get("Uploads", [])
    assert unfinished not in {upload["UploadId"] for upload in uploads}
    assert store.sweep({key(8)}, grace=0) == 0


def test_check_writable_leaves_no_probe(moto: Moto, store: S3BlobStore, prefix: str) -> None:
    store.check_writable()
    assert names(moto, prefix) == set()


def test_read_only_credentials_read_but_do_not_write(moto: Moto, store: S3BlobStore, prefix: str) -> None:
    store.put(key(13), b"readable")
    iam = moto.client("iam")
    user = f"reader-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps(READ_ONLY))
    access = iam.create_access_key(UserName=user)["AccessKey"]
    session = moto.session(access["AccessKeyId"], access["SecretAccessKey"])
    reader = S3BlobStore(BUCKET, prefix, endpoint_url=moto.url, session=session)
    reader.check_bucket()
    assert reader.read(key(13), 0, 4) == b"read"
    with pytest.raises(StorageError, match=r"^storage cannot write to the bucket \(S3 AccessDenied\)$"):
        reader.check_writable()
    with pytest.raises(StorageError, match="cannot write the bitstream"):
        reader.put(key(14), b"x")


def test_wrong_credentials_are_storage_errors(moto: Moto, prefix: str) -> None:
    wrong = S3BlobStore(BUCKET, prefix, endpoint_url=moto.url, session=moto.session(secret_key="wrong"))
    for attempt in (lambda: wrong.read(key(15)), lambda: wrong.put(key(15), b"x"), wrong.check_writable):
        with pytest.raises(StorageError, match=r"\(S3 "):
            attempt()
    with pytest.raises(StorageError, match="is denied"):
        wrong.check_bucket()


def every_call(blobs: S3BlobStore) -> list:
    return [
        lambda: blobs.put(key(16), b"x"),
        lambda: blobs.read(key(16)),
        lambda: blobs.read(key(16), 3, 9),
        lambda: blobs.delete(key(16)),
        blobs.check_writable,
        lambda: blobs.sweep(set(), 0),
    ]


def test_s3_down_is_a_quick_storage_error() -> None:
    """Nothing listens on the port: every call is a StorageError (503) within seconds, default timeouts."""
    url = f"http://127.0.0.1:{processes.free_port()}"
    blobs = S3BlobStore(BUCKET, "p", endpoint_url=url, session=SOME_KEY)
    for call in every_call(blobs):
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            call()
        assert time.monotonic() - started < QUICK
        assert "unreachable" in str(caught.value) and "127.0.0.1" not in str(caught.value)
    with pytest.raises(StorageError, match="cannot reach S3"):
        blobs.check_bucket()


def test_s3_that_never_answers_times_out() -> None:
    """A listening socket that accepts and never answers: the read timeout, then a StorageError."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        blobs = S3BlobStore(BUCKET, "p", endpoint_url=url, session=SOME_KEY, read_timeout=1.0)
        for call in every_call(blobs)[:3]:
            started = time.monotonic()
            with pytest.raises(StorageError, match="timed out"):
                call()
            assert time.monotonic() - started < QUICK


# settings and start-up


@pytest.mark.parametrize(
    "url",
    ["http://bucket/x", "bucket/x", "s3:/bucket", "s3://", "s3://Bucket", "s3://b", "s3://bucket/a//b", "s3://x_y"],
)
def test_malformed_blob_urls_are_invalid_settings(url: str) -> None:
    with pytest.raises(ValueError, match="expected s3://bucket"):
        parse_blob_url(url)
    with pytest.raises(ValueError, match="blob_url"):
        Settings(blob_url=url)


def test_blob_url_settings() -> None:
    assert parse_blob_url("s3://my.bucket-1") == ("my.bucket-1", "")
    assert parse_blob_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert Settings(blob_url="  ").blob_url == ""
    settings = Settings(blob_url="s3://bucket/p", s3_endpoint="http://127.0.0.1:9000/")
    assert settings.s3_endpoint == "http://127.0.0.1:9000"
    with pytest.raises(ValueError, match="s3_endpoint"):
        Settings(s3_endpoint="ftp://host")
    with pytest.raises(ValueError, match="blob_url is not"):
        Settings(s3_endpoint="http://127.0.0.1:9000")


def test_open_storage_keeps_the_index_local_and_the_blobs_in_s3(moto: Moto, tmp_path: Path, monkeypatch) -> None:
    for name, value in moto.aws_env().items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path / "data", blob_url=f"s3://{BUCKET}/open", s3_endpoint=moto.url)
    storage = open_storage(settings)
    try:
        assert isinstance(storage.blobs, S3BlobStore) and storage.blobs.prefix == "open/"
        assert (tmp_path / "data" / "index.sqlite3").is_file()
        assert not (tmp_path / "data" / "blobs").exists()
        storage.check_writable()
    finally:
        storage.close()


def start_up(env: dict[str, str], weights: Path, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", "--weights", str(weights), "--data-dir", str(data_dir)],
        cwd=REPO,
        env=processes.server_environment({"CODEC_SERVER_LOG_LEVEL": "info", **env}),  # the default level
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("settings", "secret", "expected"),
    [
        ({"CODEC_SERVER_BLOB_URL": "https://codec-blobs/x"}, None, "invalid settings: blob_url"),
        ({"CODEC_SERVER_BLOB_URL": "s3://no-such-bucket"}, None, "the bucket no-such-bucket does not exist at http"),
        ({"CODEC_SERVER_BLOB_URL": f"s3://{BUCKET}/p"}, "wrong", f"access to the bucket {BUCKET} at http"),
        ({"CODEC_SERVER_BLOB_URL": f"s3://{BUCKET}/p", "CODEC_SERVER_S3_ENDPOINT": "DEAD"}, None, "cannot reach S3"),
    ],
    ids=["malformed-url", "missing-bucket", "wrong-credentials", "s3-down"],
)
def test_unusable_blob_url_fails_fast(
    moto: Moto, weights_path: Path, tmp_path: Path, settings: dict, secret: str | None, expected: str
) -> None:
    env = {"CODEC_SERVER_S3_ENDPOINT": moto.url, **settings, **moto.aws_env(secret)}
    if env["CODEC_SERVER_S3_ENDPOINT"] == "DEAD":
        env["CODEC_SERVER_S3_ENDPOINT"] = f"http://127.0.0.1:{processes.free_port()}"
    started = time.monotonic()
    line = one_line_error(start_up(env, weights_path, tmp_path / "data"))
    assert expected in line, line
    assert time.monotonic() - started < 60
    assert moto.secret_key not in line


# end to end: python -m server with its blobs in moto


def test_server_keeps_its_blobs_in_s3(moto: Moto, server_factory: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {
        "CODEC_SERVER_WRITE_KEY": WRITE_KEY,
        "CODEC_SERVER_BLOB_URL": f"s3://{BUCKET}/e2e",
        "CODEC_SERVER_S3_ENDPOINT": moto.url,
        **moto.aws_env(),
    }
    running = server_factory.start(env, data_dir=data_dir)  # ready: /ready wrote and deleted a probe in moto
    s3 = moto.client()
    with httpx.Client(base_url=running.url, timeout=120, headers=AUTH) as http:
        response = upload(http, make_image(64, 48))
        assert response.status_code == 201, response.text
        document = response.json()
        image_id = document["id"]
        name = f"e2e/{image_id[:2]}/{image_id}.sric"
        stored = s3.get_object(Bucket=BUCKET, Key=name)["Body"].read()
        assert len(stored) == document["bytes"]

        assert http.get(document["urls"]["info"]).json() == document
        picture = http.get(document["urls"]["image"], params={"layers": 1})
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
        assert picture.headers["x-layers"] == "1"
        end = document["layers"][0]["end"]
        ranged = http.get(document["urls"]["bitstream"], headers={"Range": f"bytes=0-{end - 1}"})
        assert ranged.status_code == 206 and ranged.content == stored[:end]
        assert ranged.headers["content-range"] == f"bytes 0-{end - 1}/{len(stored)}"
        assert http.get(document["urls"]["bitstream"]).content == stored
        assert f'"GET /{BUCKET}/{name} HTTP/1.1" 206' in moto.log()  # the range went to S3 as a range

        assert not (data_dir / "blobs").exists() or not any((data_dir / "blobs").rglob("*"))
        assert (data_dir / "index.sqlite3").is_file()

        assert http.delete(f"/image/{image_id}").status_code == 204
        with pytest.raises(ClientError):
            s3.head_object(Bucket=BUCKET, Key=name)
    assert running.stop() in (0, -15)
    assert "Traceback" not in running.log()


def test_server_answers_503_when_s3_goes_away(server_factory: ServerFactory, tmp_path: Path) -> None:
    """A moto of this test's own, stopped under a running server: reads answer 503 quickly, never 500."""
    own = start_moto(tmp_path, authenticate=False)
    try:
        env = {
            "CODEC_SERVER_WRITE_KEY": WRITE_KEY,
            "CODEC_SERVER_BLOB_URL": f"s3://{BUCKET}/gone",
            "CODEC_SERVER_S3_ENDPOINT": own.url,
            **own.aws_env(),
        }
        running = server_factory.start(env, data_dir=tmp_path / "data")
        with httpx.Client(base_url=running.url, timeout=120, headers=AUTH) as http:
            document = upload(http, make_image(32, 32)).json()
            own.stop()
            # (pictures of this upload come from the decoder the encode left in memory, not from S3)
            for path, headers in [
                (document["urls"]["bitstream"], {"Range": "bytes=0-9"}),
                (document["urls"]["bitstream"], {}),
                ("/ready", {}),
            ]:
                started = time.monotonic()
                response = http.get(path, headers=headers)
                assert response.status_code == 503, (path, response.status_code, response.text)
                assert time.monotonic() - started < 2 * QUICK
            assert http.get(document["urls"]["bitstream"], headers={"Range": "bytes=0-9"}).json()["error"] == {
                "code": "storage_unavailable",
                "message": "storage cannot read the bitstream (S3 unreachable)",
            }
            assert http.get(document["urls"]["info"]).status_code == 200  # the index is still there
            refused = upload(http, make_image(32, 32, seed=1))
            assert refused.status_code == 503, refused.text
        running.stop()
        assert "Traceback" not in running.log()
    finally:
        own.stop()
