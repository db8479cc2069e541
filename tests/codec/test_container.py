"""The container format: layout, prefix property and every parse error."""

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
PAYLOADS = [b"first layer", b"the second one is longer", b"", b"\x00\xff" * 40]


def build() -> bytes:
    return container.serialize(MODEL_ID, 33, 17, PAYLOADS)


def test_header_fields_and_layer_table() -> None:
    data = build()
    header = container.parse_header(data)
    assert (header.width, header.height, header.model_id) == (33, 17, MODEL_ID)
    assert header.layer_count == len(PAYLOADS)
    assert header.header_bytes == container.header_size(len(PAYLOADS))
    offset = header.header_bytes
    for index, (entry, payload) in enumerate(zip(header.layers, PAYLOADS), start=1):
        assert entry.index == index
        assert (entry.offset, entry.size, entry.crc32) == (offset, len(payload), zlib.crc32(payload))
        assert data[entry.offset : entry.end] == payload
        offset = entry.end
    assert header.total_bytes == len(data)


def test_every_prefix_at_a_layer_boundary_is_a_valid_file() -> None:
    data = build()
    header = container.parse_header(data)
    for n in range(len(PAYLOADS) + 1):
        prefix = data[: header.end_of_layer(n)]
        assert container.parse_header(prefix) == header
        assert header.layers_within(len(prefix)) >= n
        for index in range(1, n + 1):
            assert container.layer_payload(header, prefix, index) == PAYLOADS[index - 1]


def test_required_header_bytes_from_the_fixed_part() -> None:
    data = build()
    assert container.required_header_bytes(data[: container.FIXED_HEADER_BYTES]) == container.header_size(4)


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
        container.layer_payload(header, data[: header.end_of_layer(2) - 1], 2)


def test_header_checksum_catches_a_changed_table() -> None:
    data = bytearray(build())
    struct.pack_into("<I", data, container.FIXED_HEADER_BYTES + 4, 999)  # layer 1 size
    with pytest.raises(CorruptHeaderError):
        container.parse_header(bytes(data))


def test_every_single_byte_flip_in_layer_data_is_detected() -> None:
    data = build()
    header = container.parse_header(data)
    for entry in header.layers:
        for position in range(entry.offset, entry.end):
            for flip in (0x01, 0x80, 0xFF):
                corrupted = bytearray(data)
                corrupted[position] ^= flip
                with pytest.raises(ChecksumError):
                    container.layer_payload(header, bytes(corrupted), entry.index)


def test_every_single_byte_flip_in_the_header_is_detected() -> None:
    data = build()
    for position in range(container.header_size(len(PAYLOADS))):
        corrupted = bytearray(data)
        corrupted[position] ^= 0x10
        with pytest.raises(CodecError):
            container.parse_header(bytes(corrupted))


def _read_everything(data: bytes) -> None:
    header = container.parse_header(data)
    for index in range(1, header.layers_within(len(data)) + 1):
        container.layer_payload(header, data, index)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_codec_errors(data: bytes) -> None:
    try:
        _read_everything(data)
    except CodecError:
        pass


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
        container.serialize(b"short", 1, 1, [b"x"])
    with pytest.raises(ValueError):
        container.serialize(MODEL_ID, 0, 1, [b"x"])
    with pytest.raises(ValueError):
        container.serialize(MODEL_ID, 1, 1, [])
