"""codec.rans: the C coder (codec._rans) and CompressAI's, with the CDF tables converted once, both give
CompressAI's own bytes and symbols."""

from __future__ import annotations

import pytest
import torch
from compressai.ans import RansDecoder, RansEncoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from codec import rans
from codec.model import SCALE_LEVELS, scale_table

CODERS = ["c", "compressai"]


@pytest.fixture(params=CODERS)
def coder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with each implementation; the C one must be built (`pip install -e .` builds it)."""
    if request.param == "compressai":
        monkeypatch.setattr(rans, "_rans", None)
    else:
        assert rans._rans is not None, "codec._rans is not built: a C compiler and `pip install -e .`"
    return request.param


def latent_model() -> GaussianConditional:
    model = GaussianConditional(scale_table())
    model.update_scale_table(scale_table())
    return model


def test_latent_strings_are_compressais_and_decode_back(coder: str) -> None:
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


def test_side_strings_are_compressais(coder: str) -> None:
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


def test_values_far_outside_their_rows_and_a_stream_read_in_two_passes(coder: str) -> None:
    """Bypass coding (values beyond a row, both ways, up to 2^20 away) and one string read in two calls,
    against CompressAI's coder called directly."""
    model = latent_model()
    table = rans.tables(model)
    generator = torch.Generator().manual_seed(2)
    indexes = torch.randint(0, SCALE_LEVELS, (4000,), generator=generator, dtype=torch.int32)
    symbols = torch.randint(-3, 4, (4000,), generator=generator, dtype=torch.int32)
    far = torch.randint(0, 4000, (300,), generator=generator)
    symbols[far] = torch.randint(-(2**20), 2**20, (300,), generator=generator, dtype=torch.int32)
    string = rans.encode(symbols, indexes, model)
    expected = RansEncoder().encode_with_indexes(
        symbols.tolist(), indexes.tolist(), table.cdfs, table.lengths, table.offsets
    )
    assert string == expected
    stream = rans.Stream(string)
    decoded = torch.cat([stream.decode(indexes[:1234], model), stream.decode(indexes[1234:], model)])
    assert torch.equal(decoded, symbols)
    reference = RansDecoder()
    reference.set_stream(string)
    assert reference.decode_stream(indexes.tolist(), table.cdfs, table.lengths, table.offsets) == symbols.tolist()


def test_an_index_outside_the_table_is_an_error(coder: str) -> None:
    model = latent_model()
    indexes = torch.zeros(8, dtype=torch.int32)  # (CompressAI's encoder overruns its buffer below 2 symbols)
    string = rans.encode(torch.zeros(8, dtype=torch.int32), indexes, model)
    assert torch.equal(rans.decode(string, indexes, model), torch.zeros(8, dtype=torch.int32))
    indexes[5] = SCALE_LEVELS
    if coder == "c":  # CompressAI's binding only asserts (compiled out): it reads past its table
        with pytest.raises(ValueError, match="index 64 at 5 outside the 64 cdf rows"):
            rans.decode(string, indexes, model)
        with pytest.raises(ValueError, match="index 64 at 5 outside the 64 cdf rows"):
            rans.encode(torch.zeros(8, dtype=torch.int32), indexes, model)


def test_parts_of_two_models_in_one_string_read_back_part_by_part(coder: str) -> None:
    """A tile's layer (container version 3): side symbols, then latents, one flush; CompressAI's
    coder given both tables end to end writes the same bytes."""
    side_model = EntropyBottleneck(4)
    side_model.update(force=True)
    model = latent_model()
    generator = torch.Generator().manual_seed(3)
    side = torch.randint(-4, 5, (1, 4, 3, 2), generator=generator, dtype=torch.int32)
    side_indexes = rans.side_indexes(side_model, side.shape)
    indexes = torch.randint(0, SCALE_LEVELS, (1, 16, 6, 5), generator=generator, dtype=torch.int32)
    symbols = torch.randint(-6, 7, indexes.shape, generator=generator, dtype=torch.int32)
    string = rans.encode_parts([(side, side_indexes, side_model), (symbols, indexes, model)])
    side_table, table = rans.tables(side_model), rans.tables(model)
    rows = len(side_table.lengths)
    expected = RansEncoder().encode_with_indexes(
        side.reshape(-1).tolist() + symbols.reshape(-1).tolist(),
        side_indexes.reshape(-1).tolist() + (indexes.reshape(-1) + rows).tolist(),
        side_table.cdfs + table.cdfs,
        side_table.lengths + table.lengths,
        side_table.offsets + table.offsets,
    )
    assert string == expected
    two_strings = len(rans.encode(side, side_indexes, side_model)) + len(rans.encode(symbols, indexes, model))
    assert len(string) < two_strings  # one flush fewer
    stream = rans.Stream(string)
    assert torch.equal(stream.decode(side_indexes, side_model), side)
    assert torch.equal(stream.decode(indexes, model), symbols)
