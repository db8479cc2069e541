"""The exact entropy-parameter path of a model as data for the browser's decoder (static/decoder/entropy.js).

A browser that decodes a file itself has to derive, layer by layer, exactly the CDF row of every latent
that the Python decoder derives, or its rANS symbols are garbage from the first wrong row on. Those rows
come from the hyper-decoder in exact mode (`ScalableCodec.entropy_parameters`, `quantized_scale_index`),
whose arithmetic is exact in float64 (`codec/exact.py`): given the same numbers on the grid, any correct
implementation gets the same results in any order. This module writes those numbers: the hyper-decoder's
`ExactConv2d` weights and biases already snapped to the weight grid, the per-layer scale-index offsets and
history weights snapped as `entropy_parameters` and `_history_scale` snap them, the side models' medians,
the constants of the grid, and the rANS tables the coder reads (`codec/rans_tables.py`). Everything on a
grid is stored as integer numerators over 2**bits, so nothing is lost on the way; the medians are float32
values, written as the float64 numbers that hold them exactly.

The data belong to one set of weights and are useless with any other: they carry the model id, and the
browser refuses a file written by other weights (as `codec.api.Decoder` does). Serve it beside the
weights, under the model id.

The shipped weights' export is 1.5 MB of JSON (0.86 MB gzipped; 0.49 M numerators as base64 int16); see
static/decoder/README.md for the measured sizes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from codec import exact, rans
from codec.coding import coding_tables
from codec.model import (
    HISTORY_MAGNITUDE_LIMIT,
    INITIAL_RECONSTRUCTION,
    LATENT_STRIDE,
    SCALE_LEVELS,
    SIDE_STRIDE,
    CodecConfig,
    ScalableCodec,
)
from codec.onnx_runtime import graph_bytes
from codec.postfilter import GROUP, PHASES
from codec.rans_tables import tables_json
from codec.symbol_tables import HISTORY_STATES
from codec.wavelet import LEVELS, synthesis_constants

FORMAT = "scalable-codec-entropy-path"
# 2: with the synthesis gains; 3: and the synthesis network's weights (synthesis-weights.bin); 4: and the
# post-filter's, when the model has one; 5: and the rows of fitted latent tables (`latent_rows`); 6: and the
# transform (`synthesis.transform`: the lapped one's bases are weights, the wavelet's are constants) and
# the history context's neighbours (`latent_rows.neighbours`)
VERSION = 6
# The synthesis network's parameters (`ScalableCodec.decoder`), in the order synthesis-weights.bin holds them:
# the refiner's, then the transform's (the lapped bases; the wavelet has none); the post-filter's
# (`ScalableCodec.post_filter`, named "post_filter.*") follow them.
SYNTHESIS_WEIGHTS = "synthesis-weights.bin"
REFINER_TENSORS = (
    "refiner.reduce.weight",
    "refiner.reduce.bias",
    "refiner.rnn.gates.weight",
    "refiner.rnn.gates.bias",
    "refiner.expand.weight",
    "refiner.expand.bias",
)
TRANSFORM_TENSORS = {"lapped": ("synthesis.weight",), "wavelet": ()}
# The hyper-decoder's exact convolutions, in the order its forward runs them.
CONVOLUTIONS = ("up32", "up16", "history", "gate", "candidate", "mix", "params")


def _numerators(values: Tensor, bits: int) -> np.ndarray:
    """`values` (multiples of 2**-bits) as their integer numerators; refuses anything off the grid."""
    scaled = values.detach().cpu().double() * float(2**bits)
    numerators = torch.round(scaled)
    if not torch.equal(numerators, scaled):
        raise ValueError(f"values off the 2**-{bits} grid")
    return numerators.to(torch.int64).numpy()


def _packed(values: Tensor, bits: int) -> dict:
    """A tensor on the 2**-bits grid as {shape, bits, dtype, base64}: little-endian int16 when every
    numerator fits, else int32, in the tensor's (C-contiguous) order."""
    numerators = _numerators(values, bits)
    dtype = "int16" if np.abs(numerators).max(initial=0) <= np.iinfo(np.int16).max else "int32"
    if np.abs(numerators).max(initial=0) > np.iinfo(np.int32).max:
        raise ValueError("a numerator does not fit in int32")
    data = np.ascontiguousarray(numerators, dtype="<i2" if dtype == "int16" else "<i4").tobytes()
    return {"shape": list(numerators.shape), "bits": bits, "dtype": dtype, "base64": base64.b64encode(data).decode()}


