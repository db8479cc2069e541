"""codec.rans: CompressAI's coder with the CDF tables converted once gives CompressAI's own bytes."""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from codec import rans
from codec.model import SCALE_LEVELS, scale_table


def latent_model() -> GaussianConditional:
    model = GaussianConditional(scale_table())
    model.update_scale_table(scale_table())
    return model


def test_latent_strings_are_compressais_and_decode_back() -> None:
    model = latent_model()
    generator = torch.Generator().manual_seed(0)
    indexes = torch.randint(0, SCALE_LEVELS, (1, 16, 6, 5), generator=generator, dtype=torch.int32)
    values = torch.randn(indexes.shape, generator=generator, dtype=torch.float64) * (indexes + 1) * 0.3
    means = torch.randn(indexes.shape, generator=generator, dtype=torch.float64)
    symbols = torch.round(values - means)
    string = rans.encode(symbols, indexes, model)
    assert string == model.compress(values, indexes, means)[0]
    decoded = rans.decode(string, indexes, model)
    assert decoded.dtype == torch.int32 and torch.equal(decoded.double(), symbols)
    assert torch.equal(model.decompress([string], indexes, torch.float64, means), decoded + means)


def test_side_strings_are_compressais() -> None:
    side_model = EntropyBottleneck(4)
    side_model.update(force=True)
    side = torch.randn(1, 4, 3, 2, generator=torch.Generator().manual_seed(1)) * 3
    medians = rans.side_medians(side_model)
    string = rans.encode(torch.round(side - medians), rans.side_indexes(side_model, side.shape), side_model)
    assert string == side_model.compress(side)[0]
    assert torch.equal(
        rans.decode(string, rans.side_indexes(side_model, side.shape), side_model).float() + medians,
        side_model.decompress([string], side.shape[2:]),
    )


def test_tables_are_kept_until_update_replaces_them() -> None:
    model = latent_model()
    first = rans.tables(model)
    assert rans.tables(model) is first  # converted once
    assert all(len(row) == length for row, length in zip(first.cdfs, first.lengths, strict=True))
    model.update_scale_table([0.5 * s for s in scale_table()], force=True)
    again = rans.tables(model)
    assert again is not first and again.lengths != first.lengths
