"""Encode/decode behaviour of the codec with an untrained model."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec.api import DEFAULT_WEIGHTS, Decoder, encode, fresh_model, load_model
from codec.container import parse_header, serialize
from codec.errors import (
    BadMagicError,
    ChecksumError,
    InvalidImageError,
    ModelMismatchError,
    TruncatedHeaderError,
    TruncatedLayerError,
    UnsupportedVersionError,
)
from codec.imageio import read_image
from codec.model import ScalableCodec
from codec.quality import psnr
from tests.legacy_files import version_2_file

from .conftest import natural_image


def decode_all(data: bytes, model: ScalableCodec) -> list[np.ndarray]:
    decoder = Decoder(data, model)
    return [decoder.decode(n).copy() for n in range(1, decoder.layers_available + 1)]


def test_round_trip_at_every_layer(model: ScalableCodec, small_image: np.ndarray, small_bitstream: bytes) -> None:
    header = parse_header(small_bitstream)
    assert header.layer_count == model.config.layers
    assert (header.height, header.width) == small_image.shape[:2]
    assert header.model_id == model.model_id
    images = decode_all(small_bitstream, model)
    assert len(images) == model.config.layers
    for image in images:
        assert image.shape == small_image.shape and image.dtype == np.uint8
    # every layer brings the picture closer to the source (the untrained model gives about 30.0, 30.6, 31.2,
    # 31.8, 32.2 and 32.5 dB here), and the first layer is already a picture of it, not noise
    quality = [psnr(small_image, image) for image in images]
    assert quality[0] > 25, quality
    assert all(later > earlier for earlier, later in zip(quality, quality[1:])), quality


def test_prefix_property_for_every_layer(model: ScalableCodec, small_bitstream: bytes) -> None:
    header = parse_header(small_bitstream)
    whole = Decoder(small_bitstream, model)
    for n in range(1, header.layer_count + 1):
        prefix = small_bitstream[: header.end_of_layer(n)]
        partial = Decoder(prefix, model)
        assert partial.layers_available == n
        assert np.array_equal(partial.decode(), whole.decode(n))


def test_incremental_decode_equals_from_scratch(model: ScalableCodec, small_bitstream: bytes) -> None:
    layers = parse_header(small_bitstream).layer_count
    incremental = Decoder(small_bitstream, model)
    stepwise = [incremental.decode(n).copy() for n in range(1, layers + 1)]
    for n in range(1, layers + 1):
        assert np.array_equal(Decoder(small_bitstream, model).decode(n), stepwise[n - 1])
    # going back to fewer layers re-decodes from scratch and agrees too
    assert np.array_equal(incremental.decode(2), stepwise[1])


def test_bytes_may_arrive_in_pieces(model: ScalableCodec, small_bitstream: bytes) -> None:
    header = parse_header(small_bitstream)
    decoder = Decoder(b"", model)
    reference = Decoder(small_bitstream, model)
    for n in range(1, header.layer_count + 1):
        start = header.end_of_layer(n - 1) if n > 1 else 0
        decoder.feed(small_bitstream[start : header.end_of_layer(n)])
        assert decoder.layers_available == n
        assert np.array_equal(decoder.decode(n), reference.decode(n))
        assert decoder.layers_decoded == n


@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (1000, 3), (3, 1000)])
def test_any_image_size(model: ScalableCodec, shape: tuple[int, int]) -> None:
    image = natural_image(*shape, seed=shape[0])
    data = encode(image, model, layers=2)
    decoded = Decoder(data, model).decode()
    assert decoded.shape == (*shape, 3)
    # the picture itself, not only its size: the untrained model gives 29 to 43 dB on these, a constant
    # picture of the mean 17 to 29 dB
    constant = np.full_like(image, round(float(image.mean())))
    assert psnr(image, decoded) > 24
    assert psnr(image, decoded) > psnr(image, constant) + 5


def test_tiles_decode_alone_and_regions_are_crops_of_the_whole(model: ScalableCodec) -> None:
    image = natural_image(150, 200, seed=4)
    data = encode(image, model, layers=3, tile_size=64)
    header = parse_header(data)
    assert (header.tile_size, len(header.tiles)) == (64, 12)
    whole = Decoder(data, model)
    for n in (1, 3):
        full = whole.decode(n).copy()
        for region in [(0, 0, 200, 150), (10, 20, 1, 1), (60, 60, 10, 10), (130, 100, 70, 50), (64, 64, 64, 64)]:
            x, y, w, h = region
            fresh = Decoder(data, model)
            assert np.array_equal(fresh.decode(n, region), full[y : y + h, x : x + w]), region
    # a region decodes only the tiles it touches: one tile for a 10x10 region inside tile 5
    fresh = Decoder(data, model)
    fresh.decode(3, (70, 70, 10, 10))
    assert fresh.iterations == 3


def test_a_state_budget_bounds_memory_and_re_decodes_dropped_tiles(model: ScalableCodec) -> None:
    image = natural_image(150, 200, seed=4)
    data = encode(image, model, layers=2, tile_size=64)
    reference = Decoder(data, model).decode(2)
    small = Decoder(data, model, state_budget=1, picture_budget=1)  # room for one tile's state, no pictures
    assert np.array_equal(small.decode(2), reference)
    assert len(small._states) == 1 and small.iterations == 24  # 12 tiles x 2 layers
    assert np.array_equal(small.decode(2, (0, 0, 10, 10)), reference[:10, :10])
    assert small.iterations == 26  # tile 0 was dropped: decoded again from layer 1


def test_every_layer_of_every_tile_in_one_pass_within_the_budgets(model: ScalableCodec) -> None:
    image = natural_image(150, 200, seed=4)
    data = encode(image, model, layers=3, tile_size=64)
    references = [Decoder(data, model).decode(n) for n in (1, 2, 3)]
    seen: dict[tuple[int, int], np.ndarray] = {}
    # no room for states or pictures: decode(n) for each n would start every tile again from layer 1
    decoder = Decoder(data, model, state_budget=1, picture_budget=1)
    decoder.decode_every_layer(lambda tile, n, picture: seen.setdefault((tile.index, n), picture.copy()))
    assert decoder.iterations == 36 and decoder.layers_decoded == 3  # 12 tiles x 3 layers, each once
    tiles = {tile.index: tile for tile in parse_header(data).tiles}
    assert sorted(seen) == [(index, n) for index in range(12) for n in (1, 2, 3)]
    for (index, n), picture in seen.items():
        tile = tiles[index]
        assert np.array_equal(picture, references[n - 1][tile.y : tile.y + tile.height, tile.x : tile.x + tile.width])
    with pytest.raises(ValueError, match="decoded nothing"):
        decoder.decode_every_layer(lambda tile, n, picture: None)
    with pytest.raises(ValueError, match="layers"):
        Decoder(data, model).decode_every_layer(lambda tile, n, picture: None, layers=4)


def test_going_back_to_a_layer_shown_before_costs_nothing(model: ScalableCodec) -> None:
    data = encode(natural_image(150, 200, seed=4), model, layers=3, tile_size=64)
    decoder = Decoder(data, model)
    third = decoder.decode(3).copy()
    assert decoder.iterations == 36  # 12 tiles x 3 layers, once
    first = decoder.decode(1).copy()  # only passed through on the way to layer 3: decoded again
    assert decoder.iterations == 48
    second = decoder.decode(2).copy()  # on from the first layer just held
    assert decoder.iterations == 60
    assert np.array_equal(decoder.decode(3), third) and np.array_equal(decoder.decode(1), first)
    assert decoder.iterations == 60  # both shown before: from the pictures kept
    fresh = Decoder(data, model)
    assert np.array_equal(fresh.decode(1), first) and np.array_equal(fresh.decode(2), second)


@pytest.mark.parametrize(
    "region", [(-1, 0, 5, 5), (0, 0, 0, 5), (0, 0, 113, 1), (100, 70, 20, 20), (0, 0, 5), (0.5, 0, 5, 5)]
)
def test_regions_outside_the_picture_are_refused(model: ScalableCodec, small_bitstream: bytes, region) -> None:
    with pytest.raises(ValueError, match="region"):
        Decoder(small_bitstream, model).decode(1, region)


def test_a_tiled_encode_reports_progress_per_tile_and_layer(model: ScalableCodec) -> None:
    seen: list[tuple[int, int]] = []
    encode(
        natural_image(70, 130), model, layers=2, tile_size=64, progress=lambda done, total: seen.append((done, total))
    )
    assert seen == [(done, 12) for done in range(1, 13)]  # 3 x 2 tiles, 2 layers each


def test_layers_argument(model: ScalableCodec, small_image: np.ndarray, small_bitstream: bytes) -> None:
    data = encode(small_image, model, layers=2)
    assert parse_header(data).layer_count == 2
    # the same first two layers as the full encode: layers are independent of later ones
    full = parse_header(small_bitstream)
    assert data[parse_header(data).header_bytes :] == small_bitstream[full.header_bytes : full.end_of_layer(2)]
    with pytest.raises(ValueError):
        encode(small_image, model, layers=0)
    with pytest.raises(ValueError):
        encode(small_image, model, layers=model.config.layers + 1)


def _png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _decoded_first_layer(model: ScalableCodec, source: bytes) -> np.ndarray:
    return Decoder(encode(source, model, layers=1), model).decode()


def test_grayscale_input(model: ScalableCodec, small_image: np.ndarray) -> None:
    gray = Image.fromarray(small_image).convert("L")
    decoded = _decoded_first_layer(model, _png(gray))
    assert decoded.shape == (*small_image.shape[:2], 3)
    # the grey picture in all three channels (about 34 dB with the untrained model), much closer to it than
    # to the colour original or to a constant grey
    expected = np.repeat(np.asarray(gray)[:, :, None], 3, axis=2)
    quality = psnr(expected, decoded)
    assert quality > 28
    assert quality > psnr(expected, np.full_like(expected, round(float(expected.mean())))) + 5
    assert quality > psnr(small_image, decoded) + 10  # about 17 dB against the colour original


def test_rgba_input_drops_alpha(model: ScalableCodec, small_image: np.ndarray) -> None:
    rgba = np.dstack([small_image, np.full(small_image.shape[:2], 7, np.uint8)])
    from_rgba = encode(_png(Image.fromarray(rgba, "RGBA")), model, layers=1)
    from_rgb = encode(small_image, model, layers=1)
    assert from_rgba == from_rgb


def test_palette_input(model: ScalableCodec, small_image: np.ndarray) -> None:
    palette = Image.fromarray(small_image).quantize(64)
    expected = np.asarray(palette.convert("RGB"))
    assert encode(_png(palette), model, layers=1) == encode(expected, model, layers=1)


def test_sixteen_bit_input(model: ScalableCodec, small_image: np.ndarray) -> None:
    gray8 = np.asarray(Image.fromarray(small_image).convert("L")).astype(np.uint16)
    gray16 = Image.fromarray(gray8 * 257)  # mode I;16
    assert gray16.mode.startswith("I;16")
    expected = np.repeat(gray8.astype(np.uint8)[:, :, None], 3, axis=2)
    assert encode(_png(gray16), model, layers=1) == encode(expected, model, layers=1)


def test_exif_orientation_is_applied(model: ScalableCodec) -> None:
    stored = natural_image(40, 72) // 3  # dark, with a bright top-left corner: only one rotation fits
    stored[:12, :12] = 255
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    data = encode(buffer.getvalue(), model, layers=1)
    header = parse_header(data)
    assert (header.width, header.height) == (40, 72)
    decoded = Decoder(data, model).decode().astype(float)
    # orientation 6 turns the stored top-left corner into the displayed top-right one
    corners = {
        "top left": decoded[:12, :12],
        "top right": decoded[:12, -12:],
        "bottom left": decoded[-12:, :12],
        "bottom right": decoded[-12:, -12:],
    }
    brightness = {name: float(block.mean()) for name, block in corners.items()}
    assert brightness["top right"] > 200, brightness
    assert all(value < 100 for name, value in brightness.items() if name != "top right"), brightness


@pytest.mark.parametrize("source", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30])
def test_invalid_images_raise_invalid_image_error(model: ScalableCodec, source: bytes) -> None:
    with pytest.raises(InvalidImageError):
        encode(source, model)


def test_decode_errors(model: ScalableCodec, small_bitstream: bytes) -> None:
    header = parse_header(small_bitstream)
    with pytest.raises(BadMagicError):
        Decoder(b"JUNK" + small_bitstream[4:], model).decode()
    versioned = bytearray(small_bitstream)
    versioned[4] = 7
    with pytest.raises(UnsupportedVersionError):
        Decoder(bytes(versioned), model).decode()
    with pytest.raises(TruncatedHeaderError):
        Decoder(small_bitstream[:20], model).decode()
    truncated = Decoder(small_bitstream[: header.end_of_layer(2) + 5], model)
    assert truncated.layers_available == 2
    with pytest.raises(TruncatedLayerError):
        truncated.decode(3)
    flipped = bytearray(small_bitstream)
    flipped[header.layers[1].offset + 3] ^= 0x20
    decoder = Decoder(bytes(flipped), model)
    decoder.decode(1)  # layers before the damage still decode
    with pytest.raises(ChecksumError):
        decoder.decode(2)


def test_weights_that_differ_from_the_files_model_are_refused(small_bitstream: bytes) -> None:
    other = fresh_model(seed=1)
    with pytest.raises(ModelMismatchError):
        Decoder(small_bitstream, other)


def test_version_2_files_decode_to_the_symbols_and_pixels_of_version_3(model: ScalableCodec) -> None:
    """Files written before one string per tile and layer still read, and cost 10 bytes more per tile and
    layer (the second flush and the side string's length): what version 3 saves."""
    image = natural_image(200, 330, seed=4)
    current = encode(image, model, tile_size=128)
    older = version_2_file(current, model)
    old_header, header = parse_header(older), parse_header(current)
    assert (old_header.version, header.version) == (2, 3)
    new_decoder, old_decoder = Decoder(current, model), Decoder(older, model)
    for n in range(1, header.layer_count + 1):
        assert np.array_equal(old_decoder.decode(n), new_decoder.decode(n))
        assert old_decoder.symbol_checksum(n) == new_decoder.symbol_checksum(n)
    extra = [old.size - new.size for old, new in zip(old_header.layers, header.layers, strict=True)]
    tiles = len(header.tiles)
    assert all(8 * tiles <= more <= 16 * tiles for more in extra), (extra, tiles)


def test_payloads_that_pass_the_checksum_but_are_garbage_raise_codec_errors(
    model: ScalableCodec, small_bitstream: bytes
) -> None:
    from codec.errors import CodecError

    header = parse_header(small_bitstream)
    garbage = [[b"\x01\x00\x00\x00"], [b"\xff" * 3], [b"\x10\x00\x00\x00abc"]] + [
        [b"x" * entry.size] for entry in header.layers[3:]
    ]
    data = serialize(model.model_id, header.width, header.height, header.tile_size, garbage)
    decoder = Decoder(data, model)
    for n in range(1, 4):
        with pytest.raises(CodecError):
            decoder.decode(n)


DECODE_SCRIPT = """
import sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from codec.api import Decoder, load_model
model = load_model(sys.argv[1], runtime=sys.argv[5])
decoder = Decoder(open(sys.argv[2], "rb").read(), model)
np.save(sys.argv[4], np.stack([decoder.decode(n) for n in range(1, decoder.layers_available + 1)]))
print(" ".join(str(decoder.symbol_checksum(n)) for n in range(1, decoder.layers_available + 1)))
"""
PARROTS = Path(__file__).resolve().parents[1] / "data" / "kodim23-384x256.png"


def decode_in_a_fresh_process(
    bitstream: Path, threads: int, out: Path, runtime: str = "onnx"
) -> tuple[list[str], np.ndarray]:
    result = subprocess.run(
        [sys.executable, "-c", DECODE_SCRIPT, str(DEFAULT_WEIGHTS), str(bitstream), str(threads), str(out), runtime],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split(), np.load(out)


def test_symbols_are_identical_and_pixels_within_one_across_processes_thread_counts_and_runtimes(
    tmp_path: Path,
) -> None:
    """The shipped weights on a Kodak picture, where float32 rounding really differs between thread counts
    (in torch) and between ONNX Runtime and torch."""
    shipped = load_model()
    bitstream = tmp_path / "parrots.bin"
    bitstream.write_bytes(encode(read_image(PARROTS), shipped))
    runs = {
        (runtime, threads): decode_in_a_fresh_process(bitstream, threads, tmp_path / f"{runtime}{threads}.npy", runtime)
        for runtime, threads in (("onnx", 1), ("onnx", 2), ("onnx", 4), ("torch", 1), ("torch", 2))
    }
    symbols, pixels = runs[("onnx", 1)]
    assert len(symbols) == shipped.config.layers
    for run, (other_symbols, other_pixels) in runs.items():
        assert other_symbols == symbols, f"{run} decodes other symbols"
        difference = np.abs(other_pixels.astype(int) - pixels.astype(int))
        assert difference.max() <= 1, f"{run}: pixels differ by {difference.max()}"
    # negative control: the tolerance is exercised (float32 does round differently in another runtime or
    # with other thread counts), and a different bitstream gives different symbols at every layer
    assert any(not np.array_equal(p, pixels) for _, p in runs.values()), "no run changed any pixel"
    other = tmp_path / "other.bin"
    other.write_bytes(encode(np.ascontiguousarray(read_image(PARROTS)[:, ::-1]), shipped))
    flipped_symbols, _ = decode_in_a_fresh_process(other, 1, tmp_path / "other.npy")
    assert all(a != b for a, b in zip(flipped_symbols, symbols))


def test_files_written_in_float64_and_float32_decode_to_the_same_symbols() -> None:
    """The bitstream is the contract: whichever float precision wrote a file, any decoder reads the same symbols."""
    float32 = load_model()
    float64 = load_model().double()
    image = read_image(PARROTS)[:128, :192]
    for writer in (float32, float64):
        data = encode(image, writer)
        readers = [Decoder(data, reader) for reader in (float32, float64)]
        pictures = [reader.decode() for reader in readers]
        for n in range(1, float32.config.layers + 1):
            assert readers[0].symbol_checksum(n) == readers[1].symbol_checksum(n)
        assert np.abs(pictures[0].astype(int) - pictures[1].astype(int)).max() <= 1


def test_encoding_is_deterministic(model: ScalableCodec, small_image: np.ndarray, small_bitstream: bytes) -> None:
    assert encode(small_image, model) == small_bitstream


@pytest.mark.parametrize("tile_size", [0, 100, -64])
def test_a_tile_size_that_cannot_be_written_is_refused_before_any_coding(model: ScalableCodec, tile_size: int) -> None:
    seen: list[tuple[int, int]] = []
    with pytest.raises(ValueError, match="multiple of 64"):
        encode(natural_image(70, 130), model, layers=1, tile_size=tile_size, progress=lambda *done: seen.append(done))
    assert seen == []


def test_weights_files_leave_out_the_latent_tables_and_load_to_the_same_model(
    model: ScalableCodec, weights_path: Path, small_bitstream: bytes, small_image: np.ndarray
) -> None:
    """The latent model's CDFs follow from the fixed scale table: rebuilt at load, bit for bit."""
    import torch

    from codec.model import DERIVED_TABLES

    stored = torch.load(weights_path, weights_only=False)["state_dict"]
    assert not set(DERIVED_TABLES) & set(stored)
    for name in DERIVED_TABLES:
        assert getattr(model.latent_model, name.split(".")[1]).numel() > 0
    np.testing.assert_array_equal(
        Decoder(small_bitstream, model).decode(), Decoder(encode(small_image, model), model).decode()
    )
