"""Fixed-point layers whose inference output is bit-exact on any machine.

The entropy coder needs the decoder to derive exactly the same probability
tables as the encoder did. Float convolutions do not guarantee that: the
summation order depends on the thread count, the library and the device.
These layers therefore compute, at inference, on a fixed-point grid inside
float64: weights are multiples of 2**-WEIGHT_BITS, activations multiples of
2**-ACTIVATION_BITS, and magnitudes are clamped so that every partial sum of
a convolution is an exactly representable float64. Exact sums do not depend
on their order, so the result is the same everywhere.

In training the same rounding is applied with a straight-through gradient,
in the training dtype, so the network learns with the grid it will run on.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

WEIGHT_BITS = 12
ACTIVATION_BITS = 10
WEIGHT_LIMIT = 8.0  # |w| <= 2**3
ACTIVATION_LIMIT = 256.0  # |a| <= 2**8
# With at most 2**11 terms per output, |sum| <= 2**3 * 2**8 * 2**11 = 2**22 on
# a grid of 2**-22: 44 significant bits, well inside float64's 53.
MAX_TERMS = 2**11


def round_ste(x: Tensor) -> Tensor:
    """Round in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


def to_grid(x: Tensor, bits: int, limit: float, exact: bool) -> Tensor:
    """Snap `x` to multiples of 2**-bits within [-limit, limit]."""
    scale = float(2**bits)
    x = torch.clamp(x, -limit, limit)
    if exact:  # in place on the clamped copy: decoding runs this on every activation
        return x.mul_(scale).round_().div_(scale)
    return round_ste(x * scale) / scale


def activation(x: Tensor, exact: bool) -> Tensor:
    return to_grid(x, ACTIVATION_BITS, ACTIVATION_LIMIT, exact)


def hard_sigmoid(x: Tensor, exact: bool) -> Tensor:
    """clamp(x/4 + 1/2, 0, 1): a gate built from exact operations only."""
    return activation(torch.clamp(x * 0.25 + 0.5, 0.0, 1.0), exact)


class ExactConv2d(nn.Conv2d):
    """A convolution that runs on the fixed-point grid.

    `exact=True` computes in float64 on the CPU-independent grid; otherwise it
    computes in the input's dtype with straight-through rounding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        if in_channels * kernel_size * kernel_size > MAX_TERMS:
            raise ValueError("too many terms per output for exact float64 sums")

    def forward(self, x: Tensor, exact: bool = False) -> Tensor:  # type: ignore[override]
        if exact:
            # float64 on the CPU: GPU libraries may pick inexact algorithms
            weight, bias = self._exact_parameters()
            return activation(F.conv2d(x.cpu().double(), weight, bias, padding=self.padding), exact)
        weight = to_grid(self.weight, WEIGHT_BITS, WEIGHT_LIMIT, exact)
        bias = to_grid(self.bias, WEIGHT_BITS, WEIGHT_LIMIT, exact)
        return activation(F.conv2d(x, weight, bias, padding=self.padding), exact)

    def _exact_parameters(self) -> tuple[Tensor, Tensor]:
        """The weights on the grid in float64 on the CPU, snapped once per change of the weights:
        decoding calls every layer's convolutions once per tile and layer."""
        version = (self.weight.data_ptr(), self.weight._version, self.bias.data_ptr(), self.bias._version)
        cached = self.__dict__.get("_exact_cache")
        if cached is None or cached[0] != version:
            with torch.no_grad():
                weight = to_grid(self.weight, WEIGHT_BITS, WEIGHT_LIMIT, True).cpu().double()
                bias = to_grid(self.bias, WEIGHT_BITS, WEIGHT_LIMIT, True).cpu().double()
            cached = (version, weight, bias)
            self.__dict__["_exact_cache"] = cached
        return cached[1], cached[2]
