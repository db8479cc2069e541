"""Per-layer entropy coding: one RNN iteration in, one layer's bytes out.

A layer's payload is the side-information string (z_k) and the latent string
(y_k), both from CompressAI's rANS coder:

    u32 little-endian length of the side string | side string | latent string

The entropy parameters of y_k come from the hyper-decoder in exact mode, so
the encoder and any decoder derive the same CDF rows bit for bit. With a
frequency context the latent string holds two passes in one rANS stream:
first the low-frequency channels (`first_pass_mask`), then the rest, each in
(channel, row, column) order; the second pass's parameters depend on the
first's symbols.
"""

from __future__ import annotations

import struct
import zlib

import torch
from compressai.ans import RansDecoder
from torch import Tensor

from codec import rans
from codec.errors import CorruptLayerError
from codec.model import SIDE_STRIDE, RecurrentState, ScalableCodec, first_pass_mask, quantized_scale_index

_SIDE_LENGTH = struct.Struct("<I")


@torch.no_grad()
def encode_layer(
    model: ScalableCodec, image: Tensor, state: RecurrentState, latent_offset: Tensor | None = None
) -> bytes:
    """Code the next layer of `image` (padded, (1, 3, H, W) in [0, 1]), its latents moved by the
    encoder-side search's `latent_offset` if one is given."""
    k = state.layer
    latents = model.analyse(image, state)
    if latent_offset is not None:
        latents = latents + latent_offset
    side = model.side_information(latents, state)
    side_model = model.side_models[k]
    medians = rans.side_medians(side_model)
    side_symbols = torch.round(side - medians)
    side_string = rans.encode(side_symbols, rans.side_indexes(side_model, side.shape), side_model)
    side_hat = side_symbols + medians
    scale_index, means = model.entropy_parameters(side_hat.double(), state, exact_mode=True)
    latents = latents.cpu().double()
    if model.context is None:
        symbols = torch.round(latents - means)
        latent_string = rans.encode(symbols, quantized_scale_index(scale_index), model.latent_model)
    else:
        first = first_pass_mask(model.config, latents)
        first_symbols = torch.round(latents - means) * first
        scale_index, means = model.context_parameters(first_symbols, scale_index, means, state, exact_mode=True)
        symbols = torch.round(latents - means)
        indexes = quantized_scale_index(scale_index)
        latent_string = rans.encode(_in_pass_order(symbols, first), _in_pass_order(indexes, first), model.latent_model)
    model.synthesise(symbols + means, state)
    return _SIDE_LENGTH.pack(len(side_string)) + side_string + latent_string


def _in_pass_order(values: Tensor, first: Tensor) -> Tensor:
    """(1, C, h, w) to (C*h*w,): the first pass, then the rest, each in tensor order."""
    first = first.expand_as(values)
    return torch.cat([values[first], values[~first]])


def _decode_symbols(model: ScalableCodec, latent_string: bytes, side_hat: Tensor, state: RecurrentState) -> Tensor:
    """round(y_k - mean) from its string: one pass, or the frequency context's two passes from one rANS stream.

    Leaves the means in `state.means`."""
    scale_index, means = model.entropy_parameters(side_hat.double(), state, exact_mode=True)
    if model.context is None:
        return rans.decode(latent_string, quantized_scale_index(scale_index), model.latent_model)
    stream = RansDecoder()
    stream.set_stream(latent_string)
    first = first_pass_mask(model.config, scale_index).expand_as(scale_index)
    symbols = torch.zeros(scale_index.shape, dtype=torch.int32)
    symbols[first] = rans.decode_next(stream, quantized_scale_index(scale_index)[first], model.latent_model)
    scale_index, _ = model.context_parameters(symbols.double(), scale_index, means, state, exact_mode=True)
    symbols[~first] = rans.decode_next(stream, quantized_scale_index(scale_index)[~first], model.latent_model)
    return symbols


def symbol_checksum(side_symbols: Tensor, latent_symbols: Tensor) -> int:
    """CRC-32 of a layer's rANS symbols (int32 little-endian, side then latents).

    Float rounding never reaches the symbols, so this is the same on every
    machine, thread count and device: what the determinism tests compare.
    """
    crc = zlib.crc32(side_symbols.to(torch.int32).cpu().numpy().astype("<i4").tobytes())
    return zlib.crc32(latent_symbols.to(torch.int32).cpu().numpy().astype("<i4").tobytes(), crc)


@torch.no_grad()
def decode_layer(model: ScalableCodec, payload: bytes, state: RecurrentState) -> int:
    """Decode the next layer from `payload`, update `state` in place; the layer's `symbol_checksum`."""
    k = state.layer
    if len(payload) < _SIDE_LENGTH.size:
        raise CorruptLayerError(f"layer {k + 1} payload is {len(payload)} bytes, too short")
    (side_length,) = _SIDE_LENGTH.unpack_from(payload)
    if side_length > len(payload) - _SIDE_LENGTH.size:
        raise CorruptLayerError(f"layer {k + 1} declares {side_length} bytes of side information")
    side_string = payload[_SIDE_LENGTH.size : _SIDE_LENGTH.size + side_length]
    latent_string = payload[_SIDE_LENGTH.size + side_length :]
    height, width = state.reconstruction.shape[-2:]
    side_model = model.side_models[k]
    side_shape = (1, model.config.side_channels, height // SIDE_STRIDE, width // SIDE_STRIDE)
    try:
        side_symbols = rans.decode(side_string, rans.side_indexes(side_model, side_shape), side_model)
        medians = rans.side_medians(side_model).cpu()
        side_hat = side_symbols.to(medians.dtype) + medians
        latent_symbols = _decode_symbols(model, latent_string, side_hat, state)
    except (RuntimeError, ValueError, OverflowError) as error:
        raise CorruptLayerError(f"layer {k + 1} does not decode: {error}") from error
    model.synthesise(latent_symbols.double() + state.means, state)
    return symbol_checksum(side_symbols, latent_symbols)


def to_pixels(reconstruction: Tensor, height: int, width: int) -> Tensor:
    """Running reconstruction to 8-bit pixels, cropped to the image size (H, W, 3)."""
    pixels = torch.round(reconstruction[0, :, :height, :width].clamp(0, 1) * 255)
    return pixels.to(torch.uint8).permute(1, 2, 0).contiguous()
