"""Picture quality: PSNR on the 0..255 scale, the one definition every figure uses.

Training logs, the evaluation and the server's info document all report it,
so it lives once, with one cap for identical pictures.
"""

from __future__ import annotations

import math

import numpy as np

PEAK = 255.0
PSNR_CAP = 100.0  # dB: what identical pictures (MSE 0) score


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on the 0..255 scale, at most `PSNR_CAP`."""
    if mse <= 0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(PEAK**2 / mse))


def squared_error(reference: np.ndarray, test: np.ndarray) -> float:
    """Sum of squared differences between two 8-bit pictures of the same shape: sums of parts (tiles)
    add up to the whole picture's, so a large picture is measured a part at a time."""
    if reference.shape != test.shape:
        raise ValueError(f"pictures of shapes {reference.shape} and {test.shape} cannot be compared")
    difference = reference.astype(np.float64) - test.astype(np.float64)
    return float(np.vdot(difference, difference))  # vdot flattens both


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB between two 8-bit pictures of the same shape."""
    return psnr_from_mse(squared_error(reference, test) / reference.size)
