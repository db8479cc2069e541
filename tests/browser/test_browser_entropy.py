"""The browser's exact entropy path (static/decoder/exact.js, entropy.js) in headless Chromium against Python.

With the data `codec.web_export.export_entropy_path` writes for the shipped weights, the browser must
derive, for every layer of every tile, exactly the scale index (before and after rounding to a CDF row)
and the mean of every latent that `ScalableCodec.entropy_parameters` derives in exact mode, and decode
from a file, entirely in JavaScript, the very side and latent symbols the Python decoder decodes.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from compressai.entropy_models import EntropyBottleneck
from playwright.sync_api import Page
from torch.nn import functional as F

from bench import processes
from codec import container, exact, rans
from codec.api import Decoder, encode, fresh_model
from codec.coding import coding_tables, decode_layer
from codec.model import CodecConfig, ScalableCodec, padded_size, quantized_scale_index
from codec.symbol_tables import HISTORY_STATES
from codec.web_export import CONVOLUTIONS, export_entropy_path
from tests.harness import REPO
from tests.legacy_files import version_2_file

KODAK_PICTURE = REPO / "tests" / "data" / "kodim23-384x256.png"

HARNESS = """async () => {
  const container = await import("/decoder/container.js");
  const exact = await import("/decoder/exact.js");
  const entropy = await import("/decoder/entropy.js");
  const bytes = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const float64s = (text) => { const b = bytes(text); return new Float64Array(b.buffer, 0, b.length >> 3); };
  const base64 = (array) => {
    const b = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
    let text = "";
    for (let i = 0; i < b.length; i += 0x8000) text += String.fromCharCode(...b.subarray(i, i + 0x8000));
    return btoa(text);
  };
  const outcome = (run) => {
    try {
      return { value: run() };
    } catch (e) {
      return { error: e.name, message: e.message };
    }
  };
  window.harness = { container, exact, entropy, bytes, float64s, base64, outcome };
}"""

# Decodes every layer of `tiles` of `file` entirely in JavaScript, then again `repeats` times for the timings.
JS_DECODE_TILES = """({ exported, file, tiles, repeats }) => {
  const { entropy, bytes, base64 } = window.harness;
  const started = performance.now();
  const path = new entropy.EntropyPath(exported);
  const loadMs = performance.now() - started;
  const data = bytes(file);
  const decoded = tiles.map((tile) => {
    const result = path.decodeTileSymbols(data, tile);
    return {
      tile,
      width: result.width,
      height: result.height,
      layers: result.layers.map((r) => ({
        layer: r.layer,
        side: base64(r.sideSymbols),
        latent: base64(r.latentSymbols),
        indexes: base64(r.scaleIndexes),
        means: base64(r.means),
        scaleIndex: base64(r.scaleIndex),
        checksum: r.checksum,
        overran: r.overran,
      })),
    };
  });
  const timings = tiles.map((tile) => {
    const runs = [];
    for (let i = 0; i < repeats; i++) {
      runs.push(path.decodeTileSymbols(data, tile).layers.map((r) => [r.exactMs, r.ransMs]));
    }
    return runs;
  });
  return { decoded, timings, loadMs };
}"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def from_b64(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


def f64_b64(values: np.ndarray) -> str:
    return b64(np.ascontiguousarray(values, dtype="<f8").tobytes())


@dataclass
class PythonLayer:
    """What the Python decoder computed for one layer of one tile."""

    side_symbols: np.ndarray
    latent_symbols: np.ndarray
    scale_index: np.ndarray  # before rounding, float64
    indexes: np.ndarray  # the CDF rows the latent string was decoded with
    means: np.ndarray
    checksum: int


