"""The rANS coder of the bitstream: CompressAI's format, with each entropy model's CDF table converted once.

The bytes are those of CompressAI's coder (`compressai.ans`: a 64-bit state renormalised by 32-bit words,
16-bit probabilities, bypass coding for values outside a CDF row). Two implementations write and read them:
- `codec._rans`, C on int32 buffers (codec/_rans.c, built by the install when a C compiler is there);
- CompressAI's, whose binding takes Python lists: about 40 % of a layer's decode at Kodak size went to
  turning every symbol and index into a Python int and back. It is used when `codec._rans` is not built.

CompressAI's `compress` and `decompress` also turn the whole CDF table into Python lists on every call
(64 rows, each padded to the longest, 3,133 entries); here the rows are cut to their own lengths, which
is all the coder reads, and kept per entropy model (or per set of them joined into one table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from weakref import WeakKeyDictionary

import numpy as np
import torch
from compressai.ans import RansDecoder, RansEncoder
from compressai.entropy_models import EntropyBottleneck
from torch import Tensor

try:
    from codec import _rans
except ImportError:  # built without a C compiler: CompressAI's coder
    _rans = None


@dataclass(frozen=True)
class CdfTables:
    """The CDF rows of one entropy model (or of several joined), cut to their lengths: as lists (CompressAI's
    binding) and flat int32 arrays (`codec._rans`: row r at cdf[starts[r]:starts[r] + lengths[r]])."""

    cdfs: list[list[int]]
    lengths: list[int]
    offsets: list[int]
    arrays: tuple[np.ndarray, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        starts = np.cumsum([0, *self.lengths[:-1]], dtype=np.int64).astype(np.int32)
        flat = np.fromiter((value for row in self.cdfs for value in row), dtype=np.int32)
        columns = (flat, starts, np.asarray(self.lengths, dtype=np.int32), np.asarray(self.offsets, dtype=np.int32))
        object.__setattr__(self, "arrays", columns)


# Every string opens with the coder's flushed 64-bit state.
STATE_BYTES = 8


class HasCdfTable(Protocol):
    """CompressAI's CDF layout: an entropy model after `update()`, or `codec.symbol_tables.FittedLatentTables`
    (whose row numbers count on from the Gaussian rows: join it after them, `tables(latent_model, fitted)`)."""

    _quantized_cdf: Tensor
    _cdf_length: Tensor
    _offset: Tensor


_TABLES: WeakKeyDictionary[HasCdfTable, tuple[tuple, CdfTables]] = WeakKeyDictionary()


def tables(*holders: HasCdfTable) -> CdfTables:
    """The holders' CDF rows in turn, as one table (one holder: its own); rebuilt when `update()` or a
    new fit has replaced or changed any of them."""
    version = tuple(
        (id(h), *((t.data_ptr(), t._version) for t in (h._quantized_cdf, h._cdf_length, h._offset))) for h in holders
    )
    cached = _TABLES.get(holders[-1])
    if cached is not None and cached[0] == version:
        return cached[1]
    cdfs, lengths, offsets = [], [], []
    for holder in holders:
        holder_lengths = holder._cdf_length.reshape(-1).int().tolist()
        cdfs += [row[:length] for row, length in zip(holder._quantized_cdf.tolist(), holder_lengths, strict=True)]
        lengths += holder_lengths
        offsets += holder._offset.reshape(-1).int().tolist()
    built = CdfTables(cdfs=cdfs, lengths=lengths, offsets=offsets)
    _TABLES[holders[-1]] = (version, built)
    return built


def as_tables(table: CdfTables | HasCdfTable) -> CdfTables:
    """`table` itself, or the CDF table of an entropy model or fitted tables."""
    return table if isinstance(table, CdfTables) else tables(table)


def _int32(values: Tensor) -> np.ndarray:
    return np.ascontiguousarray(values.reshape(-1).to(torch.int32).cpu().numpy())


def encode(symbols: Tensor, indexes: Tensor, table: CdfTables | HasCdfTable) -> bytes:
    """One rANS string of integer `symbols`, each coded with the CDF row its index names."""
    return encode_parts([(symbols, indexes, table)])


def encode_parts(parts: list[tuple[Tensor, Tensor, CdfTables | HasCdfTable]]) -> bytes:
    """One rANS string of several (symbols, indexes, table or entropy model) parts in turn, which a `Stream`
    reads back part by part, each with its table: one flush for a tile's layer instead of one per part.

    The parts' tables are laid end to end, each part's indexes moved past the rows before it; the
    coder reads only the rows it is given, so the bytes are those of one model coding all the symbols.
    """
    in_turn = [as_tables(table) for _, _, table in parts]
    rows = np.cumsum([0, *(len(table.lengths) for table in in_turn[:-1])])
    symbols = np.concatenate([_int32(part[0]) for part in parts])
    indexes = np.concatenate([_int32(part[1]) + first for part, first in zip(parts, rows, strict=True)])
    indexes = indexes.astype(np.int32)
    if _rans is None:
        cdfs = [row for table in in_turn for row in table.cdfs]
        lengths = [length for table in in_turn for length in table.lengths]
        offsets = [offset for table in in_turn for offset in table.offsets]
        return RansEncoder().encode_with_indexes(symbols.tolist(), indexes.tolist(), cdfs, lengths, offsets)
    flat_starts = np.cumsum([0, *(table.arrays[0].size for table in in_turn[:-1])])
    cdf, _, lengths, offsets = (np.concatenate([table.arrays[column] for table in in_turn]) for column in range(4))
    starts = np.concatenate([table.arrays[1] + first for table, first in zip(in_turn, flat_starts, strict=True)])
    return _rans.encode(symbols, indexes, cdf, starts.astype(np.int32), lengths, offsets)


class Stream:
    """One rANS string read symbol after symbol: `decode` continues where the last call stopped (a
    frequency context's two passes read one string)."""

    def __init__(self, string: bytes) -> None:
        self.string = string
        if _rans is not None:
            self.state, self.position = _rans.start(string)
        else:
            self.decoder = RansDecoder()
            self.decoder.set_stream(string)

    def decode(self, indexes: Tensor, table: CdfTables | HasCdfTable) -> Tensor:
        """The next `indexes.numel()` symbols (int32, shaped like `indexes`), each with its index's row."""
        table = as_tables(table)
        rows = _int32(indexes)
        if _rans is None:
            values = self.decoder.decode_stream(rows.tolist(), table.cdfs, table.lengths, table.offsets)
            # a list through NumPy is several times faster than torch.tensor(list)
            return torch.from_numpy(np.asarray(values, dtype=np.int32)).reshape(indexes.shape)
        out = np.empty(rows.size, dtype=np.int32)
        self.state, self.position = _rans.decode(self.string, self.state, self.position, rows, *table.arrays, out)
        return torch.from_numpy(out).reshape(indexes.shape)


def decode(string: bytes, indexes: Tensor, table: CdfTables | HasCdfTable) -> Tensor:
    """The integer symbols of `string`, shaped like `indexes` (int32)."""
    return Stream(string).decode(indexes, table)


def side_indexes(side_model: EntropyBottleneck, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Each side-information element codes with its channel's CDF row."""
    channels = torch.arange(shape[1], dtype=torch.int32)[None, :, None, None]
    return channels.expand(*shape)


def side_medians(side_model: EntropyBottleneck) -> Tensor:
    """The per-channel medians that side symbols are coded relative to, (1, C, 1, 1)."""
    return side_model.quantiles[:, 0, 1].detach()[None, :, None, None]