@torch.no_grad()
def export_entropy_path(model: ScalableCodec) -> dict:
    """What static/decoder/entropy.js needs to reproduce `entropy_parameters` in exact mode, then
    `quantized_scale_index`, for every layer, and to decode the side and latent strings: a
    JSON-serialisable dict (`json.dumps` it as it is). Models with a frequency context are refused."""
    config = model.config
    if config.context_channels:
        raise ValueError(
            f"the browser's decoder has no frequency context; this model has context_channels {config.context_channels}"
        )
    model_id = getattr(model, "model_id", None)
    if model_id is None:
        raise ValueError("the model has no model id: load it with codec.api.load_model or fresh_model")
    decoder = model.hyper_decoder
    convolutions = {}
    for name in CONVOLUTIONS:
        convolution: exact.ExactConv2d = getattr(decoder, name)
        weight, bias = convolution._exact_parameters()
        convolutions[name] = {
            "in_channels": convolution.in_channels,
            "out_channels": convolution.out_channels,
            "kernel_size": convolution.kernel_size[0],
            "padding": convolution.padding[0],
            "weight": _packed(weight, exact.WEIGHT_BITS),
            "bias": _packed(bias, exact.WEIGHT_BITS),
        }
    # snapped exactly as entropy_parameters and _history_scale snap them (in the parameters' dtype)
    offsets = exact.to_grid(model.scale_index_offset, exact.ACTIVATION_BITS, SCALE_LEVELS, True)
    history_weights = exact.to_grid(model.history_scale_weights, exact.WEIGHT_BITS, exact.WEIGHT_LIMIT, True)
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_id": model_id.hex(),
        "constants": {
            "weight_bits": exact.WEIGHT_BITS,
            "activation_bits": exact.ACTIVATION_BITS,
            "weight_limit": exact.WEIGHT_LIMIT,
            "activation_limit": exact.ACTIVATION_LIMIT,
            "max_terms": exact.MAX_TERMS,
            "scale_levels": SCALE_LEVELS,
            "history_magnitude_limit": HISTORY_MAGNITUDE_LIMIT,
            "latent_stride": LATENT_STRIDE,
            "side_stride": SIDE_STRIDE,
        },
        "config": {
            "layers": config.layers,
            "latent_channels": config.latent_channels,
            "luma_coefficients": config.luma_coefficients,
            "chroma_coefficients": config.chroma_coefficients,
            "hyper_channels": config.hyper_channels,
            "history_channels": config.history_channels,
            "side_channels": config.side_channels,
            "context_channels": config.context_channels,
        },
        "hyper_decoder": convolutions,
        # (layers, latent_channels) over 2**activation_bits
        "scale_index_offset": _numerators(offsets, exact.ACTIVATION_BITS).tolist(),
        # (layers, 3, latent_channels) over 2**weight_bits: previous symbol non-zero, its magnitude, significance
        "history_scale_weights": _numerators(history_weights, exact.WEIGHT_BITS).tolist(),
        # (layers, side_channels): float32 values, exact as JSON numbers
        "side_medians": [rans.side_medians(side).reshape(-1).float().tolist() for side in model.side_models],
        "rans": {
            "latent": tables_json(coding_tables(model)),
            "side": [tables_json(side) for side in model.side_models],
        },
        "latent_rows": _latent_rows(model),
        "synthesis": _synthesis(model),
    }


