"""The layered container: header, layer table, then the layers in order.

Pure bytes, no torch. The format is specified in docs/format.md. Its key
property is that any prefix ending at a layer boundary is itself a valid file
(the header always lists every layer, and a reader decodes the layers that
are completely present), so byte-range serving needs no re-encoding.

Versions 2 and 3 cut the picture into square tiles coded independently.
Each layer starts with a tile table (size and CRC-32 of every tile's payload),
so any tile of any layer can be found and checked alone. They differ only in
the tile payload, which is opaque here (`codec.coding`): version 3 (written)
holds one rANS string per tile and layer, version 2 two. Version 1 (read
only) is one tile covering the whole picture, with no tile table.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from codec.errors import (
    BadMagicError,
    ChecksumError,
    CorruptHeaderError,
    CorruptLayerError,
    TruncatedHeaderError,
    TruncatedLayerError,
    UnsupportedVersionError,
)

MAGIC = b"SRIC"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MODEL_ID_BYTES = 16
MAX_LAYERS = 255
MAX_DIMENSION = 1 << 20
TILE_ALIGNMENT = 64  # tile sides are multiples of the side-information stride
MAX_TILES = 1 << 16
# The encoder's tile side: memory follows it, and a region decodes only the
# tiles it touches. Chosen by its rate cost on Kodak (docs/format.md).
DEFAULT_TILE_SIZE = 256

# magic, version, flags, header size, model id, width, height, layer count
_FIXED = struct.Struct("<4sBBH16sIIB")
_TILE_SIZE = struct.Struct("<I")  # versions 2 and 3, right after the fixed part
_ENTRY = struct.Struct("<III")  # offset, size, crc32
_TILE_ENTRY = struct.Struct("<II")  # size, crc32
_CRC = struct.Struct("<I")
# Enough bytes to learn the whole header's size (`required_header_bytes`).
FIXED_HEADER_BYTES = _FIXED.size


def header_size(layer_count: int, version: int = FORMAT_VERSION) -> int:
    """Bytes of a header with `layer_count` table entries, CRC included."""
    tile_field = _TILE_SIZE.size if version >= 2 else 0
    return _FIXED.size + tile_field + layer_count * _ENTRY.size + _CRC.size


@dataclass(frozen=True)
class Tile:
    """One tile of the picture, in pixels. `index` is its raster position from 0."""

    index: int
    x: int
    y: int
    width: int
    height: int

    def touches(self, x: int, y: int, width: int, height: int) -> bool:
        return self.x < x + width and x < self.x + self.width and self.y < y + height and y < self.y + self.height


def tile_grid(width: int, height: int, tile_size: int) -> tuple[Tile, ...]:
    """Tiles of `tile_size` in raster order; the last column and row may be narrower."""
    if tile_size <= 0:
        return (Tile(0, 0, 0, width, height),)
    tiles = []
    for y in range(0, height, tile_size):
        for x in range(0, width, tile_size):
            tiles.append(Tile(len(tiles), x, y, min(tile_size, width - x), min(tile_size, height - y)))
    return tuple(tiles)


def tile_count(width: int, height: int, tile_size: int) -> int:
    if tile_size <= 0:
        return 1
    return -(-width // tile_size) * -(-height // tile_size)


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


class LayerTable:
    """Where each layer of a layered bitstream ends, and what a prefix of it holds.

    The one home of this arithmetic: the container header, the server's stored image and the
    client's view of a remote image all describe the same table and inherit it. A subclass
    provides `layers`, `header_bytes`, `width` and `height` (as fields or properties).
    """

    layers: tuple[LayerEntry, ...]
    header_bytes: int
    width: int
    height: int

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

    def bpp(self, n: int) -> float:
        """Bits per pixel of the first `n` layers, header included."""
        return self.end_of_layer(n) * 8 / (self.width * self.height)


@dataclass(frozen=True)
class ContainerHeader(LayerTable):
    model_id: bytes
    width: int
    height: int
    layers: tuple[LayerEntry, ...]
    version: int = FORMAT_VERSION
    tile_size: int = 0  # 0: one tile covering the picture (version 1)

    @property
    def header_bytes(self) -> int:
        return header_size(len(self.layers), self.version)

    @property
    def tiles(self) -> tuple[Tile, ...]:
        return tile_grid(self.width, self.height, self.tile_size)

    @property
    def tile_table_bytes(self) -> int:
        """Bytes at the start of each layer that list its tiles (0 in version 1)."""
        if self.version < 2:
            return 0
        return tile_count(self.width, self.height, self.tile_size) * _TILE_ENTRY.size

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "width": self.width,
            "height": self.height,
            "model": self.model_id.hex(),
            "header_bytes": self.header_bytes,
            "tile_size": self.tile_size,
            "tiles": len(self.tiles),
            "layers": [
                {"index": e.index, "offset": e.offset, "size": e.size, "end": e.end, "crc32": e.crc32}
                for e in self.layers
            ],
        }


def check_tile_size(width: int, height: int, tile_size: int) -> None:
    """A ValueError unless `tile_size` can be written for a width x height picture."""
    if tile_size <= 0 or tile_size % TILE_ALIGNMENT or tile_size > MAX_DIMENSION:
        raise ValueError(f"tile size must be a positive multiple of {TILE_ALIGNMENT}")
    if tile_count(width, height, tile_size) > MAX_TILES:
        raise ValueError(f"{tile_count(width, height, tile_size)} tiles; a container holds at most {MAX_TILES}")


def serialize(model_id: bytes, width: int, height: int, tile_size: int, layers: list[list[bytes]]) -> bytes:
    """Build a complete container of the current version; `layers[k][t]` is tile t's payload in layer k+1."""
    if len(model_id) != MODEL_ID_BYTES:
        raise ValueError(f"model id must be {MODEL_ID_BYTES} bytes")
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"a container holds 1..{MAX_LAYERS} layers")
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise ValueError("image dimensions out of range")
    check_tile_size(width, height, tile_size)
    tiles = tile_count(width, height, tile_size)
    if any(len(layer) != tiles for layer in layers):
        raise ValueError(f"every layer needs {tiles} tile payloads")
    size = header_size(len(layers))
    head = bytearray(_FIXED.pack(MAGIC, FORMAT_VERSION, 0, size, model_id, width, height, len(layers)))
    head += _TILE_SIZE.pack(tile_size)
    bodies = []
    offset = size
    for layer in layers:
        table = b"".join(_TILE_ENTRY.pack(len(payload), zlib.crc32(payload)) for payload in layer)
        body = table + b"".join(layer)
        head += _ENTRY.pack(offset, len(body), zlib.crc32(table))
        bodies.append(body)
        offset += len(body)
    head += _CRC.pack(zlib.crc32(head))
    return bytes(head) + b"".join(bodies)


