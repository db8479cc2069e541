"""CompressAI's rANS coder, called with each entropy model's CDF table converted once.

CompressAI's `compress` and `decompress` turn the whole CDF table into Python lists on every call
(64 rows, each padded to the longest, 3,133 entries), and the binding copies those lists into C++
again: about 20 ms per tile and layer, more than coding the symbols. Here the rows are cut to their
own lengths, which is all the coder reads, and kept per entropy model. The coder and the table
values are CompressAI's, so the bytes are too.
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

import numpy as np
import torch
from compressai.ans import RansDecoder, RansEncoder
from compressai.entropy_models import EntropyBottleneck, EntropyModel
from torch import Tensor


@dataclass(frozen=True)
class CdfTables:
    """The three table arguments of the rANS coder, as the binding takes them."""

    cdfs: list[list[int]]
    lengths: list[int]
    offsets: list[int]


_TABLES: WeakKeyDictionary[EntropyModel, tuple[tuple[int, int], CdfTables]] = WeakKeyDictionary()


def tables(entropy_model: EntropyModel) -> CdfTables:
    """The model's CDF tables; rebuilt when `update()` has replaced or changed them."""
    cdf = entropy_model._quantized_cdf
    version = (cdf.data_ptr(), cdf._version)
    cached = _TABLES.get(entropy_model)
    if cached is not None and cached[0] == version:
        return cached[1]
    lengths = entropy_model._cdf_length.reshape(-1).int().tolist()
    rows = cdf.tolist()
    built = CdfTables(
        cdfs=[row[:length] for row, length in zip(rows, lengths, strict=True)],
        lengths=lengths,
        offsets=entropy_model._offset.reshape(-1).int().tolist(),
    )
    _TABLES[entropy_model] = (version, built)
    return built


def encode(symbols: Tensor, indexes: Tensor, entropy_model: EntropyModel) -> bytes:
    """One rANS string of integer `symbols`, each coded with the CDF row its index names."""
    table = tables(entropy_model)
    return RansEncoder().encode_with_indexes(
        symbols.reshape(-1).int().tolist(), indexes.reshape(-1).int().tolist(), table.cdfs, table.lengths, table.offsets
    )


def decode(string: bytes, indexes: Tensor, entropy_model: EntropyModel) -> Tensor:
    """The integer symbols of `string`, shaped like `indexes` (int32)."""
    table = tables(entropy_model)
    values = RansDecoder().decode_with_indexes(
        string, indexes.reshape(-1).int().tolist(), table.cdfs, table.lengths, table.offsets
    )
    return _as_tensor(values, indexes)


def decode_next(stream: RansDecoder, indexes: Tensor, entropy_model: EntropyModel) -> Tensor:
    """The next `indexes.numel()` symbols of a stream opened with `set_stream` (int32, shaped like `indexes`)."""
    table = tables(entropy_model)
    values = stream.decode_stream(indexes.reshape(-1).int().tolist(), table.cdfs, table.lengths, table.offsets)
    return _as_tensor(values, indexes)


def _as_tensor(values: list[int], like: Tensor) -> Tensor:
    # a list through NumPy is several times faster than torch.tensor(list)
    return torch.from_numpy(np.asarray(values, dtype=np.int32)).reshape(like.shape)


def side_indexes(side_model: EntropyBottleneck, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Each side-information element codes with its channel's CDF row."""
    channels = torch.arange(shape[1], dtype=torch.int32)[None, :, None, None]
    return channels.expand(*shape)


def side_medians(side_model: EntropyBottleneck) -> Tensor:
    """The per-channel medians that side symbols are coded relative to, (1, C, 1, 1)."""
    return side_model.quantiles[:, 0, 1].detach()[None, :, None, None]
