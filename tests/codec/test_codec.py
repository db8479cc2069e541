"""Encode/decode behaviour of the codec with an untrained model."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec.api import Decoder, encode, fresh_model
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
from codec.model import ScalableCodec

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
    # distinct layers really change the picture
    assert not np.array_equal(images[0], images[-1])


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
    image = Image.fromarray(natural_image(40, 72))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    header = parse_header(encode(buffer.getvalue(), model, layers=1))
    assert (header.width, header.height) == (40, 72)


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


def test_payloads_that_pass_the_checksum_but_are_garbage_raise_codec_errors(
    model: ScalableCodec, small_bitstream: bytes
) -> None:
    from codec.errors import CodecError

    header = parse_header(small_bitstream)
    garbage = [b"\x01\x00\x00\x00", b"\xff" * 3, b"\x10\x00\x00\x00abc"] + [
        b"x" * entry.size for entry in header.layers[3:]
    ]
    data = serialize(model.model_id, header.width, header.height, garbage)
    decoder = Decoder(data, model)
    for n in range(1, 4):
        with pytest.raises(CodecError):
            decoder.decode(n)


DECODE_SCRIPT = """
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[3]))
from codec.api import Decoder, load_model
model = load_model(sys.argv[1])
data = open(sys.argv[2], "rb").read()
decoder = Decoder(data, model)
print(" ".join(hashlib.sha256(decoder.decode(n).tobytes()).hexdigest() for n in range(1, decoder.layers_available + 1)))
"""


def test_decoding_is_bit_identical_across_processes_and_thread_counts(
    model: ScalableCodec, weights_path: Path, small_bitstream: bytes, tmp_path: Path
) -> None:
    bitstream = tmp_path / "image.bin"
    bitstream.write_bytes(small_bitstream)
    here = " ".join(hashlib.sha256(image.tobytes()).hexdigest() for image in decode_all(small_bitstream, model))
    for threads in (1, 2, 4):
        result = subprocess.run(
            [sys.executable, "-c", DECODE_SCRIPT, str(weights_path), str(bitstream), str(threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.split() == here.split(), f"{threads} threads decode differently"


def test_encoding_is_deterministic(model: ScalableCodec, small_image: np.ndarray, small_bitstream: bytes) -> None:
    assert encode(small_image, model) == small_bitstream
