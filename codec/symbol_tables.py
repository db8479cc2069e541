"""The latents' coding tables, fitted to the symbols the trained encoder writes.

The hyper-decoder predicts a Gaussian scale for every latent, and the coder used the discretised
Gaussian of that scale's row. Training sees rates through additive noise, never the rounded
symbols, and the Gaussian ends up far from them where it is most sure: on the shipped weights
nearly every layer-1 latent falls in the smallest-scale row, whose Gaussian gives a non-zero
symbol 5·10⁻⁶ of the time while 0.47 % of them are non-zero (16 bits each instead of 8).

So the symbols are counted on training crops, per layer, per context the decoder knows before
the layer (the coefficient's frequency band and what earlier layers sent there) and per scale
row, and every row seen often enough gets its own table: the counts, smoothed towards the
Gaussian. Rows seen too rarely keep the Gaussian. The symbols, and so the pictures, are the
same; only their code lengths change. Counting and building are in `codec.fit_tables`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from codec import rans
from codec.rans import HasCdfTable
from codec.rans_tables import PRECISION
from codec.transforms import BLOCK, zigzag_frequencies

# Bands are runs of zigzag diagonals (u + v): luma bands start at these diagonals, chroma bands
# (the two chroma axes share them) at those; the low frequencies, which carry most of the
# rate, get bands of their own.
LUMA_BAND_STARTS = (0, 1, 2, 3, 5, 8, 12)
CHROMA_BAND_STARTS = (0, 1, 4)
BANDS = len(LUMA_BAND_STARTS) + len(CHROMA_BAND_STARTS)
# What earlier layers sent at a latent's position: never a non-zero symbol there nor at a
# neighbour (the transform's: 3x3 of the same channel for the lapped transform, the band's own grid and
# the parent for the wavelet); never there but at a neighbour; there, but not in the last layer; there
# in the last layer.
HISTORY_STATES = 4
CONTEXTS = BANDS * HISTORY_STATES
# The search prices symbols within -SPAN … SPAN of the mean (codec.fit_tables counts the same range).
SPAN = 128
# About what the coder's bypass adds to an escaped symbol (CompressAI writes its value in 4-bit groups).
ESCAPE_BYPASS_BITS = 8.0


def frequency_bands(luma: int, chroma: int) -> Tensor:
    """The band of every latent channel (luma, then the two chroma axes), int64 (C,)."""
    diagonals = torch.tensor([u + v for u, v in zigzag_frequencies(BLOCK)])
    luma_bands = torch.bucketize(diagonals[:luma], torch.tensor(LUMA_BAND_STARTS), right=True) - 1
    chroma_bands = torch.bucketize(diagonals[:chroma], torch.tensor(CHROMA_BAND_STARTS), right=True) - 1
    chroma_bands = chroma_bands + len(LUMA_BAND_STARTS)
    return torch.cat([luma_bands, chroma_bands, chroma_bands])


def same_channel_neighbours(significance: Tensor) -> Tensor:
    """Whether a latent's 3x3 neighbourhood in its own channel had a non-zero symbol (the lapped transform's
    neighbours: the same frequency in the next blocks), bool shaped like `significance`."""
    return F.max_pool2d(significance.double(), 3, stride=1, padding=1) > 0


def history_states(
    previous_magnitudes: Tensor | None,
    significance: Tensor | None,
    like: Tensor,
    neighbours: Callable[[Tensor], Tensor] = same_channel_neighbours,
) -> Tensor:
    """The history state (0 … HISTORY_STATES - 1) of every latent, int64 shaped like `like`, from
    the recurrent state's integer history (None before the first layer) and the transform's `neighbours`."""
    if significance is None or previous_magnitudes is None:
        return torch.zeros(like.shape, dtype=torch.int64, device=like.device)
    significance = significance.to(like.device)
    near = neighbours(significance)
    sent = torch.where(previous_magnitudes.to(like.device) > 0, 3, 2)
    return torch.where(significance > 0, sent, near.long()).long()


class FittedLatentTables(nn.Module):
    """The fitted rows (CompressAI's CDF layout, 16-bit) and which row codes each latent.

    `rows[layer, context, scale_row]` names a row of the coding table: below `SCALE_LEVELS` the
    Gaussian row of that scale (the latent model's own), from there on the fitted row
    `rows - SCALE_LEVELS` of `_quantized_cdf` (the names of CompressAI's layout, which `codec.rans` reads).
    """

    def __init__(self, layers: int, scale_levels: int, fitted: int, width: int) -> None:
        super().__init__()
        self.scale_levels = scale_levels
        self.register_buffer("rows", torch.zeros(layers, CONTEXTS, scale_levels, dtype=torch.int32))
        self.register_buffer("_quantized_cdf", torch.zeros(fitted, width, dtype=torch.int32))
        self.register_buffer("_cdf_length", torch.zeros(fitted, dtype=torch.int32))
        self.register_buffer("_offset", torch.zeros(fitted, dtype=torch.int32))

    @classmethod
    def like_state(cls, state_dict: dict[str, Tensor], prefix: str) -> FittedLatentTables:
        """Empty tables shaped as a stored state's (their sizes follow from the fit)."""
        layers, _, scale_levels = state_dict[prefix + "rows"].shape
        fitted, width = state_dict[prefix + "_quantized_cdf"].shape
        return cls(layers, scale_levels, fitted, width)

    def symbol_bits(self, gaussian: HasCdfTable, rows: Tensor, values: Tensor) -> Tensor:
        """What the coder pays for round(`values`) in `rows` (float, shaped like `values`), with the
        gradient of the cost curve interpolated between whole symbols: the encoder's search (codec.search)
        prices its moves with the tables the coder uses. `gaussian` holds the first `scale_levels` rows."""
        costs = self._costs(gaussian, values.device)
        rows = rows.long()
        below = torch.floor(values.detach()).clamp(-SPAN, SPAN - 1)
        fraction = values - below
        low = costs[rows, below.long() + SPAN]
        high = costs[rows, below.long() + SPAN + 1]
        interpolated = low + fraction * (high - low)
        exact = costs[rows, torch.round(values.detach()).clamp(-SPAN, SPAN).long() + SPAN]
        return interpolated + (exact - interpolated).detach()

    def _costs(self, gaussian: HasCdfTable, device: torch.device) -> Tensor:
        """Bits of every symbol in -SPAN … SPAN in every row of the coding table (`rans.tables`: the
        Gaussian rows, then the fitted ones); a symbol outside its row costs the escape and about 8
        bypass bits. Built once per table and device."""
        table = rans.tables(gaussian, self)
        cached = getattr(self, "_cost_cache", None)
        if cached is None or cached[0] is not table or cached[1] != device:
            costs = torch.stack([_row_bits(cdf, offset) for cdf, offset in zip(table.cdfs, table.offsets, strict=True)])
            self._cost_cache = (table, device, costs.to(device))
        return self._cost_cache[2]

    @property
    def fitted_cells(self) -> int:
        """How many (layer, context, scale) cells code with a fitted row."""
        return int(self.rows.ge(self.scale_levels).sum())

    def row_indexes(self, layer: int, contexts: Tensor, scale_rows: Tensor) -> Tensor:
        """The coding-table row of every latent (int32, shaped like `scale_rows`)."""
        table = self.rows[layer].reshape(-1).long().to(contexts.device)
        return table[contexts * self.scale_levels + scale_rows.long().to(contexts.device)].to(torch.int32)


def _row_bits(cdf: list[int], offset: int) -> Tensor:
    """One CDF row (CompressAI's layout: the last symbol is the escape) as bits per symbol in -SPAN … SPAN."""
    probabilities = torch.tensor(cdf, dtype=torch.float64).diff() / 2**PRECISION
    bits = -torch.log2(probabilities)
    symbols = torch.arange(-SPAN, SPAN + 1)
    values = symbols - offset
    inside = (values >= 0) & (values < len(bits) - 1)
    escape = bits[-1] + ESCAPE_BYPASS_BITS
    return torch.where(inside, bits[values.clamp(0, len(bits) - 2)], escape).float()


def latent_contexts(
    bands: Tensor,
    previous_magnitudes: Tensor | None,
    significance: Tensor | None,
    like: Tensor,
    neighbours: Callable[[Tensor], Tensor] = same_channel_neighbours,
) -> Tensor:
    """Band and history state of every latent as one context index, int64 shaped like `like` (N, C, h, w),
    on its device."""
    history = history_states(previous_magnitudes, significance, like, neighbours)
    return bands.to(like.device)[None, :, None, None] * HISTORY_STATES + history