def _latent_rows(model: ScalableCodec) -> dict | None:
    """Which row of the latent table codes each latent, for fitted tables (codec/symbol_tables.py); None:
    the row of its scale."""
    if model.latent_tables is None:
        return None
    return {
        "bands": model.latent_bands.tolist(),  # (latent_channels,)
        "history_states": HISTORY_STATES,
        # (layers, bands * history_states, scale_levels), flattened: context = band * history_states + history
        "rows": model.latent_tables.rows.reshape(-1).tolist(),
        # whose symbols make a latent's history state 1 (`ScalableCodec.significant_neighbours`)
        "neighbours": _neighbours(model.config),
    }


def _neighbours(config: CodecConfig) -> dict:
    if config.transform == "wavelet":
        layout = {"luma": config.luma_coefficients, "chroma": config.chroma_coefficients, "levels": LEVELS}
        return {"kind": "wavelet band", **layout}
    return {"kind": "same channel"}


def _synthesis(model: ScalableCodec) -> dict:
    """The synthesis network's shapes (its weights are in `synthesis_weights`) and what
    `ScalableCodec.synthesise` multiplies around it, per layer, as the float32 values it computes (exact as
    JSON numbers), so that the browser's float32 arithmetic matches it."""
    return {
        "weights": SYNTHESIS_WEIGHTS,
        "tensors": [{"name": name, "shape": list(tensor.shape)} for name, tensor in _web_tensors(model)],
        "transform": model.config.transform,
        # the wavelet's constants (codec.wavelet); the lapped transform's bases are in the tensors
        "wavelet": synthesis_constants() if model.config.transform == "wavelet" else None,
        "rnn_channels": model.config.rnn_channels,
        "initial_reconstruction": INITIAL_RECONSTRUCTION,
        # (layers, latent_channels): the latents' inverse gain before the graph
        "latent_inverse_gain": model.log_latent_inverse_gain.detach().float().exp().tolist(),
        # (layers,): the increment's gain after it
        "increment_gain": model.log_increment_gain.detach().float().exp().tolist(),
        "post_filter": _post_filter(model),
    }


def _post_filter(model: ScalableCodec) -> dict | None:
    """The post-filter's shape (codec/postfilter.py), or None for a model that shows its reconstruction."""
    if model.post_filter is None:
        return None
    return {
        "channels": model.config.post_filter_channels,
        "depth": 1 + len(model.post_filter.body),
        "group": GROUP,
        "phases": PHASES,
    }


def _web_tensors(model: ScalableCodec) -> list[tuple[str, Tensor]]:
    """What synthesis-weights.bin holds, in its order: the synthesis network's tensors, then the post-filter's."""
    parameters = model.decoder.state_dict()
    names = REFINER_TENSORS + TRANSFORM_TENSORS[model.config.transform]
    tensors = [(name, parameters[name]) for name in names]
    if model.post_filter is not None:
        tensors += [(f"post_filter.{name}", tensor) for name, tensor in model.post_filter.state_dict().items()]
    return tensors


@torch.no_grad()
def synthesis_weights(model: ScalableCodec) -> bytes:
    """The synthesis network's float32 parameters, then the post-filter's, little-endian, one tensor after
    another in the order the export lists them (static/decoder/synthesis.js and postfilter.js run them)."""
    return b"".join(tensor.float().contiguous().numpy().astype("<f4").tobytes() for _, tensor in _web_tensors(model))


def write_web_decoder(model: ScalableCodec, directory: Path) -> Path:
    """The browser decoder's files for `model` under `directory`/<model id>/: `entropy-path.json` and
    `synthesis-weights.bin`, which the page reads, and the ONNX graphs of the analysis and synthesis
    networks (`analysis.onnx`, `synthesis.onnx`, for other runtimes). Returns that folder."""
    folder = directory / model.model_id.hex()
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(export_entropy_path(model), separators=(",", ":"))
    (folder / "entropy-path.json").write_text(text)
    (folder / SYNTHESIS_WEIGHTS).write_bytes(synthesis_weights(model))
    for name in ("analysis", "synthesis"):
        (folder / f"{name}.onnx").write_bytes(graph_bytes(model, name))
    return folder
