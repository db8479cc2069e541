"""`GET /decoder/models/{model_id}/{name}`: the in-browser decoder's files of the server's model."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from codec.model import ScalableCodec
from codec.web_export import export_entropy_path, synthesis_weights


def test_the_files_of_the_servers_model(client: httpx.Client, codec_model: ScalableCodec) -> None:
    model_id = codec_model.model_id.hex()
    entropy = client.get(f"/decoder/models/{model_id}/entropy-path.json")
    assert entropy.status_code == 200 and entropy.headers["content-type"] == "application/json"
    assert entropy.json() == json.loads(json.dumps(export_entropy_path(codec_model)))

    synthesis = client.get(f"/decoder/models/{model_id}/synthesis-weights.bin")
    assert synthesis.status_code == 200 and synthesis.headers["content-type"] == "application/octet-stream"
    assert synthesis.content == synthesis_weights(codec_model)

    # weights with another post-filter keep the model id: a browser keeps the files and revalidates them
    assert synthesis.headers["cache-control"] == "public, no-cache"
    assert synthesis.headers["etag"] == f'"{hashlib.sha256(synthesis.content).hexdigest()[:32]}"'
    etag = synthesis.headers["etag"]
    revalidated = client.get(f"/decoder/models/{model_id}/synthesis-weights.bin", headers={"If-None-Match": etag})
    assert revalidated.status_code == 304 and revalidated.content == b""
    assert entropy.headers["etag"] != etag


def test_unknown_models_and_names_are_404(client: httpx.Client, codec_model: ScalableCodec) -> None:
    model_id = codec_model.model_id.hex()
    other = client.get(f"/decoder/models/{'0' * 32}/synthesis-weights.bin")
    assert other.status_code == 404 and other.json()["error"]["code"] == "unknown_model"
    assert model_id in other.json()["error"]["message"]
    for name in ("synthesis.onnx", "analysis.onnx", "..%2Fcodec.pt", "weights.pt"):
        missing = client.get(f"/decoder/models/{model_id}/{name}")
        assert missing.status_code == 404, name
        assert missing.json()["error"]["code"] in ("not_found", "unknown_model"), name


@pytest.mark.parametrize(("query", "preloads"), [("?id=0123", True), ("", False), ("?id=0123&decoder=server", False)])
def test_the_viewer_preloads_the_model_files_when_it_will_decode(
    client: httpx.Client, codec_model: ScalableCodec, query: str, preloads: bool
) -> None:
    """Opening a picture to decode in the page, the answer's Link header has the browser fetch the model's
    files with the page (relative links: they follow the page behind a path prefix), and the page names
    that model for its script."""
    page = client.get(f"/{query}")
    model_id = codec_model.model_id.hex()
    folder = f"decoder/models/{model_id}"
    names = ("entropy-path.json", "synthesis-weights.bin")
    expected = ", ".join(f"<{folder}/{name}>; rel=preload; as=fetch; crossorigin" for name in names)
    assert page.headers.get("link") == (expected if preloads else None)
    assert page.headers["content-type"].startswith("text/html") and page.headers["cache-control"] == "no-cache"
    meta = f'<meta name="decoder-model" content="{model_id}">'
    assert (meta in page.text) == preloads and page.text.count("</head>") == 1
    assert "content-security-policy" in page.headers
