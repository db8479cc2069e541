"""The encoder's effort levels, as `cjxl -e` or `avifenc -s` have: plain Python, so the CLI and the
server's settings can check a level without loading torch. `codec.search` does the work."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Effort:
    """How hard the encoder searches: `steps` Adam steps of this learning rate on the latent offsets."""

    steps: int
    learning_rate: float


# Tuned on the shipped weights before their fitted tables; bench/RESULTS.md has each level's BD-rate and
# encode time on Kodak now.
EFFORTS: dict[int, Effort] = {1: Effort(0, 0.0), 2: Effort(10, 0.004), 3: Effort(30, 0.002)}
DEFAULT_EFFORT = 1


def check_effort(effort: int) -> Effort:
    """The level's settings; ValueError with the valid range otherwise."""
    if effort not in EFFORTS:
        raise ValueError(f"effort must be within {min(EFFORTS)}..{max(EFFORTS)}, got {effort}")
    return EFFORTS[effort]
