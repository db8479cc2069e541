"""The image the client tests fetch, stored once per test module on the shared server."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import make_image, upload


@pytest.fixture(scope="module")
def stored(writer: httpx.Client) -> dict:
    """The info document of an image stored for this module's tests."""
    response = upload(writer, make_image(56, 40, seed=5))
    assert response.status_code == 201, response.text
    return response.json()
