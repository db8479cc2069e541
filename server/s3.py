"""`S3BlobStore`: the `BlobStore` of server/storage.py in an S3 bucket (AWS or any S3-compatible service).

Objects are named as `FileBlobStore` names its files, under the URL's prefix:
`s3://bucket/prefix` keeps image `abcdef…` at `prefix/ab/abcdef….sric` (so a
copy of the prefix is a `DATA_DIR/blobs` directory, and back). A PUT is atomic
in S3, and a multipart upload (above `MULTIPART_THRESHOLD`) becomes visible only
when it completes, which is the visibility rule's "blob complete and durable
before the index row". `read` is one GET with a `Range` header, so a byte-range
request moves only those bytes out of S3.

Every failure of boto3 or botocore (endpoint down, timeout, access denied, ...)
becomes `StorageError` (HTTP 503) with a short message that names no bucket or
endpoint; short timeouts and few attempts make a dead S3 a quick 503. Credentials
and the region come from boto3's default chain (`AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, `AWS_REGION`, an instance role, ...).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import time

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from server.config import parse_blob_url
from server.storage import (
    BLOB_SUFFIX,
    ORPHAN_GRACE_SECONDS,
    TEMP_SUFFIX,
    StorageError,
    StorageFullError,
    valid_id,
)

MULTIPART_THRESHOLD = 16 * 1024 * 1024  # one PUT up to here; above: a multipart upload of parts this size
CONNECT_TIMEOUT = 2.0  # seconds
READ_TIMEOUT = 5.0  # seconds one socket read may wait (not a whole transfer)
MAX_ATTEMPTS = 2  # the first try and one retry: a dead endpoint answers 503 within seconds
MAX_CONNECTIONS = 32  # requests run on the threadpool, several at once

S3_ERRORS = (BotoCoreError, ClientError, Boto3Error)
_FULL_CODES = {"XMinioStorageFull", "QuotaExceeded", "InsufficientStorage"}
_PROBE = re.compile(rf"\.probe\.[^/]*{re.escape(TEMP_SUFFIX)}")
_BLOB = re.compile(rf"([0-9a-f]{{2}})/([0-9a-f]{{32}}){re.escape(BLOB_SUFFIX)}")


def _status(error: ClientError) -> tuple[int, str]:
    """The HTTP status and the S3 error code of a failed request (a HEAD has no body: the code is the status)."""
    response = error.response
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status, str(response.get("Error", {}).get("Code") or status)


def translate_s3_error(error: Exception, action: str) -> StorageError:
    """The storage error for a failed S3 request: full (507) or unavailable (503), with a short reason."""
    cause = error.__cause__ if isinstance(error, Boto3Error) and isinstance(error.__cause__, ClientError) else error
    if isinstance(cause, ClientError):
        status, code = _status(cause)
        if status == 507 or code in _FULL_CODES:
            return StorageFullError(f"no space left to {action}")
        return StorageError(f"storage cannot {action} (S3 {code})")
    if isinstance(error, ConnectTimeoutError | ReadTimeoutError):
        return StorageError(f"storage cannot {action} (S3 timed out)")
    if isinstance(error, EndpointConnectionError):
        return StorageError(f"storage cannot {action} (S3 unreachable)")
    if isinstance(error, NoCredentialsError):
        return StorageError(f"storage cannot {action} (no S3 credentials)")
    return StorageError(f"storage cannot {action} (S3 {type(error).__name__})")


class S3BlobStore:
    """Blobs as objects `prefix/ab/abcdef….sric` in one bucket; one client, shared by the threads."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        session: boto3.Session | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or None
        self.multipart_threshold = multipart_threshold
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": max_attempts},  # max_attempts would count retries
            max_pool_connections=MAX_CONNECTIONS,
            # an S3-compatible service on a host of its own (MinIO, Ceph, moto) serves buckets as paths
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        try:
            self.client = (session or boto3.Session()).client("s3", endpoint_url=self.endpoint_url, config=config)
        except (*S3_ERRORS, ValueError) as error:
            raise StorageError(f"cannot create an S3 client: {error}") from error
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_threshold,
            max_concurrency=4,
        )

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None, **options: object) -> S3BlobStore:
        """The store of `s3://bucket[/prefix]`; ValueError when the URL is malformed."""
        bucket, prefix = parse_blob_url(url)
        return cls(bucket, prefix, endpoint_url=endpoint_url, **options)  # type: ignore[arg-type]

    def object_key(self, key: str) -> str:
        if not valid_id(key):
            raise KeyError(key)
        return f"{self.prefix}{key[:2]}/{key}{BLOB_SUFFIX}"

    def check_bucket(self) -> None:
        """HEAD the bucket (at start-up): StorageError with a message for the operator when it cannot be used."""
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            status, code = _status(error)
            if status == 404 or code == "NoSuchBucket":
                raise StorageError(f"the bucket {self.bucket} does not exist{where}") from error
            if status == 403:
                raise StorageError(
                    f"access to the bucket {self.bucket}{where} is denied (S3 {code}): check the AWS credentials "
                    "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and their permissions"
                ) from error
            raise StorageError(f"cannot use the bucket {self.bucket}{where}: S3 answered {status} {code}") from error
        except NoCredentialsError as error:
            raise StorageError(
                f"no AWS credentials for the bucket {self.bucket}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            ) from error
        except S3_ERRORS as error:
            raise StorageError(f"cannot reach S3{where} for the bucket {self.bucket}: {error}") from error

    def put(self, key: str, data: bytes) -> None:
        """One PUT (atomic); above the threshold a multipart upload, visible only once complete (boto3 aborts
        a failed one; `sweep` aborts what a crash left)."""
        name = self.object_key(key)
        try:
            if len(data) <= self.multipart_threshold:
                self.client.put_object(Bucket=self.bucket, Key=name, Body=data)
            else:
                self.client.upload_fileobj(io.BytesIO(data), self.bucket, name, Config=self._transfer)
        except S3_ERRORS as error:
            raise translate_s3_error(error, "write the bitstream") from error

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes `start` up to (not including) `end`, as `FileBlobStore.read`: short at the end of the
        object, empty past it; FileNotFoundError when absent."""
        name = self.object_key(key)
        if start < 0:  # a negative seek fails in FileBlobStore too
            raise StorageError("storage cannot read the bitstream")
        try:
            if end is not None and end <= start:  # no byte wanted; the object must still exist
                self.client.head_object(Bucket=self.bucket, Key=name)
                return b""
            arguments = {"Bucket": self.bucket, "Key": name}
            if start or end is not None:
                arguments["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
            response = self.client.get_object(**arguments)
            with contextlib.closing(response["Body"]) as body:
                return body.read()
        except ClientError as error:
            status, code = _status(error)
            if status == 404 and code != "NoSuchBucket":  # a HEAD's 404 has no code: "404"
                raise FileNotFoundError(f"no object {name}") from error
            if status == 416 or code == "InvalidRange":  # the range starts at or after the end
                return b""
            raise translate_s3_error(error, "read the bitstream") from error
        except S3_ERRORS as error:
            raise translate_s3_error(error, "read the bitstream") from error

    def delete(self, key: str) -> None:
        name = self.object_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=name)  # no error when absent, as unlink(missing_ok)
        except S3_ERRORS as error:
            raise translate_s3_error(error, "delete the bitstream") from error

    def check_writable(self) -> None:
        """Write and delete a tiny probe object beside the blobs (what `FileBlobStore` does with a file)."""
        probe = f"{self.prefix}.probe.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}"
        try:
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
        except S3_ERRORS as error:  # no delete after a failed PUT (a dead S3 would time out twice)
            raise translate_s3_error(error, "write to the bucket") from error
        with contextlib.suppress(*S3_ERRORS):  # sweep() removes a probe that stays behind
            self.client.delete_object(Bucket=self.bucket, Key=probe)

    def sweep(self, live: set[str], grace: float = ORPHAN_GRACE_SECONDS) -> int:
        """Remove blobs without an index row, left-over probes and unfinished multipart uploads, once older
        than `grace` seconds. Objects under the prefix that this store did not name are left alone."""
        removed = 0
        now = time.time()
        try:
            doomed = [
                entry["Key"]
                for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.prefix
                )
                for entry in page.get("Contents", ())
                if self._orphan(entry["Key"], live) and now - entry["LastModified"].timestamp() > grace
            ]
            uploads = [
                (upload["Key"], upload["UploadId"])
                for page in self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket, Prefix=self.prefix
                )
                for upload in page.get("Uploads", ())
                if self._ours(upload["Key"]) and now - upload["Initiated"].timestamp() > grace
            ]
        except S3_ERRORS as error:
            raise translate_s3_error(error, "list the bucket") from error
        for name in doomed:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=name)
                removed += 1
            except S3_ERRORS:
                continue
        for name, upload_id in uploads:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
                removed += 1
            except S3_ERRORS:
                continue
        return removed

    def _ours(self, name: str) -> bool:
        relative = name[len(self.prefix) :]
        match = _BLOB.fullmatch(relative)
        return bool(match and match[2].startswith(match[1]))

    def _orphan(self, name: str, live: set[str]) -> bool:
        relative = name[len(self.prefix) :]
        if _PROBE.fullmatch(relative):
            return True
        return self._ours(name) and relative[3 : -len(BLOB_SUFFIX)] not in live

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