def python_layers(model: ScalableCodec, data: bytes, tile_index: int) -> list[PythonLayer]:
    """Decode every layer of one tile with `codec.coding.decode_layer` (a batch of one), capturing the
    exact entropy parameters it computed and the symbols rANS gave it."""
    header = container.parse_header(data)
    tile = header.tiles[tile_index]
    height, width = padded_size(tile.height, tile.width)
    state = model.initial_state(torch.zeros(1, 3, height, width))
    captured: dict[str, torch.Tensor] = {}
    parameters = model.entropy_parameters
    decode = rans.Stream.decode

    def recording_parameters(side_hat, state, exact_mode):
        scale_index, means = parameters(side_hat, state, exact_mode)
        captured["scale_index"], captured["means"] = scale_index.clone(), means.clone()
        captured["contexts"] = model.latent_contexts(state, scale_index)
        return scale_index, means

    def recording_decode(stream, indexes, table):
        symbols = decode(stream, indexes, table)
        which = "side" if isinstance(table, EntropyBottleneck) else "latent"
        captured[which], captured[f"{which}_indexes"] = symbols.clone(), indexes.clone()
        return symbols

    layers = []
    model.entropy_parameters = recording_parameters
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(rans.Stream, "decode", recording_decode)
            for layer in range(1, header.layer_count + 1):
                captured.clear()
                payload = container.tile_payload(header, data, layer, tile_index)
                (checksum,) = decode_layer(model, [payload], state, header.version)
                scale_rows = quantized_scale_index(captured["scale_index"])
                rows = model.coding_rows(layer - 1, captured["contexts"], scale_rows)
                assert torch.equal(captured["latent_indexes"], rows)
                layers.append(
                    PythonLayer(
                        side_symbols=captured["side"].reshape(-1).numpy(),
                        latent_symbols=captured["latent"].reshape(-1).numpy(),
                        scale_index=captured["scale_index"].reshape(-1).numpy(),
                        indexes=captured["latent_indexes"].reshape(-1).numpy(),
                        means=captured["means"].reshape(-1).numpy(),
                        checksum=checksum,
                    )
                )
    finally:
        del model.entropy_parameters
    return layers


@pytest.fixture
def js(page: Page, static_server: processes.Running) -> Page:
    """A tab on the static server's origin with the decoder modules imported."""
    page.goto(f"{static_server.url}/decoder/README.md")
    page.evaluate(HARNESS)
    return page


@pytest.fixture(scope="module")
def exported(shipped_model: ScalableCodec) -> dict:
    """The shipped model's export as the browser gets it: through JSON."""
    return json.loads(json.dumps(export_entropy_path(shipped_model)))


@pytest.fixture(scope="module")
def kodak_file(shipped_model: ScalableCodec) -> bytes:
    """kodim23's centre with the shipped weights: 2x2 tiles of 192 (the lower two 192x64: an edge tile of
    each kind), 6 layers."""
    return encode(KODAK_PICTURE, shipped_model, tile_size=192)


@pytest.fixture(scope="module")
def kodak_layers(shipped_model: ScalableCodec, kodak_file: bytes) -> dict[int, list[PythonLayer]]:
    """Every tile's layers as the Python decoder computes them."""
    header = container.parse_header(kodak_file)
    return {tile.index: python_layers(shipped_model, kodak_file, tile.index) for tile in header.tiles}


def decoded_in_js(page: Page, exported: dict, data: bytes, tiles: list[int], repeats: int = 0) -> dict:
    return page.evaluate(JS_DECODE_TILES, {"exported": exported, "file": b64(data), "tiles": tiles, "repeats": repeats})


def numerators(packed: dict) -> np.ndarray:
    dtype = "<i2" if packed["dtype"] == "int16" else "<i4"
    return from_b64(packed["base64"], dtype).reshape(packed["shape"])


# --- the export ----------------------------------------------------------------------------------


