"""The browser's wavelet synthesis (static/decoder/wavelet.js) in headless Chromium against codec.wavelet, and
a whole picture of a wavelet codec decoded in the browser as the Python `Decoder` decodes it.

The shipped weights use the lapped transform (test_browser_picture.py); a codec trained with
`--transform wavelet` must decode in the page too, or the viewer would fall back to server pictures.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from playwright.sync_api import Page

from bench import processes
from codec.api import Decoder, encode, fresh_model, load_model, save_weights
from codec.fit_tables import fit_tables
from codec.imageio import read_image
from codec.wavelet import WaveletSynthesis, synthesis_constants
from codec.web_export import export_entropy_path
from tests.browser.test_browser_picture import DECODE, pieces_of
from tests.codec.test_wavelet import WAVELET  # the tiny wavelet codec of the Python tests
from tests.harness import REPO, RunningServer, ServerFactory

SYNTHESISE = """async ({ part, luma, chroma, coefficients, lh, lw }) => {
  const { WaveletSynthesis } = await import("/decoder/wavelet.js");
  const bytes = Uint8Array.from(atob(coefficients), (c) => c.charCodeAt(0));
  const increment = new WaveletSynthesis(part, luma, chroma).synthesise(new Float32Array(bytes.buffer), lh, lw);
  return Array.from(increment);
}"""


@pytest.fixture
def js(page: Page, static_server: processes.Running) -> Page:
    page.goto(f"{static_server.url}/decoder/README.md")
    return page


@pytest.mark.parametrize(("luma", "chroma"), [(256, 64), (64, 16), (4, 1)])
def test_the_browser_synthesises_as_torch(js: Page, luma: int, chroma: int) -> None:
    torch.manual_seed(luma)
    lh, lw = 2, 3
    coefficients = torch.randn(luma + 2 * chroma, lh, lw)
    arguments = {
        "part": synthesis_constants(), "luma": luma, "chroma": chroma, "lh": lh, "lw": lw,
        "coefficients": base64.b64encode(coefficients.numpy().astype("<f4").tobytes()).decode(),
    }  # fmt: skip
    got = np.asarray(js.evaluate(SYNTHESISE, arguments), dtype=np.float32).reshape(3, 16 * lh, 16 * lw)
    expected = WaveletSynthesis(luma, chroma)(coefficients[None])[0].numpy()
    assert np.abs(expected).max() > 0.1
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def training_crops() -> torch.Tensor:
    """128² crops of two of the test pictures (not the one the test codes), 0..1, (N, 3, 128, 128)."""
    crops = []
    for name in ("kodim01-384x256.png", "kodim23-384x256.png"):
        picture = torch.from_numpy(read_image(REPO / "tests" / "data" / name)).permute(2, 0, 1).float() / 255
        crops += [picture[:, y : y + 128, x : x + 128] for y in (0, 128) for x in (0, 128, 256)]
    return torch.stack(crops)


@pytest.fixture(scope="module")
def wavelet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained wavelet codec whose refiner adds a random correction, so that the browser must run it, with
    tables fitted to its symbols, so that the browser must find each latent's neighbours in its band."""
    model = fresh_model(WAVELET, seed=7)
    with torch.no_grad():
        model.decoder.refiner.expand.weight.normal_(0, 0.02)
        model.latent_tables = fit_tables(model, training_crops())
    assert model.latent_tables.fitted_cells > 0
    path = tmp_path_factory.mktemp("wavelet-weights") / "wavelet.pt"
    save_weights(model, path)
    return path


@pytest.fixture(scope="module")
def wavelet_server(tmp_path_factory: pytest.TempPathFactory, wavelet_weights: Path) -> Iterator[RunningServer]:
    factory = ServerFactory(tmp_path_factory.mktemp("wavelet-server"), wavelet_weights)
    yield factory.start()
    factory.stop_all()


def test_a_wavelet_codec_decodes_in_the_browser_as_in_python(
    page: Page, wavelet_server: RunningServer, wavelet_weights: Path
) -> None:
    torch.set_num_threads(1)
    model = load_model(wavelet_weights)
    neighbours = export_entropy_path(model)["latent_rows"]["neighbours"]
    assert neighbours == {"kind": "wavelet band", "luma": 64, "chroma": 16, "levels": 4}
    data = encode(REPO / "tests" / "data" / "kodim08-350x230.png", model)
    expected = Decoder(data, model)
    page.goto(f"{wavelet_server.url}/")
    pieces = [base64.b64encode(piece).decode() for piece in pieces_of(data)]
    layers = page.evaluate(DECODE, {"pieces": pieces, "workers": 2})["layers"]
    assert [layer["layer"] for layer in layers] == list(range(1, WAVELET.layers + 1))
    for layer in layers:
        n = layer["layer"]
        python = expected.decode(n)
        assert layer["checksum"] == expected.symbol_checksum(n), f"layer {n}: symbols differ"
        assert layer["backend"] == "wasm"
        rgba = np.frombuffer(base64.b64decode(layer["rgba"]), dtype=np.uint8).reshape(*python.shape[:2], 4)
        difference = np.abs(rgba[..., :3].astype(int) - python.astype(int))
        assert difference.max() <= 1, f"layer {n}: a pixel differs by {difference.max()}"
    assert np.ptp(expected.decode(WAVELET.layers)) > 50  # a picture, not a flat field
