"""The whole in-browser decoder (static/decoder/client.js: Web Workers, the exact entropy path and the synthesis
network in WebAssembly SIMD) in headless Chromium against the Python `Decoder`, with the shipped weights.

For three Kodak pictures and every layer the browser's symbols must be Python's exactly (the per-layer
checksum `Decoder.symbol_checksum`) and its pixels within ±1 of Python's (docs/format.md, Determinism).
The bytes reach the page in pieces, a layer split across two of them, as a slow link delivers them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import pytest
from playwright.sync_api import Page

from codec import container
from codec.api import Decoder, encode
from codec.model import ScalableCodec
from tests.harness import REPO, RunningServer, ServerFactory

PICTURES = ("kodim01-384x256.png", "kodim08-350x230.png", "kodim23-384x256.png")

# Decodes `pieces` (base64 strings, fed one after another) with `workers` workers; every layer's checksum,
# RGBA pixels (base64) and times.
DECODE = """async ({ pieces, workers }) => {
  const { WorkerDecoder } = await import("/static/decoder/client.js");
  const decoder = new WorkerDecoder(new URL("/decoder/models/", location.href), workers);
  const layers = [];
  const base64 = (bytes) => {
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(text);
  };
  decoder.open((layer) => layers.push({
    layer: layer.layer, checksum: layer.checksum, width: layer.width, height: layer.height,
    rgba: base64(layer.rgba), totalMs: layer.totalMs, backend: layer.backend, workers: layer.workers,
  }));
  const fedAfter = [];
  for (const piece of pieces) {
    const bytes = Uint8Array.from(atob(piece), (c) => c.charCodeAt(0));
    fedAfter.push(await decoder.feed(bytes.buffer));
  }
  decoder.terminate();
  return { layers, fedAfter };
}"""


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server running the shipped weights: it serves the page, the decoder's modules and the model files."""
    factory = ServerFactory(tmp_path_factory.mktemp("shipped-server"), REPO / "weights" / "codec.pt")
    yield factory.start()
    factory.stop_all()


def pieces_of(data: bytes) -> list[bytes]:
    """The header alone, layer 1, layer 2 in two halves, then the remaining layers one by one."""
    header = container.parse_header(data)
    cuts = [header.header_bytes]
    for layer in header.layers:
        if layer.index == 2:
            cuts.append(layer.offset + layer.size // 2)
        cuts.append(layer.end)
    return [data[a:b] for a, b in zip([0, *cuts], cuts, strict=False)]


@pytest.mark.parametrize("name", PICTURES)
def test_every_layer_decodes_in_the_browser_as_in_python(
    page: Page, shipped_server: RunningServer, shipped_model: ScalableCodec, name: str
) -> None:
    data = encode(REPO / "tests" / "data" / name, shipped_model)
    expected = Decoder(data, shipped_model)
    layer_count = expected.header.layer_count
    page.goto(f"{shipped_server.url}/")
    pieces = pieces_of(data)
    result = page.evaluate(DECODE, {"pieces": [base64.b64encode(piece).decode() for piece in pieces], "workers": 2})

    # the header completes no layer, the first half of layer 2 none more, every other piece one
    assert result["fedAfter"] == [0, 1, 1, *range(2, layer_count + 1)]
    layers = result["layers"]
    assert [layer["layer"] for layer in layers] == list(range(1, layer_count + 1))
    differing = []
    for layer in layers:
        n = layer["layer"]
        python = expected.decode(n)
        assert layer["checksum"] == expected.symbol_checksum(n), f"{name} layer {n}: symbols differ"
        assert (layer["width"], layer["height"]) == (python.shape[1], python.shape[0])
        rgba = np.frombuffer(base64.b64decode(layer["rgba"]), dtype=np.uint8).reshape(*python.shape[:2], 4)
        assert (rgba[..., 3] == 255).all()
        difference = np.abs(rgba[..., :3].astype(int) - python.astype(int))
        assert difference.max() <= 1, f"{name} layer {n}: a pixel differs by {difference.max()}"
        differing.append(float((difference > 0).mean()))
        assert layer["backend"] == "wasm" and layer["workers"] == 2
    print(f"{name}: pixels off by one per layer {[f'{d:.4%}' for d in differing]}, "
          f"browser ms per layer {[round(layer['totalMs']) for layer in layers]}")  # fmt: skip
