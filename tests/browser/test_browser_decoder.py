"""The browser's decoder modules (static/decoder) in headless Chromium against the Python codec.

container.js must read every file, prefix and damaged file as codec/container.py does (same fields,
same errors, same messages), and rans.js must parse the very symbols CompressAI's C++ decoder parses,
given the indexes the Python decoder computed.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from compressai.ans import RansDecoder, RansEncoder
from playwright.sync_api import Page

from bench import processes
from codec import container, rans
from codec.api import Decoder, encode
from codec.coding import coding_tables
from codec.errors import CodecError
from codec.model import ScalableCodec
from codec.rans_tables import RansTablesJson, tables_json
from tests.harness import REPO, make_image

KODAK_PICTURE = REPO / "tests" / "data" / "kodim23-384x256.png"

# Imports both modules once per page and leaves small helpers in `window.harness`: the test process
# sends bytes and int32 arrays as base64, and gets them back the same way.
HARNESS = """async () => {
  const container = await import("/decoder/container.js");
  const rans = await import("/decoder/rans.js");
  const bytes = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const int32s = (text) => { const b = bytes(text); return new Int32Array(b.buffer, 0, b.length >> 2); };
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
      return { error: e.name, message: e.message, codec: e instanceof container.CodecError };
    }
  };
  window.harness = { container, rans, bytes, int32s, base64, outcome };
}"""

# What container.js makes of a file: the header, and every tile of every layer (table or payload).
JS_OUTCOMES = """(text) => {
  const { container, bytes, outcome } = window.harness;
  const data = bytes(text);
  const header = outcome(() => container.parseHeader(data));
  if (!header.value) return { header };
  const h = header.value;
  const fields = {
    version: h.version, flags: h.flags, headerSize: h.headerSize, modelId: h.modelId, width: h.width,
    height: h.height, layerCount: h.layerCount, tileSize: h.tileSize, tiles: h.tiles.length,
    layers: h.layers, layersWithin: h.layersWithin(data.length),
  };
  const layers = h.layers.map((entry) => {
    const table = outcome(() => container.tileTable(h, data, entry.index));
    const tiles = h.tiles.map(({ index }) => outcome(() => {
      const payload = container.tilePayload(h, data, entry.index, index);
      return { offset: payload.byteOffset - data.byteOffset, size: payload.length, crc32: container.crc32(payload) };
    }));
    return { table, tiles };
  });
  return { header: { value: fields }, layers };
}"""

# Decodes the side then the latent symbols of every tile payload of a file, each payload one rANS stream
# (container.js and rans.js), then times the rANS decoding alone, repeated for at least `seconds`.
JS_DECODE = """({ file, tables, jobs, seconds }) => {
  const { container, rans, bytes, int32s, base64 } = window.harness;
  const data = bytes(file);
  const header = container.parseHeader(data);
  const compiled = Object.fromEntries(Object.entries(tables).map(([key, json]) => [key, new rans.RansTables(json)]));
  const work = jobs.map((job) => ({
    payload: container.tilePayload(header, data, job.layer, job.tile),
    parts: [
      { indexes: int32s(job.sideIndexes), tables: compiled[job.sideTables] },
      { indexes: int32s(job.latentIndexes), tables: compiled[job.latentTables] },
    ],
  }));
  const decodeAll = ({ payload, parts }) => {
    const decoder = new rans.RansDecoder();
    decoder.setStream(payload);
    return parts.map((part) => decoder.decodeStream(part.indexes, part.tables));
  };
  const symbols = work.map((job) => decodeAll(job).map(base64));
  let decoded = 0;
  let rounds = 0;
  const started = performance.now();
  while (performance.now() - started < seconds * 1000 || rounds < 2) {
    for (const job of work) for (const part of decodeAll(job)) decoded += part.length;
    rounds++;
  }
  return { symbols, decoded, rounds, seconds: (performance.now() - started) / 1000 };
}"""

# CompressAI's set_stream + decode_stream: one stream, read in pieces.
JS_STREAM = """({ string, tables, pieces }) => {
  const { rans, bytes, int32s, base64 } = window.harness;
  const decoder = new rans.RansDecoder();
  decoder.setStream(bytes(string));
  const compiled = new rans.RansTables(tables);
  const out = pieces.map((piece) => base64(decoder.decodeStream(int32s(piece), compiled)));
  return { out, overran: decoder.overran };
}"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def int32_b64(values: np.ndarray) -> str:
    return b64(np.ascontiguousarray(values, dtype="<i4").tobytes())


