"""Per-layer entropy coding: one RNN iteration in, one layer's bytes out.

A layer's payload (container version 3) is one rANS string of CompressAI's
format: the side-information symbols (z_k), then the latent symbols (y_k).
A decoder reads the side symbols, derives the latents' entropy parameters
from them, and reads on. Versions 1 and 2 hold the same symbols in two strings:

    u32 little-endian length of the side string | side string | latent string

which cost a second flush and the length field, about 10 bytes per tile and
layer (docs/format.md, Tile payload).

The entropy parameters of y_k come from the hyper-decoder in exact mode, so
the encoder and any decoder derive the same CDF rows bit for bit. With a
frequency context the latents come in two passes: first the low-frequency
channels (`first_pass_mask`), then the rest, each in (channel, row, column)
order; the second pass's parameters depend on the first's symbols.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import torch
from torch import Tensor

from codec import rans
from codec.errors import CorruptLayerError
from codec.model import SIDE_STRIDE, RecurrentState, ScalableCodec, first_pass_mask, quantized_scale_index

_SIDE_LENGTH = struct.Struct("<I")
# Container versions whose payloads hold two strings behind the side string's length.
TWO_STRING_VERSIONS = (1, 2)


@dataclass
class QuantizedLayer:
    """One layer of a batch of tiles as the coder writes it."""

    side_symbols: Tensor  # (N, side channels, h/64, w/64)
    symbols: Tensor  # round(y_k - mean), (N, C, h/16, w/16)
    scale_rows: Tensor  # the Gaussian row of every latent's scale, like `symbols`
    contexts: Tensor  # every latent's context for the fitted tables (codec.symbol_tables)
    first_pass: Tensor | None  # with a frequency context: the channels of the first pass, (1, C, 1, 1)


@torch.no_grad()
def quantize_layer(
    model: ScalableCodec, image: Tensor, state: RecurrentState, latent_offset: Tensor | None = None
) -> QuantizedLayer:
    """The next layer's symbols of a batch of equally sized tiles (`image` padded, (N, 3, H, W) in [0, 1]),
    their latents moved by the encoder-side search's `latent_offset` if one is given; `state` moves on.

    The networks run once for the batch, and the exact entropy parameters are the same as for each
    tile alone (exact sums do not depend on the batch).
    """
    latents = model.analyse(image, state)
    if latent_offset is not None:
        latents = latents + latent_offset
    side = model.side_information(latents, state)
    medians = rans.side_medians(model.side_models[state.layer])
    side_symbols = torch.round(side - medians)
    scale_index, means = model.entropy_parameters((side_symbols + medians).double(), state, exact_mode=True)
    latents = latents.cpu().double()
    first = None
    if model.context is not None:
        first = first_pass_mask(model.config, latents)
        first_symbols = torch.round(latents - means) * first
        scale_index, means = model.context_parameters(first_symbols, scale_index, means, state, exact_mode=True)
    symbols = torch.round(latents - means)
    contexts = model.latent_contexts(state, symbols)
    model.synthesise(symbols + means, state)
    return QuantizedLayer(side_symbols, symbols, quantized_scale_index(scale_index), contexts, first)


def encode_layer(
    model: ScalableCodec, image: Tensor, state: RecurrentState, latent_offset: Tensor | None = None
) -> list[bytes]:
    """Code the next layer of a batch of equally sized tiles (`quantize_layer`); one payload per tile,
    each its own rANS string."""
    k = state.layer
    layer = quantize_layer(model, image, state, latent_offset)
    rows = model.coding_rows(k, layer.contexts, layer.scale_rows)
    if layer.first_pass is None:
        in_order = [(s.reshape(-1), r.reshape(-1)) for s, r in zip(layer.symbols.split(1), rows.split(1), strict=True)]
    else:
        in_order = [
            (_in_pass_order(s, layer.first_pass), _in_pass_order(r, layer.first_pass))
            for s, r in zip(layer.symbols.split(1), rows.split(1), strict=True)
        ]
    side_model, latent_tables = model.side_models[k], coding_tables(model)
    return [
        rans.encode_parts([(side, rans.side_indexes(side_model, side.shape), side_model), (latent, row, latent_tables)])
        for side, (latent, row) in zip(layer.side_symbols.split(1), in_order, strict=True)
    ]


def coding_tables(model: ScalableCodec) -> rans.CdfTables:
    """The table the latents are coded with: the Gaussian rows, then the fitted rows if there are any."""
    if model.latent_tables is None:
        return rans.tables(model.latent_model)
    return rans.tables(model.latent_model, model.latent_tables)


def _in_pass_order(values: Tensor, first: Tensor) -> Tensor:
    """(1, C, h, w) to (C*h*w,): the first pass, then the rest, each in tensor order."""
    first = first.expand_as(values)
    return torch.cat([values[first], values[~first]])


def _decode_symbols(
    model: ScalableCodec, streams: list[rans.Stream], side_hat: Tensor, state: RecurrentState
) -> Tensor:
    """round(y_k - mean) of every tile, read on from its stream: one pass, or the frequency context's two
    passes. Leaves the means in `state.means`."""
    scale_index, means = model.entropy_parameters(side_hat.double(), state, exact_mode=True)
    contexts = model.latent_contexts(state, scale_index)
    table = coding_tables(model)
    rows = model.coding_rows(state.layer, contexts, quantized_scale_index(scale_index))
    if model.context is None:
        return torch.cat([stream.decode(r, table) for stream, r in zip(streams, rows.split(1), strict=True)])
    first = first_pass_mask(model.config, scale_index)[0].expand_as(scale_index[0])
    symbols = torch.zeros(scale_index.shape, dtype=torch.int32)
    for tile, stream in enumerate(streams):
        symbols[tile][first] = stream.decode(rows[tile][first], table)
    scale_index, _ = model.context_parameters(symbols.double(), scale_index, means, state, exact_mode=True)
    rows = model.coding_rows(state.layer, contexts, quantized_scale_index(scale_index))
    for tile, stream in enumerate(streams):
        symbols[tile][~first] = stream.decode(rows[tile][~first], table)
    return symbols


def symbol_checksum(side_symbols: Tensor, latent_symbols: Tensor) -> int:
    """CRC-32 of a layer's rANS symbols (int32 little-endian, side then latents).

    Float rounding never reaches the symbols, so this is the same on every
    machine, thread count and device: what the determinism tests compare.
    """
    crc = zlib.crc32(side_symbols.to(torch.int32).cpu().numpy().astype("<i4").tobytes())
    return zlib.crc32(latent_symbols.to(torch.int32).cpu().numpy().astype("<i4").tobytes(), crc)


def _streams(payload: bytes, layer: int, version: int) -> tuple[rans.Stream, rans.Stream]:
    """A tile's layer payload as the streams its side and latent symbols are read from: one and the same
    from version 3 on, two strings behind the side string's length before."""
    if version not in TWO_STRING_VERSIONS:
        if len(payload) < rans.STATE_BYTES:
            raise CorruptLayerError(f"layer {layer} payload is {len(payload)} bytes, shorter than a rANS state")
        stream = rans.Stream(payload)
        return stream, stream
    if len(payload) < _SIDE_LENGTH.size:
        raise CorruptLayerError(f"layer {layer} payload is {len(payload)} bytes, too short")
    (side_length,) = _SIDE_LENGTH.unpack_from(payload)
    if side_length > len(payload) - _SIDE_LENGTH.size:
        raise CorruptLayerError(f"layer {layer} declares {side_length} bytes of side information")
    side = payload[_SIDE_LENGTH.size : _SIDE_LENGTH.size + side_length]
    return rans.Stream(side), rans.Stream(payload[_SIDE_LENGTH.size + side_length :])


