"""What every error answer must look like: the JSON error shape, and nothing of the server's insides."""

from __future__ import annotations

import httpx

from tests.harness import REPO

# a traceback, a source location or an absolute path of the installation
LEAK_MARKERS = ("Traceback", 'File "', '.py"', ".py:", "site-packages", str(REPO))


def assert_no_leak(response: httpx.Response, *secrets: str) -> None:
    """Neither the body nor any header shows a traceback, a source path or one of `secrets`."""
    text = response.text + "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    for marker in (*LEAK_MARKERS, *secrets):
        assert marker not in text, f"{marker!r} leaks in {response.request.method} {response.request.url}"


def error_code(response: httpx.Response, *secrets: str) -> str:
    """The `error.code` of an answer, after checking the shape `{"error": {"code", "message"}}` and leaks."""
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert_no_leak(response, *secrets)
    return body["error"]["code"]
