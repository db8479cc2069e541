"""The transform benchmark's measurements: how far each fixed transform gets with an ideal simple coder.

Each transform (all 256 coefficients per colour axis, on the codec's 1/16 grid) is quantised with
one dead-zone step for every coefficient (|q| = floor(|c| / step), reconstructed at (|q| + 0.4) ·
step), and its rate is the empirical entropy of the symbols of each coefficient channel, per image:
the bits an ideal adaptive coder with that model would spend, side information free. "Context"
conditions each symbol on its left and upper neighbours' magnitudes (0, 1, 2+: nine states). The
learned codec and JPEG 2000 are measured on the same images in the same run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from codec.api import load_model
from codec.evaluate import JPEG2000_TUNED, Curve, Point, evaluate_baselines, evaluate_image, mean_point
from codec.imageio import read_image
from codec.quality import psnr
from codec.transforms import BLOCK, LappedAnalysis, LappedSynthesis
from codec.wavelet import WaveletAnalysis, WaveletSynthesis

STEPS = tuple(float(s) for s in np.geomspace(14, 320, 9))  # in 8-bit units: about 0.03 … 1.7 bpp
DEAD_ZONE_RECONSTRUCTION = 0.4
ALL = BLOCK * BLOCK


def transforms() -> dict[str, tuple[nn.Module, nn.Module]]:
    """The lapped transform as training starts it (an orthonormal 16x16 DCT) and the wavelet."""
    return {
        "16×16 DCT (the lapped transform's start)": (
            LappedAnalysis(ALL, ALL).double(),
            LappedSynthesis(ALL, ALL).double(),
        ),
        "CDF 9/7, four levels (codec.wavelet)": (WaveletAnalysis(ALL, ALL), WaveletSynthesis(ALL, ALL)),
    }


@dataclass
class TransformCurves:
    name: str
    zeroth_order: Curve
    context: Curve


def _entropy_bits(symbols: np.ndarray) -> float:
    _, counts = np.unique(symbols, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def neighbour_context(symbols: np.ndarray) -> np.ndarray:
    """(C, h, w) symbols to each one's context: 3 x the upper neighbour's magnitude class + the left's."""
    magnitude = np.minimum(np.abs(symbols), 2)
    left = np.zeros_like(magnitude)
    left[:, :, 1:] = magnitude[:, :, :-1]
    up = np.zeros_like(magnitude)
    up[:, 1:, :] = magnitude[:, :-1, :]
    return 3 * up + left


def channel_bits(symbols: np.ndarray, context: np.ndarray | None) -> float:
    """Empirical entropy of every channel's symbols, conditioned on `context` if given, summed."""
    total = 0.0
    for channel in range(symbols.shape[0]):
        values = symbols[channel].ravel()
        if context is None:
            total += _entropy_bits(values)
            continue
        states = context[channel].ravel()
        total += sum(_entropy_bits(values[states == s]) for s in np.unique(states))
    return total


@torch.no_grad()
def code_image(
    pixels: np.ndarray, analysis: nn.Module, synthesis: nn.Module, step: float
) -> tuple[float, float, float]:
    """(zeroth-order bpp, context bpp, PSNR) of one image at one step."""
    height, width = (s - s % BLOCK for s in pixels.shape[:2])
    pixels = pixels[:height, :width]
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].double()
    coefficients = analysis(image)[0] / step
    symbols = torch.sign(coefficients) * torch.floor(coefficients.abs())
    values = torch.sign(symbols) * (symbols.abs() + DEAD_ZONE_RECONSTRUCTION) * step
    picture = synthesis(values[None])[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    quantised = symbols.numpy().astype(np.int64)
    pixels_count = height * width
    return (
        channel_bits(quantised, None) / pixels_count,
        channel_bits(quantised, neighbour_context(quantised)) / pixels_count,
        psnr(pixels, picture),
    )


def measure(paths: list[Path], weights: str | None) -> tuple[list[TransformCurves], Curve, Curve]:
    """Each transform's two curves, the learned codec's layers and JPEG 2000's sweep, over `paths`."""
    pictures = [read_image(path) for path in paths]
    results = []
    for name, (analysis, synthesis) in transforms().items():
        zeroth, context = [], []
        for step in STEPS:
            coded = [code_image(pixels, analysis, synthesis, step) for pixels in pictures]
            quality = float(np.mean([c[2] for c in coded]))
            zeroth.append(Point(float(np.mean([c[0] for c in coded])), quality, 0.0))
            context.append(Point(float(np.mean([c[1] for c in coded])), quality, 0.0))
            print(f"{name}: step {step:.1f} done", file=sys.stderr, flush=True)
        results.append(
            TransformCurves(
                name,
                Curve(name, sorted(zeroth, key=lambda p: p.bpp)),
                Curve(name, sorted(context, key=lambda p: p.bpp)),
            )
        )
    model = load_model(weights)
    ours = [evaluate_image(model, path) for path in paths]
    codec = Curve("ours", [mean_point([r.layers[k] for r in ours]) for k in range(len(ours[0].layers))])
    baselines, _ = evaluate_baselines(paths, (JPEG2000_TUNED,))
    jpeg2000 = Curve(
        JPEG2000_TUNED, sorted((mean_point(row) for row in baselines[JPEG2000_TUNED]), key=lambda p: p.bpp)
    )
    return results, codec, jpeg2000
