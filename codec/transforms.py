"""Lapped block transforms initialised as a colour-decorrelated 16x16 DCT.

The analysis is a stride-16 convolution with 32x32 kernels and the synthesis
its transpose. They start as an orthonormal block DCT (kernels zero outside
the central 16x16), so an untrained codec already codes like a transform
codec, and training widens the bases into overlapping ones. This is what lets
the model become useful within the few thousand steps that 2 CPU cores allow.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

BLOCK = 16
KERNEL = 32
PADDING = (KERNEL - BLOCK) // 2

# An orthonormal colour transform: luma, red-blue and green-magenta axes.
COLOUR = (
    (1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)),
    (1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)),
    (1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)),
)


def dct_matrix(n: int) -> Tensor:
    rows = []
    for k in range(n):
        norm = math.sqrt(1 / n) if k == 0 else math.sqrt(2 / n)
        rows.append([norm * math.cos(math.pi * (i + 0.5) * k / n) for i in range(n)])
    return torch.tensor(rows, dtype=torch.float64)


def zigzag_frequencies(n: int) -> list[tuple[int, int]]:
    """Frequencies (u, v) from low to high, diagonal by diagonal."""
    return sorted(((u, v) for u in range(n) for v in range(n)), key=lambda f: (f[0] + f[1], f))


def dct_basis(luma: int, chroma: int) -> Tensor:
    """Basis images, shape (luma + 2*chroma, 3, KERNEL, KERNEL)."""
    dct = dct_matrix(BLOCK)
    frequencies = zigzag_frequencies(BLOCK)
    colour = torch.tensor(COLOUR, dtype=torch.float64)
    basis = []
    for axis, count in ((0, luma), (1, chroma), (2, chroma)):
        for u, v in frequencies[:count]:
            image = torch.zeros(3, KERNEL, KERNEL, dtype=torch.float64)
            image[:, PADDING : PADDING + BLOCK, PADDING : PADDING + BLOCK] = (
                colour[axis][:, None, None] * torch.outer(dct[u], dct[v])[None]
            )
            basis.append(image)
    return torch.stack(basis).float()


class LappedAnalysis(nn.Module):
    """Image (3 channels) to transform coefficients at 1/16 resolution."""

    def __init__(self, luma: int, chroma: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(dct_basis(luma, chroma))

    def forward(self, image: Tensor) -> Tensor:
        # unfold + matmul runs faster on the CPU than a 32x32 strided convolution
        n, _, height, width = image.shape
        patches = F.unfold(image, KERNEL, padding=PADDING, stride=BLOCK)
        coefficients = torch.matmul(self.weight.flatten(1), patches)
        return coefficients.view(n, -1, height // BLOCK, width // BLOCK)


class LappedSynthesis(nn.Module):
    """Transform coefficients back to an image: the transpose of the analysis."""

    def __init__(self, luma: int, chroma: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(dct_basis(luma, chroma))

    def forward(self, coefficients: Tensor) -> Tensor:
        n, channels, height, width = coefficients.shape
        patches = torch.matmul(self.weight.flatten(1).t(), coefficients.flatten(2))
        size = (height * BLOCK, width * BLOCK)
        return F.fold(patches, size, KERNEL, padding=PADDING, stride=BLOCK)
