"""Files as container version 2 wrote them (two rANS strings per tile and layer, docs/format.md), made
from a current file's symbols: for the tests that files written before version 3 still decode."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch

from codec import container, rans
from codec.api import Decoder
from codec.coding import coding_tables
from codec.model import ScalableCodec

Table = rans.CdfTables | rans.HasCdfTable
Read = tuple[torch.Tensor, torch.Tensor, Table]  # symbols, indexes, the table they were read with


def version_2_file(data: bytes, model: ScalableCodec) -> bytes:
    """`data` (a version-3 file of `model`) with every payload rewritten as u32 side length, side string,
    latent string: the same symbols, a flush and a length field more per tile and layer."""
    reads: dict[bytes, list[Read]] = {}
    original = rans.Stream.decode

    def recording(stream: rans.Stream, indexes: torch.Tensor, table: Table) -> torch.Tensor:
        symbols = original(stream, indexes, table)
        reads.setdefault(bytes(stream.string), []).append((symbols, indexes, table))
        return symbols

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rans.Stream, "decode", recording)
        Decoder(data, model).decode()
    header = container.parse_header(data)
    layers = []
    for layer in range(1, header.layer_count + 1):
        payloads = []
        for tile in header.tiles:
            side, latent = reads[container.tile_payload(header, data, layer, tile.index)]
            assert side[2] is model.side_models[layer - 1] and latent[2] is coding_tables(model)
            side_string = rans.encode(*side)
            payloads.append(struct.pack("<I", len(side_string)) + side_string + rans.encode(*latent))
        layers.append(payloads)
    rebuilt = bytearray(container.serialize(model.model_id, header.width, header.height, header.tile_size, layers))
    rebuilt[4] = 2  # the version: versions 2 and 3 differ only in the payloads
    size = header.header_bytes
    rebuilt[size - 4 : size] = struct.pack("<I", zlib.crc32(bytes(rebuilt[: size - 4])))
    return bytes(rebuilt)
