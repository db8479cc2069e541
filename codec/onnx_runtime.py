"""The float networks at inference through ONNX Runtime, which ran them faster than torch on the CPU.

Two graphs per model: the analysis (the encoder's lapped transform and ConvLSTM refiner) and the
synthesis (the decoder's refiner and lapped transform), exported from the loaded weights; and a third
when the weights have a post-filter (codec/postfilter.py: 26 ms against torch's 40 ms for a 768x512
picture's tiles on 2 threads, 2026-12-04). The exact
entropy path (hyper-decoder, scale indexes, rANS) stays in torch float64, so the symbols are those
of the torch path; pixels agree with it within ±1, the contract that holds across thread counts
anyway (docs/format.md, Determinism). Training and the encoder-side search need gradients and keep
the torch modules: `ScalableCodec` asks for these networks only when no gradient is being recorded.

The lapped transforms export as a strided convolution and its transpose, the same sums as the
unfold + matmul that torch runs faster; ONNX Runtime has both, and so does its web build. The
wavelet (codec/wavelet.py) exports as it runs: slices, sums and pixel (un)shuffles.
Exports are cached on disk under the model id (`$CODEC_ONNX_CACHE`, default
`~/.cache/scalable-codec/onnx`), so a process exports each model once; the post-filter's under a digest
of its weights as well, since the model id leaves the filter out.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from codec.layers import LSTMState
from codec.transforms import BLOCK, PADDING, LappedAnalysis, LappedSynthesis

CACHE_ENV = "CODEC_ONNX_CACHE"
OPSET = 17
GRAPHS = ("analysis", "synthesis")
POST_FILTER = "post_filter"


class _AnalysisGraph(nn.Module):
    """Residual (N, 3, H, W) and the encoder's LSTM state to latents before the per-layer gain."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, residual: Tensor, hidden: Tensor, cell: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        analysis = self.encoder.analysis
        if isinstance(analysis, LappedAnalysis):
            coefficients = F.conv2d(residual, analysis.weight, stride=BLOCK, padding=PADDING)
        else:
            coefficients = analysis(residual)
        latents, (hidden, cell) = self.encoder.refiner(coefficients, (hidden, cell))
        return latents, hidden, cell


