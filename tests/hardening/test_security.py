"""Access and exposure: every write route in the schema needs the key, ids give nothing away, nothing
internal is published, CORS answers only the configured origin. (Read keys, disabled listing, upload
and stream bounds: tests/server; hostile inputs and leak checks of every error: test_bad_input.py.)"""

from __future__ import annotations

import re
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from server.config import Settings
from tests.harness import REPO, WRITE_KEY, RunningServer, make_image, upload

from .answers import assert_no_leak, error_code

with warnings.catch_warnings():  # Starlette prefers `httpx2` for its test client; httpx works the same here
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

WRITE_METHODS = {"post", "put", "patch", "delete"}
ALLOWED_ORIGIN = "http://viewer.example"  # the shared server's cors_origins


def write_operations(client: httpx.Client) -> list[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return [(method.upper(), path) for path, item in paths.items() for method in item if method in WRITE_METHODS]


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", f"Bearer {WRITE_KEY[:-1]}", f"Bearer {WRITE_KEY} x", f"Token {WRITE_KEY}"]
)
def test_every_write_route_needs_the_write_key(client: httpx.Client, uploaded: dict, authorization: str | None) -> None:
    operations = write_operations(client)
    assert ("POST", "/encode") in operations and ("DELETE", "/image/{image_id}") in operations
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in operations:
        url = path.replace("{image_id}", uploaded["id"])  # a real image: refusal must not hide behind a 404
        files = {"file": ("a.png", make_image(8, 8), "image/png")} if method == "POST" else None
        response = client.request(method, url, headers=headers, files=files)
        assert response.status_code == 401, (method, path, response.status_code)
        assert error_code(response) == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert client.get(uploaded["urls"]["info"]).status_code == 200  # still there


def test_ids_are_random_and_answers_give_no_oracle(writer: httpx.Client, client: httpx.Client) -> None:
    data = make_image(16, 12, seed=21)
    ids = [upload(writer, data).json()["id"] for _ in range(3)]  # the same bytes thrice
    assert len(set(ids)) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", image_id) for image_id in ids)
    unknown, malformed = secrets.token_hex(16), "not-an-id"
    for suffix in ("", "/info", "/bitstream"):
        answers = [client.get(f"/image/{image_id}{suffix}") for image_id in (unknown, malformed)]
        assert [a.status_code for a in answers] == [404, 404]
        assert answers[0].json() == answers[1].json()  # a well-formed id that exists nowhere looks like garbage
    for image_id in (ids[0], unknown):  # without the key, existing and unknown ids are refused alike
        assert client.delete(f"/image/{image_id}").status_code == 401
    for image_id in ids:
        assert writer.delete(f"/image/{image_id}").status_code == 204