def _fixed_fields(data: bytes) -> tuple:
    """Unpack and check the fixed part: magic, version and declared size."""
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise BadMagicError("not a scalable RNN codec container (bad magic)")
    if len(data) < _FIXED.size:
        raise TruncatedHeaderError(f"header needs {_FIXED.size} bytes, got {len(data)}")
    fields = _FIXED.unpack_from(data)
    _, version, _, size, _, _, _, count = fields
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersionError(f"container format version {version}; this build reads {READABLE_VERSIONS}")
    if count < 1 or size != header_size(count, version):
        raise CorruptHeaderError(f"header size {size} does not fit {count} layers")
    return fields


def required_header_bytes(data: bytes) -> int:
    """The full header size, read from the first `FIXED_HEADER_BYTES` of a file."""
    return _fixed_fields(data)[3]


def parse_header(data: bytes) -> ContainerHeader:
    """Parse and validate the header at the start of `data`.

    Only the header bytes are needed; layers may be absent.
    """
    _, version, flags, size, model_id, width, height, count = _fixed_fields(data)
    if len(data) < size:
        raise TruncatedHeaderError(f"header needs {size} bytes, got {len(data)}")
    (stored_crc,) = _CRC.unpack_from(data, size - _CRC.size)
    if zlib.crc32(data[: size - _CRC.size]) != stored_crc:
        raise CorruptHeaderError("header checksum mismatch")
    if flags != 0:
        raise CorruptHeaderError(f"unknown header flags {flags:#x}")
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise CorruptHeaderError(f"image size {width}x{height} out of range")
    table_start = _FIXED.size
    tile_size = 0
    if version >= 2:
        (tile_size,) = _TILE_SIZE.unpack_from(data, _FIXED.size)
        table_start += _TILE_SIZE.size
        if tile_size <= 0 or tile_size % TILE_ALIGNMENT or tile_size > MAX_DIMENSION:
            raise CorruptHeaderError(f"tile size {tile_size} is not a positive multiple of {TILE_ALIGNMENT}")
        if tile_count(width, height, tile_size) > MAX_TILES:
            raise CorruptHeaderError(f"{tile_count(width, height, tile_size)} tiles exceed {MAX_TILES}")
    header = ContainerHeader(model_id, width, height, (), version, tile_size)
    entries = []
    expected_offset = size
    for i in range(count):
        offset, length, crc = _ENTRY.unpack_from(data, table_start + i * _ENTRY.size)
        if offset != expected_offset:
            raise CorruptHeaderError(f"layer {i + 1} starts at {offset}, expected {expected_offset}")
        if length < header.tile_table_bytes:
            raise CorruptHeaderError(f"layer {i + 1} is shorter than its tile table")
        entries.append(LayerEntry(i + 1, offset, length, crc))
        expected_offset = offset + length
    return ContainerHeader(model_id, width, height, tuple(entries), version, tile_size)


