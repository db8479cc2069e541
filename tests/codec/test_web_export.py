"""`python -m codec export-onnx`: the in-browser decoder's files, bound to the model id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from codec.__main__ import main
from codec.api import fresh_model, load_model
from codec.model import CodecConfig
from codec.web_export import VERSION, export_entropy_path, synthesis_weights


def test_export_onnx_writes_the_files_of_the_model_id(tmp_path: Path, weights_path: Path, capsys) -> None:
    assert main(["export-onnx", str(tmp_path), "--weights", str(weights_path)]) == 0
    model = load_model(weights_path, runtime="torch")
    folder = tmp_path / model.model_id.hex()
    assert sorted(path.name for path in folder.iterdir()) == [
        "analysis.onnx", "entropy-path.json", "synthesis-weights.bin", "synthesis.onnx",
    ]  # fmt: skip
    assert str(folder / "synthesis-weights.bin") in capsys.readouterr().out

    path = json.loads((folder / "entropy-path.json").read_text())
    assert path["version"] == VERSION and path["model_id"] == model.model_id.hex()
    synthesis = path["synthesis"]
    assert synthesis["weights"] == "synthesis-weights.bin" and synthesis["rnn_channels"] == model.config.rnn_channels
    gains = np.asarray(synthesis["latent_inverse_gain"])
    assert gains.shape == (model.config.layers, model.config.latent_channels)
    expected = model.log_latent_inverse_gain.detach().float().exp().numpy()
    assert np.array_equal(gains.astype(np.float32), expected)  # float32 values, exact through JSON
    assert len(synthesis["increment_gain"]) == model.config.layers

    # the synthesis network's float32 parameters, tensor after tensor, in the order the export lists them
    weights = np.frombuffer((folder / "synthesis-weights.bin").read_bytes(), dtype="<f4")
    parameters = model.decoder.state_dict()
    at = 0
    for tensor in synthesis["tensors"][: len(parameters)]:
        expected = parameters[tensor["name"]].float().numpy()
        assert list(expected.shape) == tensor["shape"]
        assert np.array_equal(weights[at : at + expected.size].reshape(expected.shape), expected), tensor["name"]
        at += expected.size
    # (the post-filter's follow, when the weights have one: the next test)
    assert {t["name"] for t in synthesis["tensors"][: len(parameters)]} == set(parameters)
    assert at == weights.size or synthesis["tensors"][len(parameters)]["name"].startswith("post_filter.")

    for name in ("analysis", "synthesis"):  # graphs ONNX Runtime loads, for other runtimes than the page's
        session = onnxruntime.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        assert session.get_inputs() and session.get_outputs()


def test_a_post_filter_follows_the_synthesis_weights() -> None:
    """The post-filter's shape is in the export, its weights after the synthesis network's, by name."""
    model = fresh_model(CodecConfig(post_filter_channels=8))
    synthesis = export_entropy_path(model)["synthesis"]
    assert synthesis["post_filter"] == {"channels": 8, "depth": 3, "group": 2, "phases": 8}
    weights = np.frombuffer(synthesis_weights(model), dtype="<f4")
    listed = {t["name"]: t["shape"] for t in synthesis["tensors"]}
    filter_parameters = model.post_filter.state_dict()
    filter_names = {name for name in listed if name.startswith("post_filter.")}
    assert filter_names == {f"post_filter.{name}" for name in filter_parameters}
    at = sum(int(np.prod(shape)) for name, shape in listed.items() if not name.startswith("post_filter."))
    for name, tensor in filter_parameters.items():  # after every synthesis tensor, in the listed order
        assert listed[f"post_filter.{name}"] == list(tensor.shape)
        assert np.array_equal(weights[at : at + tensor.numel()].reshape(tensor.shape), tensor.numpy()), name
        at += tensor.numel()
    assert at == weights.size


def test_models_with_a_frequency_context_are_refused() -> None:
    model = fresh_model(CodecConfig(context_channels=8))
    with pytest.raises(ValueError, match="the browser's decoder has no frequency context"):
        export_entropy_path(model)
