"""Encoder-side rate-distortion search: effort levels, as `cjxl -e` or `avifenc -s` have.

The decoder is fixed, so the encoder may send any symbols it likes. At effort
1 it sends the rounded analysis of each layer's residual, as trained. Higher
efforts add a learned offset to each layer's latents and lower the whole
scalable loss of the tile, Σ_k (R_≤k + λ_k D_k), by gradient steps through
the unrolled recurrence: a change in layer k is seen by the analysis of every
later layer, as in the real encoder, so later layers code the residual that
the search's layer k actually leaves. Rates are those of the rounded symbols
(straight-through), priced by the rows the coder uses (with fitted tables,
`FittedLatentTables.symbol_bits`), so the rate the search lowers is the one the
coder pays, up to the float entropy model standing in for the exact one; the
distortion is that of the picture shown (post-filtered), with the level's
weight on every λ_k.

Most of what the search bought against the Gaussian rows (−3 % on Kodak) was
zeroing symbols those rows overpriced; the fitted tables price them right at
every effort. At the trained λ and on the unfiltered reconstruction the search
then only moved the points along the curve; aimed at the shown picture with
the distortion weighed 4× it gains a little (each variant's figure is at
`codec.effort.EFFORTS`).

Measured on the shipped weights (two 256² Kodak crops): the search has to
offset the analysis, not replace it; free latents of all layers drift away
from what later layers expect and lost 4 to 22 %. Stochastic rounding (SGA,
Yang et al. 2020) raised the loss within 30 steps; Adam on the offsets with
straight-through rounding and the best step kept gave the figures of
`codec.effort.EFFORTS`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from codec.effort import check_effort
from codec.model import LayerOutput, ScalableCodec
from codec.train import rate_distortion_loss, shown_pictures


def search_loss(model: ScalableCodec, outputs: list[LayerOutput], image: Tensor, distortion_weight: float) -> Tensor:
    """What the search lowers: the scalable loss on the pictures shown, each λ_k times `distortion_weight`."""
    lambdas = tuple(distortion_weight * lam for lam in model.config.lambdas[: len(outputs)])
    loss, _, _ = rate_distortion_loss(outputs, image, lambdas, "mse", pictures=shown_pictures(model, outputs))
    return loss


def search_offsets(model: ScalableCodec, image: Tensor, effort: int, layers: int | None = None) -> list[Tensor] | None:
    """Per-layer offsets to the latents of `image` (1, 3, H, W, padded) that lower its loss; None at effort 1.

    Returns the offsets of the step with the lowest loss seen (step 0 is no
    offset at all, so the search never does worse than effort 1 by its own
    measure).
    """
    settings = check_effort(effort)
    if settings.steps == 0:
        return None
    layers = layers or model.config.layers
    with torch.no_grad():
        shapes = [o.latent_likelihoods.shape for o in model(image, layers, rounded_rates=True)]
    offsets = [torch.zeros(shape, dtype=image.dtype, device=image.device, requires_grad=True) for shape in shapes]
    optimizer = torch.optim.Adam(offsets, lr=settings.learning_rate)
    best_loss, best = float("inf"), [o.detach().clone() for o in offsets]
    with torch.enable_grad():
        for step in range(settings.steps + 1):
            outputs = model(image, layers, latent_offsets=offsets, rounded_rates=True)
            loss = search_loss(model, outputs, image, settings.distortion_weight)
            if loss.item() < best_loss:
                best_loss, best = loss.item(), [o.detach().clone() for o in offsets]
            if step == settings.steps:
                break
            gradients = torch.autograd.grad(loss, offsets)
            for offset, gradient in zip(offsets, gradients):
                offset.grad = gradient
            optimizer.step()
    return best
