"""The layered container: header, layer table, then the layers in order.

Pure bytes, no torch. The format is specified in docs/format.md. Its key
property is that any prefix ending at a layer boundary is itself a valid file
(the header always lists every layer, and a reader decodes the layers that
are completely present), so byte-range serving needs no re-encoding.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from codec.errors import (
    BadMagicError,
    ChecksumError,
    CorruptHeaderError,
    TruncatedHeaderError,
    TruncatedLayerError,
    UnsupportedVersionError,
)

MAGIC = b"SRIC"
FORMAT_VERSION = 1
MODEL_ID_BYTES = 16
MAX_LAYERS = 255
MAX_DIMENSION = 1 << 20

# magic, version, flags, header size, model id, width, height, layer count
_FIXED = struct.Struct("<4sBBH16sIIB")
_ENTRY = struct.Struct("<III")  # offset, size, crc32
_CRC = struct.Struct("<I")
FIXED_HEADER_BYTES = _FIXED.size


def header_size(layer_count: int) -> int:
    """Bytes of a header with `layer_count` table entries, CRC included."""
    return _FIXED.size + layer_count * _ENTRY.size + _CRC.size


@dataclass(frozen=True)
class LayerEntry:
    """One row of the layer table. `index` counts from 1."""

    index: int
    offset: int
    size: int
    crc32: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class ContainerHeader:
    model_id: bytes
    width: int
    height: int
    layers: tuple[LayerEntry, ...]

    @property
    def header_bytes(self) -> int:
        return header_size(len(self.layers))

    @property
    def layer_count(self) -> int:
        return len(self.layers)

    @property
    def total_bytes(self) -> int:
        return self.layers[-1].end if self.layers else self.header_bytes

    def end_of_layer(self, n: int) -> int:
        """Bytes needed to decode the first `n` layers (n = 0: the header)."""
        if not 0 <= n <= len(self.layers):
            raise ValueError(f"layer count {n} outside 0..{len(self.layers)}")
        return self.layers[n - 1].end if n else self.header_bytes

    def layers_within(self, available_bytes: int) -> int:
        """How many whole layers the first `available_bytes` bytes hold."""
        return sum(1 for entry in self.layers if entry.end <= available_bytes)

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "model": self.model_id.hex(),
            "header_bytes": self.header_bytes,
            "layers": [
                {"index": e.index, "offset": e.offset, "size": e.size, "end": e.end, "crc32": e.crc32}
                for e in self.layers
            ],
        }


def serialize(model_id: bytes, width: int, height: int, payloads: list[bytes]) -> bytes:
    """Build a complete container from the layers' payloads."""
    if len(model_id) != MODEL_ID_BYTES:
        raise ValueError(f"model id must be {MODEL_ID_BYTES} bytes")
    if not 1 <= len(payloads) <= MAX_LAYERS:
        raise ValueError(f"a container holds 1..{MAX_LAYERS} layers")
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise ValueError("image dimensions out of range")
    size = header_size(len(payloads))
    head = bytearray(_FIXED.pack(MAGIC, FORMAT_VERSION, 0, size, model_id, width, height, len(payloads)))
    offset = size
    for payload in payloads:
        head += _ENTRY.pack(offset, len(payload), zlib.crc32(payload))
        offset += len(payload)
    head += _CRC.pack(zlib.crc32(head))
    return bytes(head) + b"".join(payloads)


def _fixed_fields(data: bytes) -> tuple:
    """Unpack and check the fixed part: magic, version and declared size."""
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise BadMagicError("not a scalable RNN codec container (bad magic)")
    if len(data) < _FIXED.size:
        raise TruncatedHeaderError(f"header needs {_FIXED.size} bytes, got {len(data)}")
    fields = _FIXED.unpack_from(data)
    _, version, _, size, _, _, _, count = fields
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(f"container format version {version}; this build reads {FORMAT_VERSION}")
    if count < 1 or size != header_size(count):
        raise CorruptHeaderError(f"header size {size} does not fit {count} layers")
    return fields


def required_header_bytes(data: bytes) -> int:
    """The full header size, read from the first `FIXED_HEADER_BYTES` of a file."""
    return _fixed_fields(data)[3]


def parse_header(data: bytes) -> ContainerHeader:
    """Parse and validate the header at the start of `data`.

    Only the header bytes are needed; layers may be absent.
    """
    _, _, flags, size, model_id, width, height, count = _fixed_fields(data)
    if len(data) < size:
        raise TruncatedHeaderError(f"header needs {size} bytes, got {len(data)}")
    (stored_crc,) = _CRC.unpack_from(data, size - _CRC.size)
    if zlib.crc32(data[: size - _CRC.size]) != stored_crc:
        raise CorruptHeaderError("header checksum mismatch")
    if flags != 0:
        raise CorruptHeaderError(f"unknown header flags {flags:#x}")
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise CorruptHeaderError(f"image size {width}x{height} out of range")
    entries = []
    expected_offset = size
    for i in range(count):
        offset, length, crc = _ENTRY.unpack_from(data, _FIXED.size + i * _ENTRY.size)
        if offset != expected_offset:
            raise CorruptHeaderError(f"layer {i + 1} starts at {offset}, expected {expected_offset}")
        entries.append(LayerEntry(i + 1, offset, length, crc))
        expected_offset = offset + length
    return ContainerHeader(model_id, width, height, tuple(entries))


def layer_payload(header: ContainerHeader, data: bytes, index: int) -> bytes:
    """The verified bytes of layer `index` (from 1) out of `data`."""
    entry = header.layers[index - 1]
    if len(data) < entry.end:
        raise TruncatedLayerError(f"layer {index} needs bytes up to {entry.end}, only {len(data)} present")
    payload = bytes(data[entry.offset : entry.end])
    if zlib.crc32(payload) != entry.crc32:
        raise ChecksumError(f"layer {index} fails its CRC32 check")
    return payload
