"""The float networks through ONNX Runtime: the same symbols as torch, pixels within ±1, graphs cached by model id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codec import onnx_runtime
from codec.api import Decoder, encode, fresh_model, load_model, save_weights
from codec.model import CodecConfig
from codec.onnx_runtime import InferenceNetworks


def test_the_default_runtime_on_the_cpu_is_onnx_and_torch_can_be_chosen(weights_path: Path) -> None:
    assert isinstance(load_model(weights_path).inference, InferenceNetworks)
    assert load_model(weights_path, runtime="torch").inference is None
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_model(weights_path, runtime="tensorflow")


def test_onnx_and_torch_write_and_read_each_others_files(weights_path: Path, small_image: np.ndarray) -> None:
    onnx, plain = load_model(weights_path), load_model(weights_path, runtime="torch")
    for writer in (onnx, plain):
        data = encode(small_image, writer)
        readers = [Decoder(data, reader) for reader in (onnx, plain)]
        pictures = [reader.decode() for reader in readers]
        for n in range(1, onnx.config.layers + 1):
            assert readers[0].symbol_checksum(n) == readers[1].symbol_checksum(n)
        assert np.abs(pictures[0].astype(int) - pictures[1].astype(int)).max() <= 1


def test_gradients_go_through_the_torch_modules(weights_path: Path) -> None:
    """Training and the encoder-side search differentiate: with a gradient recorded, no ONNX graph runs."""
    model = load_model(weights_path)
    with torch.no_grad():
        assert model._float_network("synthesis", model.decoder) is model.inference.network("synthesis")
    with torch.enable_grad():
        assert model._float_network("synthesis", model.decoder) is model.decoder


def test_graphs_are_cached_under_the_model_id(
    weights_path: Path, small_image: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(tmp_path))
    model = load_model(weights_path)
    first = Decoder(encode(small_image, model), model).decode()
    cached = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.onnx"))
    assert cached == [f"{model.model_id.hex()}/{name}.onnx" for name in onnx_runtime.GRAPHS]

    def no_export(*_: object) -> bytes:
        raise AssertionError("the cached graph should have been used")

    monkeypatch.setattr(onnx_runtime, "export_graph", no_export)
    again = load_model(weights_path)
    assert np.array_equal(Decoder(encode(small_image, again), again).decode(), first)


def test_the_post_filter_runs_through_onnx_under_a_digest_of_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shown picture through ONNX Runtime is torch's at every layer and size; weights that differ only
    in the filter share the model id but not the filter's graph."""
    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(tmp_path))
    torch.manual_seed(3)
    model = fresh_model(CodecConfig(post_filter_channels=8))
    with torch.no_grad():
        for parameter in model.post_filter.parameters():
            parameter.normal_(0, 0.2)
    path = tmp_path / "filtered.pt"
    save_weights(model, path)
    loaded = load_model(path)
    with torch.no_grad():
        for shape in [(2, 3, 64, 128), (1, 3, 48, 80)]:
            reconstruction = torch.rand(*shape)
            for layer in (1, loaded.config.layers):
                shown = loaded.shown_picture(reconstruction, layer)
                expected = loaded.post_filter(reconstruction, layer - 1)
                assert (expected - reconstruction).abs().max() > 0.1  # the random filter does something
                assert (shown - expected).abs().max() <= 1e-5, (shape, layer)
        with torch.no_grad():
            model.post_filter.tail.bias.add_(0.01)
        save_weights(model, path)
        retrained = load_model(path)
        assert retrained.model_id == loaded.model_id
        reconstruction = torch.rand(1, 3, 64, 64)
        moved = retrained.shown_picture(reconstruction, 1) - loaded.shown_picture(reconstruction, 1)
        assert (moved - 0.01).abs().max() <= 1e-5, moved
    graphs = sorted(p.name for p in (tmp_path / loaded.model_id.hex()).glob("post_filter-*.onnx"))
    assert len(graphs) == 2
