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
from codec.web_export import VERSION, export_entropy_path


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
    for tensor in synthesis["tensors"]:
        expected = parameters[tensor["name"]].float().numpy()
        assert list(expected.shape) == tensor["shape"]
        assert np.array_equal(weights[at : at + expected.size].reshape(expected.shape), expected), tensor["name"]
        at += expected.size
    assert at == weights.size and {t["name"] for t in synthesis["tensors"]} == set(parameters)

    for name in ("analysis", "synthesis"):  # graphs ONNX Runtime loads, for other runtimes than the page's
        session = onnxruntime.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        assert session.get_inputs() and session.get_outputs()


@pytest.mark.parametrize("option", ["context_channels", "post_filter_channels"])
def test_models_the_browser_cannot_decode_are_refused(option: str) -> None:
    model = fresh_model(CodecConfig(**{option: 8}))
    with pytest.raises(ValueError, match="the browser's decoder has no frequency context and no post-filter"):
        export_entropy_path(model)
