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

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from codec.transforms import BLOCK, zigzag_frequencies

# Bands are runs of zigzag diagonals (u + v): luma bands start at these diagonals, chroma bands
# (the two chroma axes share them) at those; the low frequencies, which carry most of the
# rate, get bands of their own.
LUMA_BAND_STARTS = (0, 1, 2, 3, 5, 8, 12)
CHROMA_BAND_STARTS = (0, 1, 4)
BANDS = len(LUMA_BAND_STARTS) + len(CHROMA_BAND_STARTS)
# What earlier layers sent at a latent's position: never a non-zero symbol there nor at a
# neighbour (3x3, same channel); never there but at a neighbour; there, but not in the last
# layer; there in the last layer.
HISTORY_STATES = 4
CONTEXTS = BANDS * HISTORY_STATES


def frequency_bands(luma: int, chroma: int) -> Tensor:
    """The band of every latent channel (luma, then the two chroma axes), int64 (C,)."""
    diagonals = torch.tensor([u + v for u, v in zigzag_frequencies(BLOCK)])
    luma_bands = torch.bucketize(diagonals[:luma], torch.tensor(LUMA_BAND_STARTS), right=True) - 1
    chroma_bands = torch.bucketize(diagonals[:chroma], torch.tensor(CHROMA_BAND_STARTS), right=True) - 1
    chroma_bands = chroma_bands + len(LUMA_BAND_STARTS)
    return torch.cat([luma_bands, chroma_bands, chroma_bands])


def history_states(previous_magnitudes: Tensor | None, significance: Tensor | None, like: Tensor) -> Tensor:
    """The history state (0 … HISTORY_STATES - 1) of every latent, int64 shaped like `like`, from
    the recurrent state's integer history (None before the first layer)."""
    if significance is None or previous_magnitudes is None:
        return torch.zeros(like.shape, dtype=torch.int64)
    significance = significance.cpu()
    near = F.max_pool2d(significance.double(), 3, stride=1, padding=1) > 0
    sent = torch.where(previous_magnitudes.cpu() > 0, 3, 2)
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

    def row_indexes(self, layer: int, contexts: Tensor, scale_rows: Tensor) -> Tensor:
        """The coding-table row of every latent (int32, shaped like `scale_rows`)."""
        table = self.rows[layer].reshape(-1).long()
        return table[contexts * self.scale_levels + scale_rows.long()].to(torch.int32)


def latent_contexts(
    bands: Tensor, previous_magnitudes: Tensor | None, significance: Tensor | None, like: Tensor
) -> Tensor:
    """Band and history state of every latent as one context index, int64 shaped like `like` (N, C, h, w)."""
    history = history_states(previous_magnitudes, significance, like)
    return bands[None, :, None, None] * HISTORY_STATES + history
