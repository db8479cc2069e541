"""Fixtures common to every test folder: fresh weights and real servers on loopback (see tests/harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import SESSION_SERVER_ENV, WRITE_KEY, RunningServer, ServerFactory, make_image, upload


@pytest.fixture(scope="session")
def weights_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from codec.api import fresh_model, save_weights

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("weights") / "weights.pt"
    save_weights(fresh_model(), path)
    return path


@pytest.fixture(scope="session")
def codec_model(weights_path: Path):
    import torch

    from codec.api import load_model

    torch.set_num_threads(1)  # the server decodes with one thread too
    return load_model(weights_path)


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path_factory.mktemp("servers"), weights_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def server(server_factory: ServerFactory) -> RunningServer:
    return server_factory.start(SESSION_SERVER_ENV)


@pytest.fixture(scope="session")
def base_url(server: RunningServer) -> str:
    return server.url


@pytest.fixture(scope="session")
def ws_base(server: RunningServer) -> str:
    return server.ws_url


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as session:
        yield session


@pytest.fixture(scope="session")
def writer(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120, headers={"Authorization": f"Bearer {WRITE_KEY}"}) as session:
        yield session


@pytest.fixture(scope="session")
def uploaded(writer: httpx.Client) -> dict:
    response = upload(writer, make_image(48, 40))
    assert response.status_code == 201, response.text
    return response.json()
