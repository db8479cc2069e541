"""Growing a trained codec's transform by further DCT frequencies: capacity that starts where it stopped.

The lapped synthesis spans only `latent_channels` of a block's 768 dimensions, so whatever
lies outside its span stays in the picture however many layers are sent: with 160 luma and
48 chroma coefficients per axis that floor was 35.2 dB on kodim13 and 39.5 dB on kodim05,
half and a third of the error left after the last layer. Growing adds the next zigzag
frequencies of the block DCT as new coefficients. Every network the new channels reach is
widened with zeros (the refiners' and the hyper-networks' inputs, the refiners' outputs,
the entropy model's parameters), so the grown codec codes the old channels exactly as
before, plus the new ones as a plain transform codec with a data-initialised scale per
layer; training then teaches the networks to use them.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from codec.model import CodecConfig, ScalableCodec
from codec.quality import psnr_from_mse
from codec.transforms import BLOCK, KERNEL, PADDING, LappedSynthesis, dct_basis

# Conjugate-gradient iterations of the projection onto the synthesis span: enough for 0.01 dB.
_FLOOR_ITERATIONS = 150


@torch.no_grad()
def synthesis_floor_psnr(synthesis: LappedSynthesis, images: Tensor) -> float:
    """PSNR of the best picture the synthesis can make of `images` (N, 3, H, W in 0..1; H, W multiples of 16).

    Every layer's increment is the synthesis of some coefficients, so no number of layers beats
    this: the least-squares projection onto the span of its bases (conjugate gradients on the
    normal equations, in float64).
    """
    basis = synthesis.weight.detach().double().flatten(1)
    target = images.double() - 0.5
    n, _, height, width = target.shape

    def synthesise(coefficients: Tensor) -> Tensor:
        patches = torch.matmul(basis.t(), coefficients.flatten(2))
        return F.fold(patches, (height, width), KERNEL, padding=PADDING, stride=BLOCK)

    def analyse(picture: Tensor) -> Tensor:
        patches = F.unfold(picture, KERNEL, padding=PADDING, stride=BLOCK)
        return torch.matmul(basis, patches).view(n, -1, height // BLOCK, width // BLOCK)

    coefficients = torch.zeros_like(analyse(target))
    residual = analyse(target)
    direction, norm = residual.clone(), residual.square().sum()
    for _ in range(_FLOOR_ITERATIONS):
        if norm < 1e-20:
            break
        product = analyse(synthesise(direction))
        step = norm / (direction * product).sum()
        coefficients += step * direction
        residual -= step * product
        norm, previous = residual.square().sum(), norm
        direction = residual + (norm / previous) * direction
    mse = (synthesise(coefficients) - target).square().mean().item() * 255.0**2
    return psnr_from_mse(mse)


# The highest-frequency coefficients of a component whose learned gains the new ones start from.
_GAIN_NEIGHBOURS = 16


def _component_ranges(config: CodecConfig) -> list[tuple[int, int]]:
    """(start, count) of luma and the two chroma axes along the latent channels."""
    luma, chroma = config.luma_coefficients, config.chroma_coefficients
    return [(0, luma), (luma, chroma), (luma + chroma, chroma)]


def _channel_map(old: CodecConfig, new: CodecConfig) -> tuple[Tensor, Tensor]:
    """Where each old channel lands in the new layout, and which new channels are new."""
    kept, added = [], []
    for (_, old_count), (new_start, new_count) in zip(_component_ranges(old), _component_ranges(new)):
        kept.extend(range(new_start, new_start + old_count))
        added.extend(range(new_start + old_count, new_start + new_count))
    return torch.tensor(kept), torch.tensor(added)


def _widen(tensor: Tensor, dim: int, kept: Tensor, channels: int, halves: int = 1) -> Tensor:
    """`tensor` with its latent-channel axis `dim` spread to `channels` (per half), zeros where new."""
    old = tensor.shape[dim] // halves
    shape = list(tensor.shape)
    shape[dim] = channels * halves
    wide = tensor.new_zeros(shape)
    for half in range(halves):
        index = kept + half * channels
        wide.index_copy_(dim, index, tensor.narrow(dim, half * old, old))
    return wide


def grow_coefficients(model: ScalableCodec, luma: int, chroma: int, images: Tensor) -> ScalableCodec:
    """A codec with `luma` and `chroma` coefficients per block that codes `model`'s channels as it did.

    `images` (training crops, never Kodak) set the new channels' scale offsets, as
    `initialise_scales` does for a fresh model.
    """
    old = model.config
    if model.context is not None:
        raise ValueError("grow a codec without a frequency context")
    if old.transform != "lapped":
        raise ValueError("only the lapped transform grows by further DCT frequencies")
    if luma < old.luma_coefficients or chroma < old.chroma_coefficients:
        raise ValueError("growing never removes coefficients")
    if max(luma, chroma) > BLOCK * BLOCK:
        raise ValueError(f"a {BLOCK}x{BLOCK} block has at most {BLOCK * BLOCK} frequencies per component")
    config = CodecConfig.from_dict({**old.to_dict(), "luma_coefficients": luma, "chroma_coefficients": chroma})
    m = config.latent_channels
    kept, added = _channel_map(old, config)
    basis = dct_basis(luma, chroma)
    state = model.state_dict()
    grown: dict[str, Tensor] = {}
    for name, tensor in state.items():
        if name.startswith("latent_tables."):
            continue  # fitted tables belong to the symbols they counted: fit the trained grown codec again
        if name in ("encoder.analysis.weight", "decoder.synthesis.weight"):
            wide = _widen(tensor, 0, kept, m)
            wide[added] = basis[added]
        elif name.endswith(("refiner.expand.weight", "refiner.expand.bias")):
            wide = _widen(tensor, 0, kept, m)
        elif name.endswith("refiner.reduce.weight") or name == "hyper_encoder.magnitude.weight":
            wide = _widen(tensor, 1, kept, m)
        elif name == "hyper_decoder.history.weight":
            wide = _widen(tensor, 1, kept, m, halves=2)
        elif name in ("hyper_decoder.params.weight", "hyper_decoder.params.bias"):
            wide = _widen(tensor, 0, kept, m, halves=2)
        elif name in ("scale_index_offset", "history_scale_weights"):
            wide = _widen(tensor, tensor.dim() - 1, kept, m)
        elif name in ("log_latent_gain", "log_latent_inverse_gain"):
            wide = _widen(tensor, 1, kept, m)
            for (start, count), (new_start, new_count) in zip(_component_ranges(old), _component_ranges(config)):
                first = max(start, start + count - _GAIN_NEIGHBOURS)  # within the component
                neighbours = tensor[:, first : start + count].mean(dim=1, keepdim=True)
                wide[:, new_start + count : new_start + new_count] = neighbours
        else:
            wide = tensor
        grown[name] = wide
    result = ScalableCodec(config)
    result.load_state_dict(grown)
    result.initialise_scales(images, channels=added)
    return result