def test_the_export_holds_the_exact_parameters(
    shipped_model: ScalableCodec, exported: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exported["model_id"] == shipped_model.model_id.hex()
    assert exported["config"]["context_channels"] == 0
    total = 0
    for name in CONVOLUTIONS:
        convolution = getattr(shipped_model.hyper_decoder, name)
        weight, bias = convolution._exact_parameters()
        entry = exported["hyper_decoder"][name]
        for packed, values in ((entry["weight"], weight), (entry["bias"], bias)):
            assert packed["bits"] == exact.WEIGHT_BITS
            assert torch.equal(torch.from_numpy(numerators(packed).astype(np.float64)) / 2**exact.WEIGHT_BITS, values)
            total += values.numel()
    for layer in range(shipped_model.config.layers):
        offset = exact.to_grid(shipped_model.scale_index_offset[layer], exact.ACTIVATION_BITS, 64, True).double()
        assert torch.equal(torch.tensor(exported["scale_index_offset"][layer], dtype=torch.float64) / 1024, offset)
        weights = exact.to_grid(shipped_model.history_scale_weights[layer], exact.WEIGHT_BITS, 8.0, True).double()
        assert torch.equal(torch.tensor(exported["history_scale_weights"][layer], dtype=torch.float64) / 4096, weights)
        medians = rans.side_medians(shipped_model.side_models[layer]).reshape(-1)
        assert torch.equal(torch.tensor(exported["side_medians"][layer], dtype=torch.float32), medians)
        assert exported["rans"]["side"][layer]["cdfs"] == rans.tables(shipped_model.side_models[layer]).cdfs
    assert exported["rans"]["latent"]["cdfs"] == coding_tables(shipped_model).cdfs
    rows = exported["latent_rows"]
    assert rows["rows"] == shipped_model.latent_tables.rows.reshape(-1).tolist()
    assert rows["bands"] == shipped_model.latent_bands.tolist() and rows["history_states"] == HISTORY_STATES
    assert rows["neighbours"] == {"kind": "same channel"}
    text = json.dumps(exported, separators=(",", ":"))
    with capsys.disabled():
        print(
            f"\nentropy-path export of the shipped model: {total} convolution numerators, {len(text)} bytes of JSON "
            f"({len(zlib.compress(text.encode(), 9))} deflated), rANS tables "
            f"{len(json.dumps(exported['rans'], separators=(',', ':')))} bytes of it"
        )


def test_a_model_with_a_frequency_context_is_refused() -> None:
    model = fresh_model(CodecConfig(context_channels=8))
    with pytest.raises(ValueError, match="context_channels 8"):
        export_entropy_path(model)


# --- the primitives ------------------------------------------------------------------------------


def test_exact_js_primitives_compute_what_codec_exact_computes(js: Page) -> None:
    generator = np.random.default_rng(14)
    # values on fine grids with many exact ties of the coarser grid, and beyond the limits
    values = np.concatenate(
        [
            generator.integers(-(2**20), 2**20, 4000) / 2**12,
            np.arange(-40, 41) / 2 / 2**10,  # every tie between -20 and 20 steps
            np.arange(-9, 10) / 2,  # integer ties
            [-300.0, 300.0, 256.0, -256.0, 255.99951171875, -0.0, 0.0, 1e-300, 2**-11, -(2**-11), 3 * 2**-11],
            generator.normal(0, 50, 2000),
        ]
    )
    x = torch.from_numpy(values)
    got = js.evaluate(
        """(text) => {
          const { exact, float64s, base64 } = window.harness;
          const v = float64s(text);
          const map = (f) => base64(Float64Array.from(v, f));
          return {
            round: map(exact.roundHalfEven),
            activation: map(exact.activation),
            hardSigmoid: map(exact.hardSigmoid),
            weightGrid: map((a) => exact.toGrid(a, exact.WEIGHT_BITS, exact.WEIGHT_LIMIT)),
            relu: map(exact.relu),
            clamp: map((a) => exact.clamp(a, -1, 1)),
          };
        }""",
        f64_b64(values),
    )
    expected = {
        "round": torch.round(x),
        "activation": exact.activation(x, True),
        "hardSigmoid": exact.hard_sigmoid(x, True),
        "weightGrid": exact.to_grid(x, exact.WEIGHT_BITS, exact.WEIGHT_LIMIT, True),
        "relu": F.relu(x),
        "clamp": torch.clamp(x, -1.0, 1.0),
    }
    for name, want in expected.items():
        assert np.array_equal(from_b64(got[name], "<f8"), want.numpy()), name
    # torch.round halves to even, Math.round does not: the ties must have been exercised
    assert (torch.round(x * 1024) != torch.floor(x * 1024 + 0.5)).sum() > 20


@pytest.mark.parametrize(
    ("kernel", "channels_in", "channels_out", "height", "width", "zeros"),
    [(3, 40, 12, 7, 5, 0.0), (1, 64, 9, 4, 6, 0.0), (3, 24, 10, 5, 6, 0.8), (1, 48, 7, 3, 7, 0.9)],
)
def test_the_exact_convolution_and_pixel_shuffle_match_torch(
    js: Page, kernel: int, channels_in: int, channels_out: int, height: int, width: int, zeros: float
) -> None:
    torch.manual_seed(kernel)
    convolution = exact.ExactConv2d(channels_in, channels_out, kernel).double()
    with torch.no_grad():
        convolution.weight.normal_(0, 0.05)
        convolution.weight[:, 2:4, 0, 0] = 7.999  # terms of 2^11 (inputs at the limits below) that cancel
        convolution.bias.normal_(0, 2)
        convolution.weight[0, :3] = 0
    weight, bias = convolution._exact_parameters()
    x = exact.activation(torch.randn(1, channels_in, height, width, dtype=torch.float64) * 20, True)
    x[torch.rand(x.shape) < zeros] = 0.0  # mostly zeros, as after a ReLU
    x[0, 1] = 0.0
    x[0, 2] = 256.0  # inputs at the limits
    x[0, 3] = -256.0
    want = convolution(x, exact=True)
    sums = F.conv2d(x, weight, padding=kernel // 2)  # before the bias and the grid
    shuffled = F.pixel_shuffle(want[:, : channels_out // 4 * 4], 2)
    got = js.evaluate(
        """({ weight, bias, input, kernel, channelsIn, channelsOut, height, width }) => {
          const { exact, float64s, base64 } = window.harness;
          const convolution = new exact.ExactConvolution({
            inChannels: channelsIn, outChannels: channelsOut, kernelSize: kernel,
            weight: float64s(weight), bias: float64s(bias),
          });
          const x = float64s(input);
          const out = convolution.forward(x, height, width);
          const sums = convolution.sums(x, height, width);
          const quarter = channelsOut >> 2;
          const shuffled = exact.pixelShuffle2(out.slice(0, 4 * quarter * height * width), quarter, height, width);
          return { out: base64(out), sums: base64(sums), shuffled: base64(shuffled) };
        }""",
        {
            "weight": f64_b64(weight.numpy()),
            "bias": f64_b64(bias.numpy()),
            "input": f64_b64(x.numpy()),
            "kernel": kernel,
            "channelsIn": channels_in,
            "channelsOut": channels_out,
            "height": height,
            "width": width,
        },
    )
    assert np.array_equal(from_b64(got["out"], "<f8"), want.reshape(-1).numpy())
    # the SIMD product gives torch's sums, bit for bit, with the channels of zeros left out
    assert np.array_equal(from_b64(got["sums"], "<f8"), sums.reshape(-1).numpy())
    assert np.array_equal(from_b64(got["shuffled"], "<f8"), shuffled.reshape(-1).numpy())
    # large sums, most of them inside the limits (not clamped), so the comparison sees their low bits
    assert (sums.abs() > 50).any() and (want.abs() < 256).double().mean() > 0.5


# --- the entropy path and the symbols ------------------------------------------------------------


def test_the_browser_derives_pythons_entropy_parameters_and_symbols_in_every_layer(
    js: Page,
    shipped_model: ScalableCodec,
    exported: dict,
    kodak_file: bytes,
    kodak_layers: dict[int, list[PythonLayer]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    header = container.parse_header(kodak_file)
    assert [(t.width, t.height) for t in header.tiles] == [(192, 192), (192, 192), (192, 64), (192, 64)]
    tiles = [tile.index for tile in header.tiles]  # two full tiles, two edge tiles
    started = time.perf_counter()
    result = decoded_in_js(js, exported, kodak_file, tiles, repeats=5)
    assert time.perf_counter() - started < 300
    for decoded in result["decoded"]:
        tile = decoded["tile"]
        python = kodak_layers[tile]
        assert len(decoded["layers"]) == len(python) == header.layer_count == 6
        for got, want in zip(decoded["layers"], python, strict=True):
            where = (tile, got["layer"])
            assert np.array_equal(from_b64(got["side"], "<i4"), want.side_symbols), where
            assert np.array_equal(from_b64(got["scaleIndex"], "<f8"), want.scale_index), where
            assert np.array_equal(from_b64(got["indexes"], "<i4"), want.indexes), where
            assert np.array_equal(from_b64(got["means"], "<f8"), want.means), where
            assert np.array_equal(from_b64(got["latent"], "<i4"), want.latent_symbols), where
            assert got["checksum"] == want.checksum, where
            assert not got["overran"], where
    # the per-tile checksums are those of the product's decoder (batched, through Decoder)
    decoder = Decoder(kodak_file, shipped_model)
    decoder.decode()
    for layer in range(1, header.layer_count + 1):
        crcs = b"".join(d["layers"][layer - 1]["checksum"].to_bytes(4, "little") for d in result["decoded"])
        assert zlib.crc32(crcs) == decoder.symbol_checksum(layer)
    # the rows vary: a constant row everywhere would pass the comparison above too easily
    rows = np.concatenate([layer.indexes for layers in kodak_layers.values() for layer in layers])
    assert len(np.unique(rows)) > 20
    print_timings(result, header, capsys)


def test_the_browser_reads_version_2_files_to_the_same_symbols(
    js: Page, shipped_model: ScalableCodec, exported: dict, kodak_file: bytes
) -> None:
    """A file written before one string per tile and layer (container version 2) decodes in the browser
    to the symbols of the version-3 file of the same picture."""
    older = version_2_file(kodak_file, shipped_model)
    assert container.parse_header(older).version == 2
    decoder = Decoder(kodak_file, shipped_model)
    decoder.decode()
    result = decoded_in_js(js, exported, older, [tile.index for tile in container.parse_header(older).tiles])
    for layer in range(1, container.parse_header(older).layer_count + 1):
        crcs = b"".join(d["layers"][layer - 1]["checksum"].to_bytes(4, "little") for d in result["decoded"])
        assert zlib.crc32(crcs) == decoder.symbol_checksum(layer)
        assert not any(d["layers"][layer - 1]["overran"] for d in result["decoded"])


def print_timings(result: dict, header: container.ContainerHeader, capsys: pytest.CaptureFixture[str]) -> None:
    """The warm runs' median per layer and tile, and the full tiles' extrapolated to 768x512."""
    lines = [f"\nentropy.js in Chromium (export read in {result['loadMs']:.0f} ms), median of the warm runs, ms:"]
    by_size: dict[tuple[int, int], list] = {}
    for tile, runs in zip(header.tiles, result["timings"], strict=True):
        median = np.median(np.asarray(runs), axis=0)  # (layers, 2): exact path, rANS
        lines.append(
            f"  tile {tile.index} ({tile.width}x{tile.height}) per layer: exact path "
            + " ".join(f"{v:5.1f}" for v in median[:, 0])
            + "; rANS "
            + " ".join(f"{v:4.1f}" for v in median[:, 1])
        )
        by_size.setdefault(padded_size(tile.height, tile.width), []).extend(runs)
    full = np.median(np.asarray(by_size[(192, 192)]), axis=0)
    kodak = full * (768 * 512) / (192 * 192)  # the latent positions of a Kodak picture, in 192x192 tiles' worth
    lines.append(
        "  768x512 per layer (the 192x192 tiles' median times 10.67): exact path "
        + " ".join(f"{v:.0f}" for v in kodak[:, 0])
        + "; rANS "
        + " ".join(f"{v:.0f}" for v in kodak[:, 1])
    )
    with capsys.disabled():
        print("\n".join(lines))


def test_one_altered_weight_changes_the_rows(
    js: Page,
    exported: dict,
    kodak_file: bytes,
    kodak_layers: dict[int, list[PythonLayer]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A negative control: one numerator of one weight +1 (2^-12) must show in the CDF rows."""
    altered = json.loads(json.dumps(exported))
    packed = altered["hyper_decoder"]["up16"]["bias"]
    values = numerators(packed).copy()
    values[0] += 1
    packed["base64"] = b64(values.astype("<i2" if packed["dtype"] == "int16" else "<i4").tobytes())
    result = decoded_in_js(js, altered, kodak_file, [0])
    rows, scales = [], []
    for got, want in zip(result["decoded"][0]["layers"], kodak_layers[0], strict=True):
        rows.append(int((from_b64(got["indexes"], "<i4") != want.indexes).sum()))
        scales.append(int((from_b64(got["scaleIndex"], "<f8") != want.scale_index).sum()))
    assert sum(scales) > 0
    assert sum(rows) > 0, f"{scales} scale indexes changed per layer, no CDF row"
    with capsys.disabled():
        print(f"\nup16's bias 0 + 2^-12: scale indexes changed per layer {scales}, CDF rows {rows}")


def test_the_browser_refuses_other_models_and_a_frequency_context(js: Page, exported: dict, kodak_file: bytes) -> None:
    context = {**exported, "config": {**exported["config"], "context_channels": 8}}
    other = {**exported, "model_id": "00" * 16}
    got = js.evaluate(
        """({ context, other, file }) => {
          const { entropy, bytes, outcome } = window.harness;
          return [
            outcome(() => new entropy.EntropyPath(context)),
            outcome(() => new entropy.EntropyPath(other).decodeTileSymbols(bytes(file), 0)),
            outcome(() => new entropy.EntropyPath({ ...other, version: 1 })),  // an export older than this decoder
          ];
        }""",
        {"context": context, "other": other, "file": b64(kodak_file)},
    )
    assert got[0] == {
        "error": "EntropyPathError",
        "message": "this model has a frequency context (context_channels 8); the browser decoder has none",
    }
    model = container.parse_header(kodak_file).model_id.hex()
    assert got[1] == {
        "error": "ModelMismatchError",
        "message": f"file needs model {model}, loaded model is {'00' * 16}",
    }
    assert got[2]["error"] == "EntropyPathError"
