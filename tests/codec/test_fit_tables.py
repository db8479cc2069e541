"""Fitted latent tables (codec.symbol_tables, codec.fit_tables): the same symbols in fewer bytes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from codec import container, rans
from codec.api import Decoder, encode, load_model, save_weights
from codec.fit_tables import MIN_SAMPLES, SPAN, count_symbols, fit_tables
from codec.imageio import read_image
from codec.model import SCALE_LEVELS, ScalableCodec
from codec.symbol_tables import BANDS, frequency_bands, history_states
from tests.codec.conftest import natural_image

KODIM23 = Path(__file__).parents[1] / "data" / "kodim23-384x256.png"


def crops(count: int, size: int = 128, first_seed: int = 10) -> torch.Tensor:
    pictures = np.stack([natural_image(size, size, seed=first_seed + s) for s in range(count)])
    return torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255


@contextmanager
def gaussian_rows(model: ScalableCodec) -> Iterator[ScalableCodec]:
    """`model` coding with its Gaussian rows for a while."""
    tables, model.latent_tables = model.latent_tables, None
    try:
        yield model
    finally:
        model.latent_tables = tables


def test_history_states_say_what_earlier_layers_sent_there_and_next_to_it() -> None:
    like = torch.zeros(1, 2, 3, 4)
    assert history_states(None, None, like).eq(0).all()
    significance, magnitudes = torch.zeros_like(like), torch.zeros_like(like)
    significance[0, 0, 0, 0], magnitudes[0, 0, 0, 0] = 1, 2  # sent in the last layer
    significance[0, 0, 2, 3] = 1  # sent before, not in the last layer
    states = history_states(magnitudes, significance, like)[0, 0]
    assert states.tolist() == [[3, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 2]]
    assert history_states(magnitudes, significance, like)[0, 1].eq(0).all(), "neighbours are in the same channel"


def test_frequency_bands_run_along_zigzag_diagonals_and_chroma_axes_share_them() -> None:
    bands = frequency_bands(160, 48)
    luma, u, v = bands[:160], bands[160:208], bands[208:]
    assert luma[:6].tolist() == [0, 1, 1, 2, 2, 2] and luma.diff().ge(0).all() and int(luma.max()) < 7
    assert torch.equal(u, v) and u[0] == 7 and int(u.max()) == BANDS - 1


@pytest.fixture(scope="module")
def fitted(weights_path: Path) -> ScalableCodec:
    """The untrained model with tables fitted to its symbols on synthetic crops."""
    with_tables = load_model(weights_path)
    with torch.no_grad():
        with_tables.latent_tables = fit_tables(with_tables, crops(16))
    return with_tables


def test_fitted_tables_code_the_same_symbols_in_fewer_bytes(model: ScalableCodec, fitted: ScalableCodec) -> None:
    picture = natural_image(128, 192, seed=99)
    plain, fitted_bytes = encode(picture, model), encode(picture, fitted)
    assert len(fitted_bytes) < len(plain)
    assert np.array_equal(Decoder(fitted_bytes, fitted).decode(), Decoder(plain, model).decode())
    for layers in (1, 3):
        assert np.array_equal(Decoder(fitted_bytes, fitted).decode(layers), Decoder(plain, model).decode(layers))


def test_rows_seen_too_rarely_keep_their_gaussian(fitted: ScalableCodec) -> None:
    with gaussian_rows(fitted) as model:
        counts = count_symbols(model, crops(16)).counts.sum(-1)
    rows = fitted.latent_tables.rows
    short = torch.tensor(rans.tables(model.latent_model).offsets).neg().lt(SPAN)
    fitted_cells = rows.ge(SCALE_LEVELS)
    assert torch.equal(fitted_cells, counts.ge(MIN_SAMPLES) & short)
    gaussian = torch.arange(SCALE_LEVELS, dtype=torch.int32).expand_as(rows)
    assert torch.equal(rows[~fitted_cells], gaussian[~fitted_cells])
    assert fitted_cells.sum() == fitted.latent_tables._cdf_length.numel() > 0


def test_fitted_tables_are_part_of_the_weights_and_of_the_model_id(
    tmp_path: Path, model: ScalableCodec, fitted: ScalableCodec
) -> None:
    path = tmp_path / "fitted.pt"
    save_weights(fitted, path)
    loaded = load_model(path)
    assert torch.equal(loaded.latent_tables.rows, fitted.latent_tables.rows)
    assert torch.equal(loaded.latent_tables._quantized_cdf, fitted.latent_tables._quantized_cdf)
    assert loaded.model_id != model.model_id
    picture = natural_image(64, 64, seed=5)
    written, in_memory = encode(picture, loaded), encode(picture, fitted)
    start = container.parse_header(written).header_bytes
    assert written[start:] == in_memory[start:], "the same layers (the headers name different model ids)"


def test_the_shipped_tables_code_kodim23_in_fewer_bytes_than_its_gaussians() -> None:
    shipped = load_model()
    assert shipped.latent_tables is not None, "weights/codec.pt ships fitted tables"
    picture = read_image(KODIM23)
    fitted_bytes = encode(picture, shipped)
    fitted_pixels = Decoder(fitted_bytes, shipped).decode(1)
    with gaussian_rows(shipped) as plain:
        gaussian_bytes = encode(picture, plain)
        assert np.array_equal(fitted_pixels, Decoder(gaussian_bytes, plain).decode(1))
    assert len(fitted_bytes) < 0.97 * len(gaussian_bytes)


def test_the_fit_tables_command_writes_weights_that_load(tmp_path: Path, weights_path: Path) -> None:
    bank = tmp_path / "crops.npy"
    np.save(bank, np.stack([natural_image(128, 128, seed=s) for s in range(4)]))
    output = tmp_path / "fitted.pt"
    command = [sys.executable, "-m", "codec", "fit-tables", str(weights_path), str(output), "--crops", str(bank)]
    done = subprocess.run([*command, "--count", "8", "--crop-size", "128"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "fitted rows" in done.stdout
    fitted = load_model(output)
    assert fitted.latent_tables is not None
    assert fitted.training_info["fitted_tables"] == {"crops": 8, "crop_size": 128}


def test_the_search_prices_symbols_with_the_rows_the_coder_uses(fitted: ScalableCodec) -> None:
    tables = fitted.latent_tables
    table = rans.tables(fitted.latent_model, tables)
    fitted_row = int(tables.rows.max())
    rows = torch.tensor([fitted_row, fitted_row, fitted_row, 0, fitted_row])
    values = torch.tensor([0.0, 1.0, -1.0, 0.0, 0.25], requires_grad=True)
    bits = tables.symbol_bits(fitted.latent_model, rows, values)

    def coder_bits(row: int, symbol: int) -> float:
        value = symbol - table.offsets[row]
        cdf = table.cdfs[row]
        if not 0 <= value < len(cdf) - 2:
            value = len(cdf) - 2  # the escape (its bypass bits come on top)
        return -float(np.log2((cdf[value + 1] - cdf[value]) / 2**16))

    expected = [coder_bits(fitted_row, 0), coder_bits(fitted_row, 1), coder_bits(fitted_row, -1), coder_bits(0, 0)]
    assert torch.allclose(bits[:4], torch.tensor(expected), atol=1e-4)
    assert bits[4].item() == pytest.approx(coder_bits(fitted_row, 0), abs=1e-4), "the rounded symbol's cost"
    (gradient,) = torch.autograd.grad(bits[4], values)
    slope = coder_bits(fitted_row, 1) - coder_bits(fitted_row, 0)
    assert gradient[4].item() == pytest.approx(slope, abs=1e-4), "the cost curve's slope between symbols"