def from_int32_b64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<i4")


@pytest.fixture
def js(page: Page, static_server: processes.Running) -> Page:
    """A tab on the static server's origin with both decoder modules imported."""
    page.goto(f"{static_server.url}/decoder/README.md")
    page.evaluate(HARNESS)
    return page


@pytest.fixture(scope="module")
def kodak_file(shipped_model: ScalableCodec) -> bytes:
    """kodim23's centre with the shipped weights: 2x2 tiles of 192, 6 layers."""
    return encode(KODAK_PICTURE, shipped_model)


@pytest.fixture(scope="module")
def small_file(codec_model: ScalableCodec) -> bytes:
    """Noise through the untrained test model in 64-pixel tiles: 3x2 tiles, some narrower, and wide symbols."""
    return encode(make_image(160, 100, noise=True), codec_model, tile_size=64)


@pytest.fixture(params=["small", "kodak"])
def any_file(request: pytest.FixtureRequest) -> bytes:
    return request.getfixturevalue(f"{request.param}_file")


def version_1_file(layers: list[bytes], width: int = 40, height: int = 30) -> bytes:
    """A version-1 container (one tile, no tile table, the CRC over each layer): docs/format.md."""
    size = container.header_size(len(layers), version=1)
    head = struct.pack("<4sBBH16sIIB", b"SRIC", 1, 0, size, bytes(range(16)), width, height, len(layers))
    offset = size
    for layer in layers:
        head += struct.pack("<III", offset, len(layer), zlib.crc32(layer))
        offset += len(layer)
    head += struct.pack("<I", zlib.crc32(head))
    return head + b"".join(layers)


def error_outcome(error: CodecError) -> dict:
    return {"error": type(error).__name__, "message": str(error), "codec": True}


def outcome(run: Callable[[], object]) -> dict:
    try:
        return {"value": run()}
    except CodecError as error:
        return error_outcome(error)


def python_outcomes(data: bytes) -> dict:
    """What codec/container.py makes of `data`, in the shape JS_OUTCOMES returns (offsets from the payload)."""
    try:
        header = container.parse_header(data)
    except CodecError as error:
        return {"header": error_outcome(error)}
    layers = []
    for entry in header.layers:
        table = outcome(lambda entry=entry: python_tile_table(header, data, entry.index))
        tiles = []
        for tile in header.tiles:
            read = outcome(lambda entry=entry, tile=tile: container.tile_payload(header, data, entry.index, tile.index))
            if "value" in read:
                payload = read["value"]
                where = table["value"][tile.index]["offset"]
                assert data[where : where + len(payload)] == payload
                read = {"value": {"offset": where, "size": len(payload), "crc32": zlib.crc32(payload)}}
            tiles.append(read)
        layers.append({"table": table, "tiles": tiles})
    fields = header.to_dict()
    value = {
        "version": header.version,
        "flags": 0,
        "headerSize": header.header_bytes,
        "modelId": fields["model"],
        "width": header.width,
        "height": header.height,
        "layerCount": header.layer_count,
        "tileSize": header.tile_size,
        "tiles": fields["tiles"],
        "layers": fields["layers"],
        "layersWithin": header.layers_within(len(data)),
    }
    return {"header": {"value": value}, "layers": layers}


