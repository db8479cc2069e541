"""The browser's post-filter (static/decoder/postfilter.js) in headless Chromium against codec.postfilter.

A post-filter of random weights (the trained tail starts at zeros and would hide a wrong head) filters a
random reconstruction of a tile whose sides are not multiples of the block grid; the browser's picture
must be torch's within float32 rounding at every layer, and an export of another shape must be refused.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
from playwright.sync_api import Page

from bench import processes
from codec.api import fresh_model
from codec.model import CodecConfig
from codec.web_export import export_entropy_path

LAYERS = 6
HEIGHT, WIDTH = 48, 80  # padded tile sides: 24x40 at half resolution, neither a multiple of the 8 phases

FILTER = """async ({ part, tensors, reconstruction, height, width, layers }) => {
  const { PostFilter } = await import("/decoder/postfilter.js");
  const { productKernel } = await import("/decoder/kernel.js");
  const floats = (text) => {
    const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    return new Float32Array(bytes.buffer);
  };
  const byName = new Map(tensors.map(({ name, shape, data }) => [name, { shape, data: floats(data) }]));
  const tensor = (name) => byName.get(name);
  let filter;
  try {
    filter = new PostFilter(part, tensor, productKernel("f32"), layers);
  } catch (error) {
    return { error: error.name, message: error.message };
  }
  const input = floats(reconstruction);
  const shown = [];
  for (let layer = 1; layer <= layers; layer++) shown.push(Array.from(filter.shown(input, height, width, layer)));
  return { shown, unchanged: Array.from(input).every((v, i) => v === floats(reconstruction)[i]) };
}"""


def f32_b64(values: torch.Tensor) -> str:
    return base64.b64encode(values.detach().float().contiguous().numpy().astype("<f4").tobytes()).decode()


@pytest.fixture(scope="module")
def random_filter() -> torch.nn.Module:
    torch.manual_seed(5)
    model = fresh_model(CodecConfig(post_filter_channels=8))
    with torch.no_grad():
        for parameter in model.post_filter.parameters():
            parameter.normal_(0, 0.2)
    return model


@pytest.fixture
def js(page: Page, static_server: processes.Running) -> Page:
    page.goto(f"{static_server.url}/decoder/README.md")
    return page


def arguments(model: torch.nn.Module, reconstruction: torch.Tensor) -> dict:
    part = export_entropy_path(model)["synthesis"]["post_filter"]
    tensors = [
        {"name": f"post_filter.{name}", "shape": list(tensor.shape), "data": f32_b64(tensor)}
        for name, tensor in model.post_filter.state_dict().items()
    ]
    return {
        "part": part, "tensors": tensors, "reconstruction": f32_b64(reconstruction[0]),
        "height": HEIGHT, "width": WIDTH, "layers": LAYERS,
    }  # fmt: skip


def test_the_browser_filters_as_torch_at_every_layer(js: Page, random_filter: torch.nn.Module) -> None:
    torch.manual_seed(6)
    reconstruction = torch.rand(1, 3, HEIGHT, WIDTH)
    result = js.evaluate(FILTER, arguments(random_filter, reconstruction))
    assert "error" not in result, result
    assert result["unchanged"], "the filter wrote into the reconstruction the next layer refines"
    with torch.no_grad():
        for layer, shown in enumerate(result["shown"], start=1):
            expected = random_filter.shown_picture(reconstruction, layer)[0].numpy()
            got = np.asarray(shown, dtype=np.float32).reshape(expected.shape)
            correction = np.abs(expected - reconstruction[0].numpy()).max()
            assert correction > 0.1, "the random filter should change the picture visibly"
            assert np.abs(got - expected).max() <= 1e-4 * max(1.0, correction), f"layer {layer}"


def test_a_post_filter_of_another_shape_is_refused(js: Page, random_filter: torch.nn.Module) -> None:
    args = arguments(random_filter, torch.zeros(1, 3, HEIGHT, WIDTH))
    args["part"] = {**args["part"], "channels": 16}
    result = js.evaluate(FILTER, args)
    assert result["error"] == "PostFilterError" and "post_filter.head.weight has shape" in result["message"]
