"""The app in the test process: Starlette's TestClient runs the same lifespan as uvicorn, so faults can be
injected into storage and services that a subprocess would hide."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.app import create_app
from server.config import Settings
from tests.harness import WRITE_KEY

with warnings.catch_warnings():  # Starlette prefers `httpx2` for its test client; httpx works the same here
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient


@contextmanager
def running(root: Path, weights: Path, **overrides) -> Iterator[TestClient]:
    """A started app with data under `root`, the write key of the harness and one torch thread."""
    settings = Settings(
        data_dir=root / "data",
        weights=weights,
        torch_threads=1,
        write_key=WRITE_KEY,
        static_dir=root / "static",
        **overrides,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