def python_tile_table(header: container.ContainerHeader, data: bytes, index: int) -> list[dict]:
    """Each tile's absolute offset, size and CRC from the layer's tile table, through the Python checks."""
    entry = header.layers[index - 1]
    if header.version < 2:  # no tile table: the layer is tile 0's payload
        return [{"tile": 0, "offset": entry.offset, "size": entry.size, "crc32": entry.crc32}]
    table = container._layer_bytes(header, data, index, header.tile_table_bytes)
    offset = entry.offset + header.tile_table_bytes
    tiles = []
    for tile, (size, crc) in enumerate(container._tile_entries(header, index, table)):
        tiles.append({"tile": tile, "offset": offset, "size": size, "crc32": crc})
        offset += size
    return tiles


def js_outcomes(page: Page, data: bytes) -> dict:
    return page.evaluate(JS_OUTCOMES, b64(data))


def assert_same_reading(page: Page, data: bytes) -> dict:
    """container.js reads `data` exactly as codec/container.py does (values, error classes, messages)."""
    expected = python_outcomes(data)
    got = js_outcomes(page, data)
    assert got == expected
    return got


# --- the container -----------------------------------------------------------------------------


def test_the_header_and_every_tile_read_as_in_python(js: Page, any_file: bytes) -> None:
    got = assert_same_reading(js, any_file)
    header = container.parse_header(any_file)
    assert got["header"]["value"]["layerCount"] == header.layer_count >= 3
    assert got["header"]["value"]["layersWithin"] == header.layer_count
    assert all("value" in tile for layer in got["layers"] for tile in layer["tiles"])


def test_every_prefix_at_a_layer_end_holds_its_layers(js: Page, any_file: bytes) -> None:
    header = container.parse_header(any_file)
    for n in range(header.layer_count + 1):
        end = header.end_of_layer(n)
        got = assert_same_reading(js, any_file[:end])
        assert got["header"]["value"]["layersWithin"] == n
        for layer in got["layers"][n:]:  # absent layers are truncated, never misread
            assert {tile["error"] for tile in layer["tiles"]} == {"TruncatedLayerError"}
        if end > header.header_bytes:
            cut = assert_same_reading(js, any_file[: end - 1])
            assert cut["header"]["value"]["layersWithin"] == n - 1


def test_a_flipped_byte_in_layer_3_fails_that_tile_only(js: Page, any_file: bytes) -> None:
    header = container.parse_header(any_file)
    tables = [python_tile_table(header, any_file, i) for i in range(1, header.layer_count + 1)]
    damaged_tile = tables[2][-1]
    damaged = bytearray(any_file)
    damaged[damaged_tile["offset"] + damaged_tile["size"] // 2] ^= 0x10
    got = assert_same_reading(js, bytes(damaged))
    for index, layer in enumerate(got["layers"], start=1):
        for tile, result in enumerate(layer["tiles"]):
            if (index, tile) == (3, damaged_tile["tile"]):
                assert result == {
                    "error": "ChecksumError",
                    "message": f"tile {tile} of layer 3 fails its CRC32 check",
                    "codec": True,
                }
            else:
                assert "value" in result, (index, tile, result)
    # the tile table of layer 3 is checked before any of its tiles
    damaged = bytearray(any_file)
    damaged[header.layers[2].offset] ^= 0x01
    got = assert_same_reading(js, bytes(damaged))
    assert got["layers"][2]["table"]["message"] == "layer 3's tile table fails its CRC32 check"
    assert all("value" in layer["table"] for layer in got["layers"][:2])


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda data: data[:20], "TruncatedHeaderError"),
        (lambda data: data[:40], "TruncatedHeaderError"),
        (lambda data: data[: container.parse_header(data).header_bytes - 1], "TruncatedHeaderError"),
        (lambda data: b"SRIX" + data[4:], "BadMagicError"),
        (lambda data: b"PK\x03\x04" + data[4:], "BadMagicError"),
        (lambda data: b"SR", "TruncatedHeaderError"),  # a prefix of the magic is not wrong yet, only short
        (lambda data: data[:4] + b"\x04" + data[5:], "UnsupportedVersionError"),
        (lambda data: data[:24] + struct.pack("<I", 385) + data[28:], "CorruptHeaderError"),  # header CRC
        (lambda data: data[:6] + struct.pack("<H", 200) + data[8:], "CorruptHeaderError"),  # size and layer count
    ],
    ids=[
        "20-bytes",
        "40-bytes",
        "header-less-1",
        "bad-magic",
        "zip-magic",
        "magic-prefix",
        "version-4",
        "header-crc",
        "header-size",
    ],
)
def test_a_broken_header_fails_with_pythons_error(
    js: Page, kodak_file: bytes, damage: Callable[[bytes], bytes], error: str
) -> None:
    data = damage(kodak_file)
    got = assert_same_reading(js, data)  # the same class and the same message
    assert got["header"]["error"] == error, got


