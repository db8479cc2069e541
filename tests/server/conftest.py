"""Real engines for the server's tests (bench/engines.py): one PostgreSQL and one moto per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.engines import Moto, Postgres, remove, start_moto, start_postgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = start_postgres()
    yield server
    remove(server)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    with pytest.MonkeyPatch.context() as patch:
        # only the credentials the tests give: no profile, no config file, no instance metadata of this host
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            patch.delenv(name, raising=False)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        root = tmp_path_factory.mktemp("moto")
        patch.setenv("AWS_CONFIG_FILE", str(root / "no-config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(root / "no-credentials"))
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = start_moto(root, authenticate=True)
        yield server
        server.stop()
