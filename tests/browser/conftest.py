"""Fixtures of the browser tests: a real server for the viewer, headless Chromium, a Kodak picture
(from tests/data, so that a bare clone runs them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

from bench import chromium, processes
from codec.api import load_model
from codec.model import ScalableCodec
from tests.browser.viewer_page import ViewerPage
from tests.harness import REPO, RunningServer, ServerFactory

VIEWER_KEY = "viewer-write-key"
MAX_UPLOAD_BYTES = 150_000
VIEWER_ENV = {
    "CODEC_SERVER_WRITE_KEY": VIEWER_KEY,
    "CODEC_SERVER_WORKERS": "1",
    "CODEC_SERVER_QUEUE_SIZE": "4",
    "CODEC_SERVER_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
}
KODAK_PICTURE = REPO / "tests" / "data" / "kodim23-384x256.png"  # the centre of kodim23 (tests/data/README.md)
KODAK_SIZE = (192, 128)  # the crop halved: the untrained test model is slow on large pictures


@pytest.fixture(scope="session")
def viewer_server(server_factory: ServerFactory) -> RunningServer:
    """A server of its own, so that the shared one's small queue and limits do not meet the browser."""
    return server_factory.start(VIEWER_ENV)


@pytest.fixture(scope="session")
def viewer_writer(viewer_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=viewer_server.url, timeout=120, headers={"Authorization": f"Bearer {VIEWER_KEY}"}
    ) as session:
        yield session


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Module-scoped: Playwright's sync API keeps an event loop running in this
    thread while it is open, which would break later tests that call asyncio.run."""
    problem = chromium.missing_browser()
    if problem:
        pytest.fail(problem, pytrace=False)
    with sync_playwright() as playwright:
        running = chromium.launch(playwright)
        yield running
        running.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab in a fresh context; fails the test on a JavaScript error or a blocked (foreign) load."""
    tab = chromium.new_page(browser)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console",
        lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None,
    )
    yield tab
    tab.context.close()
    assert not errors, f"JavaScript errors or CSP violations: {errors}"


@pytest.fixture
def viewer(page: Page, viewer_server: RunningServer) -> ViewerPage:
    return ViewerPage(page, viewer_server.url)


@pytest.fixture(scope="session")
def kodak_picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The centre of kodim23 downscaled with Lanczos to 192x128, as a PNG file to upload."""
    source = KODAK_PICTURE
    path = tmp_path_factory.mktemp("kodak") / "kodim23-192x128.png"
    with Image.open(source) as image:
        image.convert("RGB").resize(KODAK_SIZE, Image.Resampling.LANCZOS).save(path)
    return path


@pytest.fixture(scope="module")
def static_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[processes.Running]:
    """static/ served by Starlette's StaticFiles on loopback (the files the server mounts under /static), for
    the tests of the in-browser decoder's modules."""
    running = processes.start_starlette(tmp_path_factory.mktemp("static"), REPO / "static", "/decoder/README.md")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shipped_model() -> ScalableCodec:
    """The shipped weights (weights/codec.pt), one torch thread."""
    torch.set_num_threads(1)
    return load_model()