def test_header_checks_behind_a_valid_crc_fail_as_in_python(js: Page, kodak_file: bytes) -> None:
    header = container.parse_header(kodak_file)
    size = header.header_bytes

    def resealed(data: bytearray) -> bytes:
        data[size - 4 : size] = struct.pack("<I", zlib.crc32(bytes(data[: size - 4])))
        return bytes(data)

    for at, value, message in [
        (5, b"\x01", "unknown header flags 0x1"),
        (24, struct.pack("<I", 0), "image size 0x256 out of range"),
        (33, struct.pack("<I", 100), "tile size 100 is not a positive multiple of 64"),
        (37, struct.pack("<I", size + 1), f"layer 1 starts at {size + 1}, expected {size}"),
        (41, struct.pack("<I", 8), "layer 1 is shorter than its tile table"),
    ]:
        data = bytearray(kodak_file)
        data[at : at + len(value)] = value
        got = assert_same_reading(js, resealed(data))
        assert got["header"] == {"error": "CorruptHeaderError", "message": message, "codec": True}


def test_a_version_1_file_reads_as_in_python(js: Page) -> None:
    layers = [bytes(range(i, i + 30 + 7 * i)) for i in range(4)]
    data = version_1_file(layers)
    got = assert_same_reading(js, data)
    assert got["header"]["value"]["version"] == 1
    assert got["header"]["value"]["tileSize"] == 0
    assert [layer["tiles"][0]["value"]["size"] for layer in got["layers"]] == [len(layer) for layer in layers]
    damaged = bytearray(data)
    damaged[-1] ^= 0xFF
    got = assert_same_reading(js, bytes(damaged))
    assert got["layers"][3]["tiles"][0] == {
        "error": "ChecksumError",
        "message": "layer 4 fails its CRC32 check",
        "codec": True,
    }
    for n in range(5):
        end = container.parse_header(data).end_of_layer(n)
        assert assert_same_reading(js, data[:end])["header"]["value"]["layersWithin"] == n


# --- rANS ----------------------------------------------------------------------------------------


@dataclass
class RansCall:
    """One call the Python decoder made to `codec.rans.Stream.decode`, with what it returned."""

    string: bytes
    indexes: np.ndarray
    symbols: np.ndarray
    entropy_model: rans.CdfTables | rans.HasCdfTable  # the table (or entropy model) it read with


def recorded_decode(data: bytes, model: ScalableCodec) -> list[RansCall]:
    """Decode every layer of `data` in Python, recording each rANS read, in whatever order it makes them."""
    calls: list[RansCall] = []
    original = rans.Stream.decode

    def recording(
        stream: rans.Stream, indexes: torch.Tensor, entropy_model: rans.CdfTables | rans.HasCdfTable
    ) -> torch.Tensor:
        symbols = original(stream, indexes, entropy_model)
        flat = indexes.reshape(-1).int().numpy().copy()
        calls.append(RansCall(bytes(stream.string), flat, symbols.reshape(-1).numpy().copy(), entropy_model))
        return symbols

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rans.Stream, "decode", recording)
        Decoder(data, model).decode()
    return calls


def the_call(calls: list[RansCall], string: bytes, entropy_model: rans.CdfTables | rans.HasCdfTable) -> RansCall:
    """The decoder's read of `string` with `entropy_model`, whatever order (or batch) it made its calls in."""
    found = [call for call in calls if call.string == string and call.entropy_model is entropy_model]
    assert len(found) == 1, "the Python decoder should read this part of the stream once"
    return found[0]