def test_nothing_internal_is_published(client: httpx.Client, server: RunningServer, uploaded: dict) -> None:
    for path in ("/openapi.json", "/ready", "/health", "/metrics", "/images", uploaded["urls"]["info"], "/docs"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_no_leak(response, str(server.data_dir), WRITE_KEY)
    assert not re.search(r"uvicorn/\d|python/\d", client.get("/health").headers.get("server", ""), re.IGNORECASE)


def test_cors_answers_the_configured_origin_only(client: httpx.Client, uploaded: dict) -> None:
    url = uploaded["urls"]["bitstream"]
    allowed = client.get(url, headers={"Origin": ALLOWED_ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "access-control-allow-credentials" not in allowed.headers
    assert "origin" in allowed.headers.get("vary", "").lower()  # caches keep answers per origin
    for origin in ("http://evil.example", "null", ALLOWED_ORIGIN + ".evil.example", "http://viewer.example:8080"):
        assert "access-control-allow-origin" not in client.get(url, headers={"Origin": origin}).headers, origin
    preflight = client.options(
        "/encode",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    refused = client.options(
        "/encode", headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "PATCH"}
    )  # a method the server does not allow
    assert refused.status_code == 400 and error_code(refused) == "bad_request"


@pytest.fixture(scope="module")
def default_app(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("defaults")
    settings = Settings(data_dir=root / "data", weights=weights_path, torch_threads=1, static_dir=root / "static")
    with TestClient(create_app(settings), raise_server_exceptions=False) as app_client:
        yield app_client


def test_without_configured_origins_there_is_no_cors(default_app: TestClient) -> None:
    assert default_app.app.state.service.settings.cors_origins == []
    for origin in (ALLOWED_ORIGIN, "http://evil.example"):
        response = default_app.get("/health", headers={"Origin": origin})
        assert not [name for name in response.headers if name.startswith("access-control-")]
        preflight = default_app.options("/encode", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 405 and preflight.json()["error"]["code"] == "method_not_allowed"
    assert str(REPO) not in default_app.get("/openapi.json").text


@pytest.mark.parametrize("name", sorted(path.name for path in (REPO / "static").iterdir() if path.is_file()))
def test_static_files_carry_the_viewer_policy(client: httpx.Client, name: str) -> None:
    """Every file under /static/ answers with the viewer's CSP (frame-ancestors 'none' among it) and
    nosniff, as `/` does: a viewer asset must not be framed, sniffed into another type or fetch elsewhere."""
    viewer = client.get("/")
    policy = viewer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    for response in (client.get(f"/static/{name}"), client.head(f"/static/{name}")):
        assert response.status_code == 200, name
        assert response.headers.get("content-security-policy") == policy, name
        assert response.headers.get("x-content-type-options") == "nosniff", name
    revalidated = client.get(f"/static/{name}", headers={"If-None-Match": response.headers["etag"]})
    assert revalidated.status_code == 304
    assert revalidated.headers.get("x-content-type-options") == "nosniff"


@pytest.mark.parametrize("page_path", ["/docs", "/redoc"])
def test_docs_are_served_from_this_server_only(client: httpx.Client, page_path: str) -> None:
    """`/docs` and `/redoc` work on an air-gapped machine: every script, style sheet, font and icon of the
    page is a path of this server that answers (from the pinned `fastapi-offline` package), none a CDN's."""
    page = client.get(page_path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""", page.text)
    urls = [a or b for a, b in references]
    assert urls, page.text
    assert not [url for url in urls if re.match(r"(?i)([a-z]+:)?//", url)], urls  # nothing off this server
    assert any(url.endswith(".js") for url in urls), urls
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and asset.content, url


PUBLIC_PATHS = (
    "/", "/static/viewer.js", "/health", "/ready", "/metrics", "/openapi.json", "/docs", "/redoc",
    "/docs/assets/swagger-ui-bundle.js",
)  # fmt: skip


def test_with_a_read_key_only_the_documented_routes_are_public(tmp_path: Path, weights_path: Path) -> None:
    """docs/server.md "Keys and origins": with a read key, the viewer's page and files, the health checks,
    the metrics and the API description stay public; every other GET of the schema needs the read key."""
    from tests.in_process import running

    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>viewer</title>")
    (static / "viewer.js").write_text("console.log(1)")
    with running(tmp_path, weights_path, read_key="reader") as app_client:
        stored = app_client.post(
            "/encode?wait=true",
            files={"file": ("a.png", make_image(16, 16), "image/png")},
            headers={"Authorization": f"Bearer {WRITE_KEY}"},
        )
        assert stored.status_code == 201
        image_id = stored.json()["id"]
        job_id = app_client.post(
            "/encode?wait=false",
            files={"file": ("a.png", make_image(16, 16), "image/png")},
            headers={"Authorization": f"Bearer {WRITE_KEY}"},
        ).json()["id"]
        # the browser decoder's files of the model hold no image data: public, as the viewer's files are
        decoder_file = f"/decoder/models/{stored.json()['model']}/entropy-path.json"
        public = (*PUBLIC_PATHS, decoder_file)
        for path in public:
            assert app_client.get(path).status_code == 200, path
        paths = app_client.get("/openapi.json").json()["paths"]
        iiif_request = {"{region}": "full", "{size}": "max", "{rotation}": "0", "{quality_format}": "default.png"}
        private = []
        for path, item in paths.items():
            if "get" in item:
                path = path.replace("{image_id}", image_id).replace("{job_id}", job_id)
                path = path.replace("{model_id}", stored.json()["model"]).replace("{name}", "entropy-path.json")
                for parameter, value in iiif_request.items():
                    path = path.replace(parameter, value)
                private.append(path)
        private = [path for path in private if path not in public]
        assert {
            f"/image/{image_id}", f"/image/{image_id}/info", f"/image/{image_id}/bitstream", "/images",
            f"/jobs/{job_id}", f"/jobs/{job_id}/events",
        } <= set(private)  # fmt: skip
        reader = {"Authorization": "Bearer reader"}
        for path in private:
            refused = app_client.get(path)
            assert refused.status_code == 401 and error_code(refused) == "unauthorized", path
            assert app_client.get(path, headers=reader).status_code == 200, path
