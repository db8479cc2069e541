"""`python -m codec fit-tables`: the latents' coding tables fitted to a trained codec (codec.symbol_tables).

The encoder runs on training crops exactly as it codes a file (`codec.coding.quantize_layer`), the
symbols are counted per layer, context and scale row, and every row with enough samples becomes
the counts smoothed towards its Gaussian row, quantized to the coder's 16-bit CDF. A fit belongs
to the weights it counted: training changes the symbols, so trained weights are fitted again.
"""

from __future__ import annotations

import torch
from compressai._CXX import pmf_to_quantized_cdf
from torch import Tensor

from codec import rans
from codec.coding import quantize_layer
from codec.model import SCALE_LEVELS, ScalableCodec
from codec.rans_tables import PRECISION
from codec.symbol_tables import CONTEXTS, SPAN, FittedLatentTables

# Symbols are counted in -SPAN … SPAN (the ends also hold everything beyond); a Gaussian row reaching
# further keeps its Gaussian. A row needs this many samples to be fitted.
MIN_SAMPLES = 1000
# The Gaussian row's weight in a fitted row, in samples: it keeps every symbol codable.
PRIOR_SAMPLES = 16.0
# Crops per batch through the encoder.
BATCH = 16


class SymbolCounts:
    """How often each symbol was written, per layer, context and scale row."""

    def __init__(self, layers: int) -> None:
        self.counts = torch.zeros(layers, CONTEXTS, SCALE_LEVELS, 2 * SPAN + 1, dtype=torch.float64)

    def add(self, layer: int, contexts: Tensor, scale_rows: Tensor, symbols: Tensor) -> None:
        values = symbols.long().clamp(-SPAN, SPAN) + SPAN
        cells = (contexts.long() * SCALE_LEVELS + scale_rows.long()) * (2 * SPAN + 1) + values
        self.counts[layer].view(-1).add_(torch.bincount(cells.reshape(-1), minlength=self.counts[layer].numel()))


@torch.no_grad()
def count_symbols(model: ScalableCodec, crops: Tensor) -> SymbolCounts:
    """The symbols the encoder writes for `crops` (N, 3, H, W in 0..1; H, W multiples of 64), counted."""
    counts = SymbolCounts(model.config.layers)
    for start in range(0, len(crops), BATCH):
        images = crops[start : start + BATCH]
        state = model.initial_state(images)
        for k in range(model.config.layers):
            layer = quantize_layer(model, images, state)
            counts.add(k, layer.contexts, layer.scale_rows, layer.symbols)
    return counts


def _fitted_row(counts: Tensor, gaussian_cdf: list[int], offset: int) -> tuple[list[int], int]:
    """One row's CDF and offset: the counts (length 2 SPAN + 1) smoothed towards the Gaussian row."""
    gaussian = torch.tensor(gaussian_cdf, dtype=torch.float64).diff() / 2**PRECISION
    gaussian_pmf, gaussian_tail = gaussian[:-1], float(gaussian[-1])
    seen = torch.nonzero(counts[1:-1]).reshape(-1) - (SPAN - 1)
    low = min(offset, int(seen.min()) if len(seen) else offset)
    high = max(offset + len(gaussian_pmf) - 1, int(seen.max()) if len(seen) else low)
    prior = torch.zeros(high - low + 1, dtype=torch.float64)
    prior[offset - low : offset - low + len(gaussian_pmf)] = gaussian_pmf
    inside = counts[low + SPAN : high + SPAN + 1]
    total = float(counts.sum())
    pmf = (inside + PRIOR_SAMPLES * prior) / (total + PRIOR_SAMPLES)
    tail = (total - float(inside.sum()) + PRIOR_SAMPLES * gaussian_tail) / (total + PRIOR_SAMPLES)
    return pmf_to_quantized_cdf([*pmf.tolist(), max(tail, 2.0**-PRECISION)], PRECISION), low


def build_tables(model: ScalableCodec, counts: SymbolCounts) -> FittedLatentTables:
    """A fitted row for every (layer, context, scale row) seen `MIN_SAMPLES` times, the Gaussian row elsewhere."""
    model.update(force=False)  # the Gaussian rows, if a fresh model has none yet
    gaussian = rans.tables(model.latent_model)
    layers = counts.counts.shape[0]
    rows = torch.arange(SCALE_LEVELS, dtype=torch.int32).repeat(layers, CONTEXTS, 1)
    cdfs, offsets = [], []
    for (k, context, scale_row), samples in zip(
        torch.cartesian_prod(*(torch.arange(n) for n in counts.counts.shape[:3])).tolist(),
        counts.counts.sum(-1).reshape(-1).tolist(),
        strict=True,
    ):
        offset = gaussian.offsets[scale_row]
        if samples < MIN_SAMPLES or -offset >= SPAN:
            continue
        cdf, low = _fitted_row(counts.counts[k, context, scale_row], gaussian.cdfs[scale_row], offset)
        rows[k, context, scale_row] = SCALE_LEVELS + len(cdfs)
        cdfs.append(cdf)
        offsets.append(low)
    tables = FittedLatentTables(layers, SCALE_LEVELS, len(cdfs), max((len(c) for c in cdfs), default=0))
    tables.rows.copy_(rows)
    for i, (cdf, low) in enumerate(zip(cdfs, offsets, strict=True)):
        tables._quantized_cdf[i, : len(cdf)] = torch.tensor(cdf, dtype=torch.int32)
        tables._cdf_length[i] = len(cdf)
        tables._offset[i] = low
    return tables


def fit_tables(model: ScalableCodec, crops: Tensor) -> FittedLatentTables:
    """Count the symbols the encoder writes for `crops` and build the tables from them."""
    return build_tables(model, count_symbols(model, crops))