def _layer_bytes(header: ContainerHeader, data: bytes, index: int, end: int) -> bytes:
    entry = header.layers[index - 1]
    if len(data) < entry.offset + end:
        raise TruncatedLayerError(f"layer {index} needs bytes up to {entry.end}, only {len(data)} present")
    return bytes(data[entry.offset : entry.offset + end])


def _tile_entries(header: ContainerHeader, index: int, table: bytes) -> list[tuple[int, int]]:
    """The verified (size, crc32) of every tile of layer `index`, from its tile table."""
    entry = header.layers[index - 1]
    if zlib.crc32(table) != entry.crc32:
        raise ChecksumError(f"layer {index}'s tile table fails its CRC32 check")
    entries = [_TILE_ENTRY.unpack_from(table, t * _TILE_ENTRY.size) for t in range(len(table) // _TILE_ENTRY.size)]
    if header.tile_table_bytes + sum(size for size, _ in entries) != entry.size:
        raise CorruptLayerError(f"layer {index}'s tile sizes do not add up to the layer's size")
    return entries


def tile_payload(header: ContainerHeader, data: bytes, index: int, tile: int) -> bytes:
    """The verified bytes of `tile` (from 0) in layer `index` (from 1) out of `data`."""
    entry = header.layers[index - 1]
    if header.version < 2:
        payload = _layer_bytes(header, data, index, entry.size)
        if zlib.crc32(payload) != entry.crc32:
            raise ChecksumError(f"layer {index} fails its CRC32 check")
        return payload
    entries = _tile_entries(header, index, _layer_bytes(header, data, index, header.tile_table_bytes))
    start = header.tile_table_bytes + sum(size for size, _ in entries[:tile])
    size, crc = entries[tile]
    payload = _layer_bytes(header, data, index, start + size)[start:]
    if zlib.crc32(payload) != crc:
        raise ChecksumError(f"tile {tile} of layer {index} fails its CRC32 check")
    return payload


def verify_layer(header: ContainerHeader, index: int, layer: bytes) -> None:
    """Check every CRC of layer `index`, given its bytes alone (what a server sends as one message)."""
    entry = header.layers[index - 1]
    if len(layer) != entry.size:
        raise TruncatedLayerError(f"layer {index} has {len(layer)} of its {entry.size} bytes")
    if header.version < 2:
        if zlib.crc32(layer) != entry.crc32:
            raise ChecksumError(f"layer {index} fails its CRC32 check")
        return
    start = header.tile_table_bytes
    for tile, (size, crc) in enumerate(_tile_entries(header, index, layer[:start])):
        if zlib.crc32(layer[start : start + size]) != crc:
            raise ChecksumError(f"tile {tile} of layer {index} fails its CRC32 check")
        start += size