class _SynthesisGraph(nn.Module):
    """Scaled latents (N, C, h, w) and the decoder's LSTM state to the layer's increment."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, latents: Tensor, hidden: Tensor, cell: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        coefficients, (hidden, cell) = self.decoder.refiner(latents, (hidden, cell))
        synthesis = self.decoder.synthesis
        if isinstance(synthesis, LappedSynthesis):
            increment = F.conv_transpose2d(coefficients, synthesis.weight, stride=BLOCK, padding=PADDING)
        else:
            increment = synthesis(coefficients)
        return increment, hidden, cell


class _PostFilterGraph(nn.Module):
    """The shown picture (N, 3, H, W) of a reconstruction after layer `layer` + 1 (an int64 scalar)."""

    def __init__(self, post_filter: nn.Module) -> None:
        super().__init__()
        self.post_filter = post_filter

    def forward(self, reconstruction: Tensor, layer: Tensor) -> Tensor:
        return self.post_filter(reconstruction, layer)


def _export(graph: nn.Module, example: tuple[Tensor, ...], inputs: dict[str, dict], outputs: dict[str, dict]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter announces its successor on every call
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.float().eval(),
            example,
            buffer,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes={name: axes for name, axes in {**inputs, **outputs}.items() if axes},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def export_graph(model: nn.Module, name: str) -> bytes:
    """One graph of `model` (a ScalableCodec) as ONNX bytes, with free batch and picture sizes."""
    config = model.config
    hidden = torch.zeros(1, config.rnn_channels, 4, 4)
    if name == "analysis":
        graph, first = _AnalysisGraph(model.encoder), torch.zeros(1, 3, 4 * BLOCK, 4 * BLOCK)
    elif name == "synthesis":
        graph, first = _SynthesisGraph(model.decoder), torch.zeros(1, config.latent_channels, 4, 4)
    elif name == POST_FILTER and model.post_filter is not None:
        sizes = {0: "tiles", 2: "height", 3: "width"}
        example = (torch.zeros(1, 3, 2 * BLOCK, 2 * BLOCK), torch.tensor(0))
        return _export(_PostFilterGraph(model.post_filter), example, {"input": sizes, "layer": {}}, {"output": sizes})
    else:
        raise ValueError(f"no graph {name!r}; the graphs are {GRAPHS} and, with a post-filter, {POST_FILTER!r}")
    sizes = {0: "tiles", 2: "height", 3: "width"}
    names = ("input", "hidden", "cell"), ("output", "next_hidden", "next_cell")
    return _export(graph, (first, hidden, hidden), *({n: sizes for n in group} for group in names))


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "scalable-codec" / "onnx")


def graph_bytes(model: nn.Module, name: str) -> bytes:
    """The graph from the cache, else exported (and cached when the cache can be written)."""
    path = cache_dir() / model.model_id.hex() / f"{name}.onnx"
    if name == POST_FILTER:
        digest = hashlib.sha256()
        for tensor in model.post_filter.state_dict().values():
            digest.update(tensor.float().contiguous().numpy().tobytes())
        path = path.with_name(f"{name}-{digest.hexdigest()[:16]}.onnx")
    if path.is_file():
        return path.read_bytes()
    data = export_graph(model, name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(data)
        temporary.replace(path)
    except OSError:
        pass  # a read-only home: export again next time
    return data


def _session(data: bytes, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # no spinning: model workers and other processes share the cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


class OnnxNetwork:
    """One graph as a callable like the torch module it replaces: (input, state) -> (output, state)."""

    def __init__(self, data: bytes, hidden_channels: int, state_stride: int, threads: int) -> None:
        self.session = _session(data, threads)
        self.hidden_channels = hidden_channels
        self.state_stride = state_stride  # the LSTM state's resolution against the input's

    def __call__(self, x: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        if state is None:
            n, _, height, width = x.shape
            shape = (n, self.hidden_channels, height // self.state_stride, width // self.state_stride)
            zeros = np.zeros(shape, dtype=np.float32)
            hidden, cell = zeros, zeros
        else:
            hidden, cell = (s.numpy() for s in state)
        feeds = {"input": x.float().contiguous().numpy(), "hidden": hidden, "cell": cell}
        output, hidden, cell = self.session.run(None, {k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return torch.from_numpy(output), (torch.from_numpy(hidden), torch.from_numpy(cell))


class OnnxPostFilter:
    """The post-filter's graph as a callable like the module: (reconstruction, layer from 0) -> shown picture."""

    def __init__(self, data: bytes, threads: int) -> None:
        self.session = _session(data, threads)

    def __call__(self, reconstruction: Tensor, layer: int) -> Tensor:
        feeds = {"input": reconstruction.float().contiguous().numpy(), "layer": np.asarray(layer, dtype=np.int64)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


class InferenceNetworks:
    """The analysis, synthesis and post-filter of one loaded model through ONNX Runtime, built on first use."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._networks: dict[str, OnnxNetwork] = {}
        self._post_filter: OnnxPostFilter | None = None

    def post_filter(self) -> OnnxPostFilter:
        if self._post_filter is None:
            self._post_filter = OnnxPostFilter(graph_bytes(self._model, POST_FILTER), torch.get_num_threads())
        return self._post_filter

    def network(self, name: str) -> OnnxNetwork:
        if name not in self._networks:
            data = graph_bytes(self._model, name)
            stride = BLOCK if name == "analysis" else 1  # the analysis sees pixels, its state is at 1/16
            self._networks[name] = OnnxNetwork(data, self._model.config.rnn_channels, stride, torch.get_num_threads())
        return self._networks[name]
