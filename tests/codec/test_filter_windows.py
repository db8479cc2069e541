"""The post-filter across tile borders: windows of the assembled picture (codec.filter_windows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec import api
from codec.api import Decoder, encode, fresh_model
from codec.coding import to_pixels
from codec.container import parse_header, tile_grid
from codec.filter_windows import HALO, filter_windows, padded_rect
from codec.model import CodecConfig, ScalableCodec
from codec.postfilter import PostFilter
from tests.codec.conftest import natural_image


@pytest.fixture(scope="module")
def filtered() -> ScalableCodec:
    """An untrained codec with a post-filter that changes the picture (a fresh one adds nothing)."""
    torch.manual_seed(5)
    model = fresh_model(CodecConfig(post_filter_channels=8))
    with torch.no_grad():
        for parameter in model.post_filter.parameters():
            parameter.normal_(0, 0.2)
    return model


@pytest.fixture(scope="module")
def data(filtered: ScalableCodec) -> bytes:
    return encode(natural_image(150, 200, seed=4), filtered, layers=3, tile_size=64)


def test_the_filter_reaches_no_further_than_the_halo() -> None:
    torch.manual_seed(0)
    post_filter = PostFilter(layers=2, channels=4)
    with torch.no_grad():
        for parameter in post_filter.parameters():
            parameter.normal_(0, 0.5)
        picture = torch.rand(1, 3, 64, 64)
        moved = picture.clone()
        moved[0, :, 32, 32] += 1.0
        changed = (post_filter(moved, 0) - post_filter(picture, 0)).abs().amax(1)[0].nonzero()
    assert (changed - 32).abs().max().item() == post_filter.reach <= HALO


def test_windows_cover_the_tiles_asked_for_on_the_block_grid_and_take_in_their_neighbours() -> None:
    picture = tile_grid(200, 150, 64)  # 4 x 3 tiles; the last column and row are padded to 64
    whole = filter_windows(picture, picture, HALO, max_pixels=1 << 20)
    assert [(w.x, w.y, w.width, w.height) for w in whole] == [(0, 0, 256, 192)]
    assert whole[0].tiles == picture == whole[0].sources
    rows = filter_windows(picture, picture, HALO, max_pixels=256 * 96)
    assert [(w.x, w.y, w.width, w.height) for w in rows] == [(0, 0, 256, 80), (0, 48, 256, 96), (0, 112, 256, 80)]
    assert [t.index for t in rows[1].sources] == list(range(12))
    middle = filter_windows(picture, [picture[5]], HALO, max_pixels=1 << 20)
    assert [(w.x, w.y, w.width, w.height) for w in middle] == [(48, 48, 96, 96)]
    assert [t.index for t in middle[0].sources] == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    for window in rows + middle:
        assert window.x % 16 == 0 and window.y % 16 == 0


def _assembled_and_filtered(model: ScalableCodec, data: bytes, layers: int) -> np.ndarray:
    """The reference: every tile's padded reconstruction put together, filtered once as a whole."""
    header = parse_header(data)
    reconstructions = Decoder(data, model)._reconstructions(list(header.tiles), layers, every_layer=False)
    right = max(x + w for x, _, w, _ in map(padded_rect, header.tiles))
    bottom = max(y + h for _, y, _, h in map(padded_rect, header.tiles))
    picture = torch.zeros(1, 3, bottom, right, dtype=torch.float32)
    for tile in header.tiles:
        x, y, width, height = padded_rect(tile)
        picture[:, :, y : y + height, x : x + width] = reconstructions[tile.index][layers]
    return to_pixels(model.shown_picture(picture, layers), header.height, header.width).numpy()


def test_the_picture_shown_is_the_assembled_picture_filtered_whatever_the_windows(
    filtered: ScalableCodec, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    for layers in (1, 3):
        reference = _assembled_and_filtered(filtered, data, layers)
        assert np.abs(Decoder(data, filtered).decode(layers).astype(int) - reference).max() <= 1
        monkeypatch.setattr(api, "BATCH_PIXELS", 64 * 64)  # a window per tile
        assert np.abs(Decoder(data, filtered).decode(layers).astype(int) - reference).max() <= 1
        monkeypatch.undo()


def test_tiles_are_filtered_across_their_borders_and_a_region_matches_the_whole_picture(
    filtered: ScalableCodec, data: bytes
) -> None:
    shown = Decoder(data, filtered).decode(2).astype(int)
    # each tile filtered alone, as before: the same far from the borders, not next to them
    decoder = Decoder(data, filtered)
    reconstructions = decoder._reconstructions(list(decoder.header.tiles), 2, every_layer=False)
    tile = decoder.header.tiles[5]  # (64, 64) to (128, 128), inside the picture
    alone = to_pixels(filtered.shown_picture(reconstructions[5][2], 2), 64, 64).numpy().astype(int)
    inside = shown[tile.y : tile.y + 64, tile.x : tile.x + 64]
    reach = filtered.post_filter.reach
    assert np.abs(inside[reach:-reach, reach:-reach] - alone[reach:-reach, reach:-reach]).max() <= 1
    assert np.abs(inside[:2] - alone[:2]).max() > 2 and np.abs(inside[:, -2:] - alone[:, -2:]).max() > 2
    for region in [(70, 70, 10, 10), (60, 60, 10, 10), (130, 100, 70, 50), (0, 0, 200, 150)]:
        x, y, w, h = region
        fresh = Decoder(data, filtered)
        assert np.abs(fresh.decode(2, region).astype(int) - shown[y : y + h, x : x + w]).max() <= 1, region
    # a region inside tile 5 decodes it and the eight tiles around it, whose edges the filter reads
    fresh = Decoder(data, filtered)
    fresh.decode(2, (70, 70, 10, 10))
    assert fresh.iterations == 9 * 2


@pytest.mark.parametrize("window_pixels", [1 << 20, 64 * 64])
def test_every_layer_in_one_pass_with_the_filter_across_borders(
    filtered: ScalableCodec, data: bytes, window_pixels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    references = [Decoder(data, filtered).decode(n).astype(int) for n in (1, 2, 3)]
    monkeypatch.setattr(api, "BATCH_PIXELS", window_pixels)
    decoder = Decoder(data, filtered, state_budget=1, picture_budget=1)
    seen: dict[tuple[int, int], np.ndarray] = {}
    decoder.decode_every_layer(lambda tile, n, picture: seen.setdefault((tile.index, n), picture.copy()))
    assert decoder.iterations == 12 * 3  # every tile once, though the windows share them
    assert len(seen) == 12 * 3
    for (index, n), picture in seen.items():
        tile = decoder.header.tiles[index]
        part = references[n - 1][tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]
        assert np.abs(picture.astype(int) - part).max() <= 1
