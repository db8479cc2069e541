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


# Tuned on the shipped weights with their fitted tables and post-filter (4 Kodak images, BD-rate against
# effort 1): 10 steps at λ×4 −0.45 %; 20 steps +0.27 %, 30 steps (lr 0.002) +0.05 %, λ×8 +0.55 %. So one
# searching level is left (a third, 30 steps, had been +1.3 %); bench/RESULTS.md has its figures on Kodak.
EFFORTS: dict[int, Effort] = {1: Effort(0, 0.0), 2: Effort(10, 0.004, 4.0)}
DEFAULT_EFFORT = 1


def check_effort(effort: int) -> Effort:
    """The level's settings; ValueError with the valid range otherwise."""
    if effort not in EFFORTS:
        raise ValueError(f"effort must be within {min(EFFORTS)}..{max(EFFORTS)}, got {effort}")
    return EFFORTS[effort]