def bypassed(call: RansCall, tables: RansTablesJson) -> int:
    """How many of the call's symbols lie outside their CDF row: coded as the escape and bypass bits."""
    values = call.symbols - np.asarray(tables["offsets"])[call.indexes]
    return int(((values < 0) | (values >= np.asarray(tables["lengths"])[call.indexes] - 2)).sum())


def test_rans_tables_are_json_and_the_coders_arguments(shipped_model: ScalableCodec) -> None:
    for model in (coding_tables(shipped_model), *shipped_model.side_models):
        written = json.loads(json.dumps(tables_json(model)))
        table = rans.as_tables(model)
        assert written == {"precision": 16, "cdfs": table.cdfs, "lengths": table.lengths, "offsets": table.offsets}
        assert [len(row) for row in written["cdfs"]] == written["lengths"]


@pytest.mark.parametrize("which", ["kodak", "small"])
def test_rans_decodes_every_payload_of_a_file_as_compressai(
    js: Page, request: pytest.FixtureRequest, which: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data: bytes = request.getfixturevalue(f"{which}_file")
    model: ScalableCodec = request.getfixturevalue("shipped_model" if which == "kodak" else "codec_model")
    calls = recorded_decode(data, model)
    header = container.parse_header(data)
    tables: dict[str, RansTablesJson] = {}
    keys: dict[int, str] = {}
    for call in calls:
        if id(call.entropy_model) not in keys:
            keys[id(call.entropy_model)] = key = f"model{len(keys)}"
            tables[key] = tables_json(call.entropy_model)
    jobs, expected = [], []
    for tile in header.tiles:
        for layer in range(1, header.layer_count + 1):
            payload = container.tile_payload(header, data, layer, tile.index)
            side = the_call(calls, payload, model.side_models[layer - 1])
            latent = the_call(calls, payload, coding_tables(model))
            jobs.append(
                {
                    "layer": layer,
                    "tile": tile.index,
                    "sideIndexes": int32_b64(side.indexes),
                    "sideTables": keys[id(side.entropy_model)],
                    "latentIndexes": int32_b64(latent.indexes),
                    "latentTables": keys[id(latent.entropy_model)],
                }
            )
            expected.append((side, latent))
    assert len(calls) == 2 * len(jobs)
    started = time.perf_counter()
    result = js.evaluate(JS_DECODE, {"file": b64(data), "tables": tables, "jobs": jobs, "seconds": 2.0})
    assert time.perf_counter() - started < 120
    for (side, latent), (side_js, latent_js), job in zip(expected, result["symbols"], jobs, strict=True):
        assert np.array_equal(from_int32_b64(side_js), side.symbols), (which, job["layer"], job["tile"], "side")
        assert np.array_equal(from_int32_b64(latent_js), latent.symbols), (which, job["layer"], job["tile"], "latent")
    symbols = sum(call.symbols.size for call in calls)
    escapes = sum(bypassed(call, tables[keys[id(call.entropy_model)]]) for call in calls)
    if which == "small":
        assert escapes > 0, "the untrained model's noise should reach the bypass path"
    rate = result["decoded"] / result["seconds"]
    with capsys.disabled():
        print(
            f"\nrans.js on {which} ({len(jobs)} tile payloads, {symbols} symbols, {escapes} bypassed): "
            f"{rate / 1e6:.2f} M symbols/s over {result['rounds']} rounds in Chromium"
        )


def test_rans_bypass_values_round_trip_through_compressai(js: Page, shipped_model: ScalableCodec) -> None:
    """Symbols far outside their rows, and at both ends of them, from CompressAI's own encoder."""
    tables = tables_json(coding_tables(shipped_model))
    rows = len(tables["lengths"])
    generator = np.random.default_rng(14)
    count = 20_000
    indexes = generator.integers(0, rows, count).astype(np.int32)
    offsets = np.asarray(tables["offsets"])[indexes]
    max_values = np.asarray(tables["lengths"])[indexes] - 2
    symbols = generator.integers(-3, 4, count) + offsets + max_values // 2  # mostly inside the rows
    wide = generator.random(count) < 0.2
    # below 2^26: CompressAI's encoder never ends on a bypassed value of 2^28 or more (it shifts a u32 by 32)
    magnitudes = 2 ** generator.integers(0, 26, count) + generator.integers(0, 1000, count)
    signs = np.where(generator.random(count) < 0.5, -1, 1)
    symbols = np.where(wide, signs * magnitudes, symbols)
    symbols[:8] = offsets[:8] + np.array([-1, 0, max_values[2] - 1, max_values[3], max_values[4] + 1, -16, 15, 16])
    symbols = symbols.astype(np.int32)
    string = RansEncoder().encode_with_indexes(
        symbols.tolist(), indexes.tolist(), tables["cdfs"], tables["lengths"], tables["offsets"]
    )
    python = RansDecoder().decode_with_indexes(
        string, indexes.tolist(), tables["cdfs"], tables["lengths"], tables["offsets"]
    )
    assert python == symbols.tolist()
    values = symbols - offsets
    assert ((values < 0) | (values >= max_values)).sum() > 0.15 * count
    got = js.evaluate(JS_STREAM, {"string": b64(string), "tables": tables, "pieces": [int32_b64(indexes)]})
    assert np.array_equal(from_int32_b64(got["out"][0]), symbols)
    assert not got["overran"]


def test_decode_stream_continues_one_stream_across_calls(js: Page, shipped_model: ScalableCodec) -> None:
    """set_stream then decode_stream in pieces, as the two passes of a frequency context read one string."""
    tables = tables_json(coding_tables(shipped_model))
    generator = np.random.default_rng(23)
    indexes = generator.integers(0, len(tables["lengths"]), 5000).astype(np.int32)
    symbols = generator.normal(0, 6, 5000).round().astype(np.int32)
    string = RansEncoder().encode_with_indexes(
        symbols.tolist(), indexes.tolist(), tables["cdfs"], tables["lengths"], tables["offsets"]
    )
    cuts = [0, 1, 1000, 1001, 3333, 5000]
    stream = RansDecoder()
    stream.set_stream(string)
    python = [
        stream.decode_stream(indexes[a:b].tolist(), tables["cdfs"], tables["lengths"], tables["offsets"])
        for a, b in zip(cuts, cuts[1:])
    ]
    pieces = [int32_b64(indexes[a:b]) for a, b in zip(cuts, cuts[1:])]
    got = js.evaluate(JS_STREAM, {"string": b64(string), "tables": tables, "pieces": pieces})
    assert [from_int32_b64(piece).tolist() for piece in got["out"]] == python
    assert np.concatenate([from_int32_b64(piece) for piece in got["out"]]).tolist() == symbols.tolist()
    assert not got["overran"]


def test_rans_refuses_bad_tables_and_indexes(js: Page, shipped_model: ScalableCodec) -> None:
    tables = tables_json(shipped_model.side_models[0])
    refusals = js.evaluate(
        """(tables) => {
          const { rans, outcome } = window.harness;
          const good = new rans.RansTables(tables);
          const row = tables.cdfs[0];
          return [
            outcome(() => rans.decodeWithIndexes(new Uint8Array(8), Int32Array.of(0, tables.lengths.length), good)),
            outcome(() => new rans.RansTables({ ...tables, lengths: tables.lengths.slice(1) })),
            outcome(() => new rans.RansTables({ ...tables, cdfs: [[0, ...row.slice(2)], ...tables.cdfs.slice(1)] })),
            outcome(() => new rans.RansTables({ ...tables, precision: 15 })),
          ].map((result) => result.message);
        }""",
        tables,
    )
    assert refusals == [
        f"index {len(tables['lengths'])} at 1 outside the {len(tables['lengths'])} cdf rows",
        "24 cdf rows, 23 lengths and 24 offsets",
        f"cdf row 0 has length {tables['lengths'][0]} of {tables['lengths'][0] - 1}",
        "tables of precision 15; the coder uses 16",
    ]