@torch.no_grad()
def decode_layer(model: ScalableCodec, payloads: list[bytes], state: RecurrentState, version: int) -> list[int]:
    """Decode the next layer of a batch of equally sized tiles (one payload each, `state` batched
    likewise, their container's format `version`) and update `state` in place; each tile's
    `symbol_checksum`."""
    k = state.layer
    streams = [_streams(payload, k + 1, version) for payload in payloads]
    height, width = state.reconstruction.shape[-2:]
    side_model = model.side_models[k]
    side_shape = (1, model.config.side_channels, height // SIDE_STRIDE, width // SIDE_STRIDE)
    side_indexes = rans.side_indexes(side_model, side_shape)
    try:
        side_symbols = torch.cat([side.decode(side_indexes, side_model) for side, _ in streams])
        medians = rans.side_medians(side_model).cpu()
        side_hat = side_symbols.to(medians.dtype) + medians
        latent_symbols = _decode_symbols(model, [latent for _, latent in streams], side_hat, state)
    except (RuntimeError, ValueError, OverflowError) as error:
        raise CorruptLayerError(f"layer {k + 1} does not decode: {error}") from error
    model.synthesise(latent_symbols.double() + state.means, state)
    return [symbol_checksum(s, y) for s, y in zip(side_symbols.split(1), latent_symbols.split(1), strict=True)]


def to_pixels(reconstruction: Tensor, height: int, width: int) -> Tensor:
    """Running reconstruction to 8-bit pixels, cropped to the image size (H, W, 3)."""
    pixels = torch.round(reconstruction[0, :, :height, :width].clamp(0, 1) * 255)
    return pixels.to(torch.uint8).permute(1, 2, 0).contiguous()
