"""The container format: layout, tiles, prefix property, version 1 and every parse error."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec import container
from codec.errors import (
    BadMagicError,
    ChecksumError,
    CodecError,
    CorruptHeaderError,
    TruncatedHeaderError,
    TruncatedLayerError,
    UnsupportedVersionError,
)

MODEL_ID = bytes(range(16))
WIDTH, HEIGHT, TILE = 150, 70, 64  # a 3 x 2 grid whose last column and row are narrower
TILES = container.tile_grid(WIDTH, HEIGHT, TILE)
LAYERS = [[f"layer {k} tile {t}".encode() * (t + 1) for t in range(len(TILES))] for k in range(1, 5)]
LAYERS[2] = [b""] * len(TILES)  # an empty layer is valid


def build() -> bytes:
    return container.serialize(MODEL_ID, WIDTH, HEIGHT, TILE, LAYERS)


def every_payload(data: bytes) -> list[list[bytes]]:
    header = container.parse_header(data)
    return [
        [container.tile_payload(header, data, index, tile.index) for tile in header.tiles]
        for index in range(1, header.layers_within(len(data)) + 1)
    ]


def test_tile_grid_covers_the_picture_once() -> None:
    assert [(t.x, t.y, t.width, t.height) for t in TILES] == [
        (0, 0, 64, 64), (64, 0, 64, 64), (128, 0, 22, 64),
        (0, 64, 64, 6), (64, 64, 64, 6), (128, 64, 22, 6),
    ]  # fmt: skip
    assert sum(t.width * t.height for t in TILES) == WIDTH * HEIGHT
    assert [t.index for t in TILES if t.touches(60, 60, 10, 10)] == [0, 1, 3, 4]
    assert [t.index for t in TILES if t.touches(128, 0, 1, 1)] == [2]


def test_header_fields_and_layer_table() -> None:
    data = build()
    header = container.parse_header(data)
    assert (header.width, header.height, header.model_id) == (WIDTH, HEIGHT, MODEL_ID)
    assert (header.version, header.tile_size, len(header.tiles)) == (container.FORMAT_VERSION, TILE, 6)
    assert header.layer_count == len(LAYERS)
    assert header.header_bytes == container.header_size(len(LAYERS))
    offset = header.header_bytes
    for index, (entry, tiles) in enumerate(zip(header.layers, LAYERS), start=1):
        table = b"".join(struct.pack("<II", len(p), zlib.crc32(p)) for p in tiles)
        assert entry.index == index
        assert (entry.offset, entry.size, entry.crc32) == (offset, len(table) + sum(map(len, tiles)), zlib.crc32(table))
        assert data[entry.offset : entry.end] == table + b"".join(tiles)
        offset = entry.end
    assert header.total_bytes == len(data)


def test_every_tile_of_every_layer_reads_alone() -> None:
    assert every_payload(build()) == LAYERS


def test_every_prefix_at_a_layer_boundary_is_a_valid_file() -> None:
    data = build()
    header = container.parse_header(data)
    for n in range(len(LAYERS) + 1):
        prefix = data[: header.end_of_layer(n)]
        assert container.parse_header(prefix) == header
        assert header.layers_within(len(prefix)) == n
        assert every_payload(prefix) == LAYERS[:n]


def test_required_header_bytes_from_the_fixed_part() -> None:
    data = build()
    assert container.required_header_bytes(data[: container.FIXED_HEADER_BYTES]) == container.header_size(4)


def version_1_file(width: int, height: int, payloads: list[bytes]) -> bytes:
    """A version-1 file packed from docs/format.md alone, independently of `container.serialize`."""
    size = 37 + 12 * len(payloads)
    head = b"SRIC" + struct.pack("<BBH", 1, 0, size) + MODEL_ID + struct.pack("<IIB", width, height, len(payloads))
    offset = size
    for payload in payloads:
        head += struct.pack("<III", offset, len(payload), zlib.crc32(payload))
        offset += len(payload)
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(payloads)


def test_version_1_files_still_read_as_one_tile() -> None:
    payloads = [b"first layer", b"the second one is longer", b"", b"\x00\xff" * 40]
    data = version_1_file(33, 17, payloads)
    header = container.parse_header(data)
    assert (header.version, header.tile_size, header.header_bytes) == (1, 0, 37 + 12 * 4)
    assert [(t.x, t.y, t.width, t.height) for t in header.tiles] == [(0, 0, 33, 17)]
    assert every_payload(data) == [[p] for p in payloads]
    corrupted = bytearray(data)
    corrupted[header.layers[1].offset] ^= 1
    with pytest.raises(ChecksumError):
        container.tile_payload(header, bytes(corrupted), 2, 0)


def test_bad_magic() -> None:
    with pytest.raises(BadMagicError):
        container.parse_header(b"GIF89a" + build()[6:])


def test_unknown_version() -> None:
    data = bytearray(build())
    data[4] = 99
    with pytest.raises(UnsupportedVersionError):
        container.parse_header(bytes(data))


@pytest.mark.parametrize("cut", [0, 3, 10, container.FIXED_HEADER_BYTES, container.header_size(4) - 1])
def test_truncated_header(cut: int) -> None:
    with pytest.raises(TruncatedHeaderError):
        container.parse_header(build()[:cut])


def test_truncated_layer() -> None:
    data = build()
    header = container.parse_header(data)
    with pytest.raises(TruncatedLayerError):
        container.tile_payload(header, data[: header.end_of_layer(2) - 1], 2, len(TILES) - 1)


def test_header_checksum_catches_a_changed_table() -> None:
    data = bytearray(build())
    struct.pack_into("<I", data, container.FIXED_HEADER_BYTES + 4 + 4, 999)  # layer 1 size
    with pytest.raises(CorruptHeaderError):
        container.parse_header(bytes(data))


def test_every_single_byte_flip_in_layer_data_is_detected() -> None:
    """Tile tables and tile payloads alike: each flip fails a CRC of the tile that reads it."""
    data = build()
    header = container.parse_header(data)
    for entry in header.layers:
        for position in range(entry.offset, entry.end):
            for flip in (0x01, 0x80, 0xFF):
                corrupted = bytearray(data)
                corrupted[position] ^= flip
                with pytest.raises(ChecksumError):
                    for tile in header.tiles:
                        container.tile_payload(header, bytes(corrupted), entry.index, tile.index)


def test_a_layer_verifies_from_its_own_bytes() -> None:
    data = build()
    header = container.parse_header(data)
    for entry in header.layers:
        layer = data[entry.offset : entry.end]
        container.verify_layer(header, entry.index, layer)
        for position in range(len(layer)):
            corrupted = bytearray(layer)
            corrupted[position] ^= 0x40
            with pytest.raises(ChecksumError):
                container.verify_layer(header, entry.index, bytes(corrupted))
        with pytest.raises(TruncatedLayerError):
            container.verify_layer(header, entry.index, layer[:-1])
    v1 = version_1_file(5, 5, [b"abc"])
    container.verify_layer(container.parse_header(v1), 1, b"abc")
    with pytest.raises(ChecksumError):
        container.verify_layer(container.parse_header(v1), 1, b"abd")


def test_every_single_byte_flip_in_the_header_is_detected() -> None:
    data = build()
    for position in range(container.header_size(len(LAYERS))):
        corrupted = bytearray(data)
        corrupted[position] ^= 0x10
        with pytest.raises(CodecError):
            container.parse_header(bytes(corrupted))


def _read_everything(data: bytes) -> None:
    header = container.parse_header(data)
    for index in range(1, header.layers_within(len(data)) + 1):
        for tile in header.tiles:
            container.tile_payload(header, data, index, tile.index)


def _header_with_random_fields(draw: st.DrawFn) -> bytes:
    """A header whose fields are random but whose sizes and CRC are consistent: past every cheap check."""
    version = draw(st.sampled_from(container.READABLE_VERSIONS))
    count = draw(st.integers(1, 6))
    size = container.header_size(count, version)
    head = b"SRIC" + struct.pack("<BBH", version, 0, size) + MODEL_ID
    head += struct.pack("<IIB", draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)), count)
    if version >= 2:
        head += struct.pack("<I", draw(st.sampled_from([0, 64, 128, 100, 2**31])))
    offset = size
    for _ in range(count):
        length = draw(st.integers(0, 300))
        head += struct.pack("<III", offset, length, draw(st.integers(0, 2**32 - 1)))
        offset += length
    return head + struct.pack("<I", zlib.crc32(head))


@st.composite
def files_behind_valid_headers(draw: st.DrawFn) -> bytes:
    return _header_with_random_fields(draw) + draw(st.binary(max_size=600))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=400), files_behind_valid_headers()))
def test_random_bytes_only_raise_codec_errors(data: bytes) -> None:
    try:
        _read_everything(data)
    except CodecError:
        pass


def test_random_headers_get_past_the_magic() -> None:
    """The strategy above reaches the layer parsing, not just the magic check."""
    parsed = 0

    @settings(max_examples=200, database=None)
    @given(files_behind_valid_headers())
    def parse(data: bytes) -> None:
        nonlocal parsed
        try:
            container.parse_header(data)
            parsed += 1
        except CodecError:
            pass

    parse()
    assert parsed >= 20


@settings(max_examples=300)
@given(st.data())
def test_flips_and_truncations_only_raise_codec_errors(draw: st.DataObject) -> None:
    data = bytearray(build())
    for _ in range(draw.draw(st.integers(0, 4))):
        position = draw.draw(st.integers(0, len(data) - 1))
        data[position] ^= draw.draw(st.integers(1, 255))
    cut = draw.draw(st.integers(0, len(data)))
    try:
        _read_everything(bytes(data[:cut]))
    except CodecError:
        pass


def test_serialize_rejects_what_it_cannot_represent() -> None:
    with pytest.raises(ValueError):
        container.serialize(b"short", 1, 1, 64, [[b"x"]])
    with pytest.raises(ValueError):
        container.serialize(MODEL_ID, 0, 1, 64, [[b"x"]])
    with pytest.raises(ValueError):
        container.serialize(MODEL_ID, 1, 1, 64, [])
    with pytest.raises(ValueError):
        container.serialize(MODEL_ID, 1, 1, 100, [[b"x"]])  # not a multiple of 64
    with pytest.raises(ValueError):
        container.serialize(MODEL_ID, 130, 1, 64, [[b"x"]])  # three tiles, one payload
