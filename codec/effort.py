"""The encoder's effort levels, as `cjxl -e` or `avifenc -s` have: plain Python, so the CLI and the
server's settings can check a level without loading torch. `codec.search` does the work."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Effort:
    """How hard the encoder searches: `steps` Adam steps of this learning rate on the latent offsets,
    against the loss with each λ_k times `distortion_weight`."""

    steps: int
    learning_rate: float
    # At the trained λ the search moved the points along the curve (fewer bytes, less PSNR: +0.5 % BD-rate);
    # weighing distortion more spends its gain on PSNR instead (bench/RESULTS.md).
    distortion_weight: float = 1.0


# Tuned on the shipped weights with their fitted tables and post-filter (4 Kodak images); bench/RESULTS.md
# has each level's BD-rate and encode time on Kodak.
EFFORTS: dict[int, Effort] = {1: Effort(0, 0.0), 2: Effort(10, 0.004, 4.0), 3: Effort(30, 0.002, 4.0)}
DEFAULT_EFFORT = 1


def check_effort(effort: int) -> Effort:
    """The level's settings; ValueError with the valid range otherwise."""
    if effort not in EFFORTS:
        raise ValueError(f"effort must be within {min(EFFORTS)}..{max(EFFORTS)}, got {effort}")
    return EFFORTS[effort]
