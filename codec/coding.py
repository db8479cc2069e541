"""Per-layer entropy coding: one RNN iteration in, one layer's bytes out.

A layer's payload is the side-information string (z_k) and the latent string
(y_k), both from CompressAI's rANS coder:

    u32 little-endian length of the side string | side string | latent string

The entropy parameters of y_k come from the hyper-decoder in exact mode, so
the encoder and any decoder derive the same CDF rows bit for bit.
"""

from __future__ import annotations

import struct
import zlib

import torch
from torch import Tensor

from codec.errors import CorruptLayerError
from codec.model import SIDE_STRIDE, RecurrentState, ScalableCodec, quantized_scale_index

_SIDE_LENGTH = struct.Struct("<I")


@torch.no_grad()
def encode_layer(model: ScalableCodec, image: Tensor, state: RecurrentState) -> bytes:
    """Code the next layer of `image` (padded, (1, 3, H, W) in [0, 1])."""
    k = state.layer
    latents = model.analyse(image, state)
    side = model.side_information(latents, state)
    side_model = model.side_models[k]
    side_string = side_model.compress(side)[0]
    side_hat = side_model.decompress([side_string], side.shape[2:])
    scale_index, means = model.entropy_parameters(side_hat.double(), state, exact_mode=True)
    indexes = quantized_scale_index(scale_index)
    latents = latents.cpu().double()
    latent_string = model.latent_model.compress(latents, indexes, means)[0]
    model.synthesise(torch.round(latents - means) + means, state)
    return _SIDE_LENGTH.pack(len(side_string)) + side_string + latent_string


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
    try:
        side_hat = model.side_models[k].decompress([side_string], (height // SIDE_STRIDE, width // SIDE_STRIDE))
        scale_index, means = model.entropy_parameters(side_hat.double(), state, exact_mode=True)
        indexes = quantized_scale_index(scale_index)
        latents_hat = model.latent_model.decompress([latent_string], indexes, torch.float64, means)
    except (RuntimeError, ValueError, OverflowError) as error:
        raise CorruptLayerError(f"layer {k + 1} does not decode: {error}") from error
    medians = model.side_models[k].quantiles[:, 0, 1].detach().double()[None, :, None, None]
    checksum = symbol_checksum(torch.round(side_hat.double() - medians), torch.round(latents_hat - means))
    model.synthesise(latents_hat, state)
    return checksum


def to_pixels(reconstruction: Tensor, height: int, width: int) -> Tensor:
    """Running reconstruction to 8-bit pixels, cropped to the image size (H, W, 3)."""
    pixels = torch.round(reconstruction[0, :, :height, :width].clamp(0, 1) * 255)
    return pixels.to(torch.uint8).permute(1, 2, 0).contiguous()
