"""A fixed CDF 9/7 wavelet in four levels, as an alternative to the lapped 16x16 transform.

JPEG 2000's edge over one 16x16 basis is its multi-scale support: smooth areas get the wide
low-pass bases, edges the short high-pass ones. Four levels divide the picture by 16, so the
coefficients line up on the lapped transform's 1/16 grid and everything after the transform
(refiners, hyperprior, entropy coder) is unchanged.

Each colour axis (the orthonormal axes of `codec.transforms.COLOUR`) gives 256 coefficients per
16x16 block, ordered coarse to fine: LL4, HL4, LH4, HH4, then level 3's three bands (2x2 per
block each), level 2's (4x4) and level 1's (8x8). A codec keeps the first `luma` of the luma axis
and the first `chroma` of each chroma axis, so a count must end a whole level (`WAVELET_COUNTS`).
The lifting steps (Daubechies and Sweldens) run on the tile alone with whole-sample symmetric
extension, and are scaled so that the transform is close to orthonormal, like the lapped one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from codec.transforms import BLOCK, COLOUR

LEVELS = 4
assert 2**LEVELS == BLOCK
# per colour axis: LL4 alone, then all of level 4, 3, 2 and 1
WAVELET_COUNTS = (1, 4, 16, 64, 256)
_ALPHA, _BETA, _GAMMA, _DELTA = -1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971
_K = 1.230174104914001
_LOW_GAIN, _HIGH_GAIN = math.sqrt(2) / _K, _K / math.sqrt(2)


def _next(v: Tensor) -> Tensor:
    return torch.cat([v[..., 1:], v[..., -1:]], -1)


def _previous(v: Tensor) -> Tensor:
    return torch.cat([v[..., :1], v[..., :-1]], -1)


def _analyse_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """One level along the last axis: (low, high), each half as long."""
    even, odd = x[..., 0::2], x[..., 1::2]
    odd = odd + _ALPHA * (even + _next(even))
    even = even + _BETA * (odd + _previous(odd))
    odd = odd + _GAMMA * (even + _next(even))
    even = even + _DELTA * (odd + _previous(odd))
    return even * _LOW_GAIN, odd * _HIGH_GAIN


def _synthesise_rows(low: Tensor, high: Tensor) -> Tensor:
    even, odd = low / _LOW_GAIN, high / _HIGH_GAIN
    even = even - _DELTA * (odd + _previous(odd))
    odd = odd - _GAMMA * (even + _next(even))
    even = even - _BETA * (odd + _previous(odd))
    odd = odd - _ALPHA * (even + _next(even))
    return torch.stack([even, odd], -1).flatten(-2)


def _analyse_2d(x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    low, high = _analyse_rows(x)
    ll, lh = _analyse_rows(low.transpose(-1, -2))
    hl, hh = _analyse_rows(high.transpose(-1, -2))
    return ll.transpose(-1, -2), (hl.transpose(-1, -2), lh.transpose(-1, -2), hh.transpose(-1, -2))


def _synthesise_2d(ll: Tensor, bands: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    hl, lh, hh = bands
    low = _synthesise_rows(ll.transpose(-1, -2), lh.transpose(-1, -2)).transpose(-1, -2)
    high = _synthesise_rows(hl.transpose(-1, -2), hh.transpose(-1, -2)).transpose(-1, -2)
    return _synthesise_rows(low, high)


def synthesis_constants() -> dict:
    """What a float decoder elsewhere (static/decoder/wavelet.js) needs to run `WaveletSynthesis` as this
    module does: the levels, the lifting steps in analysis order, the two gains and the colour axes."""
    return {
        "levels": LEVELS,
        "lifting": [_ALPHA, _BETA, _GAMMA, _DELTA],
        "low_gain": _LOW_GAIN,
        "high_gain": _HIGH_GAIN,
        "colour": [list(row) for row in COLOUR],
    }


def check_coefficient_counts(luma: int, chroma: int) -> None:
    if luma not in WAVELET_COUNTS or chroma not in WAVELET_COUNTS:
        raise ValueError(f"a wavelet codec keeps whole levels: coefficient counts from {WAVELET_COUNTS}")


def checkerboard_first_pass(luma: int, chroma: int, height: int, width: int) -> Tensor:
    """True for the latents of a two-pass context's first pass, shape (luma + 2 * chroma, height, width):
    a checkerboard of every band (He et al. 2021, per band), so that each second-pass coefficient's four
    neighbours in its band are known when it is decoded. Level 3's to level 1's bands hold a cell of
    coefficients per block, so their checkerboard is a choice of channels; level 4 has one coefficient
    a block per band, so its checkerboard runs over the blocks of the tile."""
    rows, columns = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    blocks = ((rows + columns) % 2 == 0)[None]
    first = []
    for count in (luma, chroma, chroma):
        axis = [blocks.expand(4, height, width)]
        for level in reversed(range(LEVELS - 1)):
            factor = 2 ** (LEVELS - 1 - level)
            cell = torch.tensor([(i + j) % 2 == 0 for i in range(factor) for j in range(factor)])
            axis.append(cell.repeat(3)[:, None, None].expand(-1, height, width))
        first.append(torch.cat(axis)[:count])
    return torch.cat(first)


def _bands(count: int) -> list[tuple[int, int]]:
    """(first coefficient, cell factor) of each band one axis keeps, coarse to fine: LL4, then each level's
    HL, LH and HH."""
    bands, at = [(0, 1)], 1
    for level in reversed(range(LEVELS)):
        factor = 2 ** (LEVELS - 1 - level)
        for _ in range(3):
            if at < count:
                bands.append((at, factor))
            at += factor * factor
    return bands


def significant_neighbours(significance: Tensor, luma: int, chroma: int) -> Tensor:
    """Whether a latent's 3x3 neighbourhood in its own band's grid (across block borders), or its parent in the
    next coarser band of the same orientation, had a non-zero symbol: bool shaped like `significance`
    (N, luma + 2 * chroma, h, w). The fitted tables' history context (codec.symbol_tables) on a wavelet: a
    level-1 coefficient's neighbours are other channels of its block, not the same channel of the next block."""
    near = torch.zeros(significance.shape, dtype=torch.bool, device=significance.device)
    first = 0
    for count in (luma, chroma, chroma):
        grids: dict[tuple[int, int], Tensor] = {}
        for index, (at, factor) in enumerate(_bands(count)):
            cells = significance[:, first + at : first + at + factor * factor].double()
            grid = F.pixel_shuffle(cells, factor) if factor > 1 else cells
            found = F.max_pool2d(grid, 3, stride=1, padding=1) > 0
            orientation = (index - 1) % 3
            parent = grids.get((factor // 2, orientation))
            if parent is not None:
                found |= F.interpolate(parent, scale_factor=2, mode="nearest") > 0
            if index > 0:
                grids[(factor, orientation)] = grid
            packed = F.pixel_unshuffle(found.double(), factor) > 0 if factor > 1 else found
            near[:, first + at : first + at + factor * factor] = packed
        first += count
    return near


class WaveletAnalysis(nn.Module):
    """Image (3 channels) to wavelet coefficients at 1/16 resolution (the module docstring's order)."""

    def __init__(self, luma: int, chroma: int) -> None:
        super().__init__()
        check_coefficient_counts(luma, chroma)
        self.luma, self.chroma = luma, chroma
        self.register_buffer("colour", torch.tensor(COLOUR, dtype=torch.float64), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        n, _, height, width = image.shape
        x = torch.einsum("ij,njhw->nihw", self.colour.to(image), image)
        levels = []
        for _ in range(LEVELS):
            x, bands = _analyse_2d(x)
            levels.append(bands)
        parts = [x[:, :, None]]
        for level in reversed(range(LEVELS)):
            factor = 2 ** (LEVELS - 1 - level)
            for band in levels[level]:
                packed = F.pixel_unshuffle(band, factor) if factor > 1 else band
                parts.append(packed.reshape(n, 3, factor * factor, height // BLOCK, width // BLOCK))
        axes = torch.cat(parts, 2)
        return torch.cat([axes[:, 0, : self.luma], axes[:, 1, : self.chroma], axes[:, 2, : self.chroma]], 1)


class WaveletSynthesis(nn.Module):
    """Wavelet coefficients back to an image; the coefficients a codec does not keep are zero."""

    def __init__(self, luma: int, chroma: int) -> None:
        super().__init__()
        check_coefficient_counts(luma, chroma)
        self.luma, self.chroma = luma, chroma
        self.register_buffer("colour", torch.tensor(COLOUR, dtype=torch.float64), persistent=False)

    def forward(self, coefficients: Tensor) -> Tensor:
        n, _, height, width = coefficients.shape
        luma, chroma = self.luma, self.chroma
        kept = coefficients.split([luma, chroma, chroma], 1)
        axes = torch.stack([F.pad(axis, (0, 0, 0, 0, 0, BLOCK * BLOCK - axis.shape[1])) for axis in kept], 1)
        x = axes[:, :, 0]
        at = 1
        for level in reversed(range(LEVELS)):
            factor = 2 ** (LEVELS - 1 - level)
            bands = []
            for _ in range(3):
                packed = axes[:, :, at : at + factor * factor].reshape(n, 3 * factor * factor, height, width)
                bands.append(F.pixel_shuffle(packed, factor) if factor > 1 else packed)
                at += factor * factor
            x = _synthesise_2d(x, (bands[0], bands[1], bands[2]))
        return torch.einsum("ij,nihw->njhw", self.colour.to(x), x)
