"""Settings of the service, from the environment (prefix `CODEC_SERVER_`) or `python -m server` flags.

Every field is documented in docs/server.md; keep that table in step with this class.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from codec.effort import DEFAULT_EFFORT, check_effort

ENV_PREFIX = "CODEC_SERVER_"
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's rules for new bucket names


def default_static_dir() -> Path:
    """static/ beside the package (a checkout), else where `pip install` put the data files."""
    beside = Path(__file__).resolve().parent.parent / "static"
    installed = Path(sys.prefix) / "share" / "scalable-rnn-codec" / "static"
    return beside if beside.is_dir() or not installed.is_dir() else installed


def parse_blob_url(url: str) -> tuple[str, str]:
    """`s3://bucket[/prefix]` -> (bucket, prefix without surrounding slashes); ValueError when malformed."""
    form = "expected s3://bucket or s3://bucket/prefix"
    if not url.startswith("s3://"):
        raise ValueError(f"{form}, got {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not BUCKET_PATTERN.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{form}: {bucket!r} is no bucket name (3-63 lowercase letters, digits, dots, hyphens)")
    prefix = prefix.strip("/")
    if prefix and (
        any(part in ("", ".", "..") for part in prefix.split("/"))
        or any(c in "?#\\" or not c.isprintable() or c.isspace() for c in prefix)
    ):
        raise ValueError(f"{form}: the prefix {prefix!r} has an empty, '.' or '..' part, or a space, ?, # or \\")
    return bucket, prefix


def parse_index_url(url: str) -> None:
    """ValueError unless `url` is postgresql://[user[:password]@]host[:port]/database (or postgres://)."""
    form = "expected postgresql://user:password@host:port/database"
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"{form}, got a URL with another scheme")  # (no echo: it may hold a password)
    try:
        urlsplit(url).port  # noqa: B018 (a port that is no number raises ValueError)
    except ValueError:
        raise ValueError(f"{form}: the port is not a number") from None


class Settings(BaseSettings):
    """One instance configures one app; `create_app(settings)` never reads the environment itself."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    # where and what
    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    data_dir: Path = Field(Path("data"), description="bitstreams and the SQLite index live here")
    blob_url: str = Field("", description="s3://bucket[/prefix]: bitstreams in S3; empty: DATA_DIR/blobs")
    s3_endpoint: str = Field("", description="endpoint of an S3-compatible service; empty: AWS")
    index_url: SecretStr = Field(
        SecretStr(""), description="postgresql://user:pass@host:port/db: the image index there; empty: SQLite"
    )
    weights: Path | None = Field(None, description="weights file; default: $CODEC_WEIGHTS or weights/codec.pt")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when torch sees a GPU")
    torch_threads: int = Field(0, ge=0, description="torch intra-op threads; 0 keeps torch's default")
    static_dir: Path = Field(default_factory=default_static_dir, description="the viewer's files")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"

    # access
    write_key: SecretStr | None = Field(None, description="Bearer key for POST /encode and DELETE; unset: open")
    read_key: SecretStr | None = Field(None, description="Bearer key for reads; unset: reads are public")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="comma separated")
    list_enabled: bool = Field(True, description="GET /images answers 403 when false")

    # model work
    workers: int = Field(1, ge=1, le=64, description="threads running model jobs")
    effort: int = Field(
        DEFAULT_EFFORT,
        description="encoder effort level: 1 is the fastest; higher ones need fewer bytes, at many times the time",
    )
    claim_jobs: bool = Field(
        True, description="with a PostgreSQL index: this server's model workers take queued encode jobs too"
    )
    job_lease_seconds: float = Field(
        30.0, gt=0, le=3600, description="a queued job's worker that stops renewing for this long is taken for dead"
    )
    queue_size: int = Field(8, ge=0, le=10_000, description="jobs that may wait for a worker; more: 429")
    retry_after: int = Field(2, ge=1, description="seconds, in Retry-After of a 429")

    # limits
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1, description="413 above this")
    max_pixels: int = Field(100_000_000, ge=1, le=200_000_000, description="413 above width*height")
    allowed_formats: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(IMAGE_FORMATS), description="Pillow format names, comma separated; else 415"
    )
    max_ranges: int = Field(16, ge=1, le=1000, description="more ranges in one Range header: 416")
    max_header_bytes: int = Field(
        32 * 1024, ge=4096, le=1024 * 1024, description="request line and headers together; more: 431 (414)"
    )
    max_headers: int = Field(100, ge=16, le=10_000, description="header fields in one request; more: 431")
    list_page_size: int = Field(50, ge=1, description="default page of GET /images")
    list_max_page_size: int = Field(500, ge=1, description="largest ?limit= of GET /images")

    # caches
    decoder_cache: int = Field(16, ge=0, description="incremental decoders kept (LRU, per image)")
    picture_cache_bytes: int = Field(64 * 1024 * 1024, ge=0, description="encoded reconstructions kept (LRU)")

    # WebSocket
    ws_max_streams: int = Field(64, ge=1, description="concurrent streams; more are closed with 4429")
    ws_send_timeout: float = Field(10.0, gt=0, description="seconds one send may wait for a slow client")
    ws_idle_timeout: float = Field(60.0, gt=0, description="seconds a stream may wait for credit; then close 4408")
    ws_initial_credit: int = Field(0, ge=0, le=255, description="layers sent before the client grants any")
    ws_max_message_bytes: int = Field(4096, ge=128, description="largest client message; more: close 1009")
    socket_send_buffer: int | None = Field(
        None, ge=4096, description="SO_SNDBUF of every connection (bytes); unset: the OS autotunes it"
    )
    shutdown_timeout: int = Field(5, ge=0, description="seconds open connections get on shutdown")

    @field_validator("write_key", "read_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty (or blank) key is no key: `KEY: ${KEY:-}` in docker-compose.yml passes "" when the
        host sets nothing, and a key "" would refuse every request. Surrounding spaces are dropped, as
        they are from the Bearer token."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("effort")
    @classmethod
    def _effort(cls, value: int) -> int:
        check_effort(value)
        return value

    @field_validator("blob_url")
    @classmethod
    def _blob_url(cls, value: str) -> str:
        """Empty (or blank, as docker-compose passes an unset variable) is the local blob directory."""
        value = value.strip()
        if value:
            parse_blob_url(value)
        return value

    @field_validator("index_url")
    @classmethod
    def _index_url(cls, value: SecretStr) -> SecretStr:
        """Empty (or blank) is the SQLite index in DATA_DIR; else a PostgreSQL URL (it holds a password: secret)."""
        url = value.get_secret_value().strip()
        if url:
            parse_index_url(url)
        return SecretStr(url)

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"https?://[^/?#\s]+/?", value):
            raise ValueError(f"expected http(s)://host[:port], got {value!r}")
        return value.rstrip("/")

    @field_validator("cors_origins", "allowed_formats", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        upper = [name.upper() for name in value]
        unknown = sorted(set(upper) - set(IMAGE_FORMATS))
        if unknown:
            raise ValueError(f"unknown formats {unknown}; choose from {list(IMAGE_FORMATS)}")
        return upper

    @model_validator(mode="after")
    def _pages(self) -> Settings:
        if self.list_page_size > self.list_max_page_size:
            raise ValueError("list_page_size must not exceed list_max_page_size")
        return self

    @model_validator(mode="after")
    def _endpoint_needs_url(self) -> Settings:
        if self.s3_endpoint and not self.blob_url:
            raise ValueError("s3_endpoint is set but blob_url is not: set blob_url to s3://bucket[/prefix]")
        return self
