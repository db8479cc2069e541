"""Where the post-filter runs: windows of the assembled picture that reach across tile borders.

Each tile is coded alone, but the picture shown is the post-filter applied to the picture assembled
from every tile's padded reconstruction (docs/format.md, The picture shown), so the filter smooths a
tile border as it smooths any other block edge. The filter reaches a few pixels (`PostFilter.reach`),
so the shown pixels of some tiles follow from a window around them: those tiles and `HALO` pixels of
their neighbours. Windows start on the 16-pixel block grid, so the filter's block-grid input is the
same as over the whole picture, and so are the pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import Tensor

from codec.container import Tile
from codec.model import padded_size
from codec.transforms import BLOCK

# Pixels of the neighbouring tiles a window takes in on each side: one block.
HALO = BLOCK


@dataclass(frozen=True)
class FilterWindow:
    """A rectangle of the padded picture (the tiles' padded reconstructions side by side)."""

    x: int
    y: int
    width: int
    height: int
    tiles: tuple[Tile, ...]  # the tiles whose shown pixels it gives
    sources: tuple[Tile, ...]  # the tiles whose reconstructions reach into it

    @property
    def pixels(self) -> int:
        return self.width * self.height


def padded_rect(tile: Tile) -> tuple[int, int, int, int]:
    """(x, y, width, height) of a tile's padded reconstruction in the padded picture."""
    height, width = padded_size(tile.height, tile.width)
    return tile.x, tile.y, width, height


def filter_windows(picture: Iterable[Tile], tiles: Iterable[Tile], halo: int, max_pixels: int) -> list[FilterWindow]:
    """Windows that show `tiles`, some of the `picture`'s tiles, in raster order: runs of neighbouring
    tiles of a tile row, stacked with the runs below them of the same columns, each window within
    `max_pixels` where a single tile allows it."""
    picture = tuple(picture)
    right = max(x + w for x, _, w, _ in map(padded_rect, picture))
    bottom = max(y + h for _, y, _, h in map(padded_rect, picture))

    def extent(runs: list[list[Tile]]) -> tuple[int, int, int, int]:
        x0, y0, _, _ = padded_rect(runs[0][0])
        x1 = max(x + w for x, _, w, _ in map(padded_rect, runs[0]))
        y1 = max(y + h for _, y, _, h in map(padded_rect, runs[-1]))
        left, top = max(0, x0 - halo), max(0, y0 - halo)
        return left, top, min(right, x1 + halo) - left, min(bottom, y1 + halo) - top

    def fits(runs: list[list[Tile]]) -> bool:
        _, _, width, height = extent(runs)
        return width * height <= max_pixels

    runs: list[list[Tile]] = []  # adjacent tiles of one row, within max_pixels
    for tile in sorted(tiles, key=lambda t: t.index):
        last = runs[-1][-1] if runs else None
        if last is not None and last.y == tile.y and last.x + last.width == tile.x and fits([[*runs[-1], tile]]):
            runs[-1].append(tile)
        else:
            runs.append([tile])
    bands: list[list[list[Tile]]] = []  # runs stacked over the same columns
    for run in runs:
        below = next(
            (
                band
                for band in bands
                if (band[-1][0].x, band[-1][-1].x) == (run[0].x, run[-1].x)
                and band[-1][0].y + band[-1][0].height == run[0].y
                and fits([*band, run])
            ),
            None,
        )
        if below is None:
            bands.append([run])
        else:
            below.append(run)
    windows = []
    for band in bands:
        x, y, width, height = extent(band)
        sources = tuple(t for t in picture if _overlaps(padded_rect(t), (x, y, width, height)))
        windows.append(FilterWindow(x, y, width, height, tuple(t for run in band for t in run), sources))
    return sorted(windows, key=lambda w: (w.y, w.x))


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def assemble(window: FilterWindow, reconstructions: Mapping[int, Tensor]) -> Tensor:
    """The window's part of the padded picture (1, 3, height, width) from its sources' padded
    reconstructions (each (1, 3, h, w), by tile index)."""
    first = reconstructions[window.sources[0].index]
    canvas = first.new_empty(1, first.shape[1], window.height, window.width)
    for tile in window.sources:
        x, y, width, height = padded_rect(tile)
        left, top = max(x, window.x), max(y, window.y)
        right, bottom = min(x + width, window.x + window.width), min(y + height, window.y + window.height)
        canvas[:, :, top - window.y : bottom - window.y, left - window.x : right - window.x] = reconstructions[
            tile.index
        ][:, :, top - y : bottom - y, left - x : right - x]
    return canvas


def tile_part(shown: Tensor, window: FilterWindow, tile: Tile) -> Tensor:
    """A tile's pixels (1, 3, its height, its width) of the window's shown picture."""
    return shown[
        :, :, tile.y - window.y : tile.y - window.y + tile.height, tile.x - window.x : tile.x - window.x + tile.width
    ]
