"""Shared fixtures: an untrained model (fast, deterministic) and small images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from codec.api import encode, fresh_model, save_weights
from codec.model import ScalableCodec

KODAK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kodak"


@pytest.fixture(scope="session")
def model() -> ScalableCodec:
    return fresh_model(seed=0)


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory, model: ScalableCodec) -> Path:
    path = tmp_path_factory.mktemp("weights") / "fresh.pt"
    save_weights(model, path)
    return path


def natural_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic picture with edges: cheap and repeatable."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for c in range(3):
        phase = rng.uniform(0, 6.28)
        value = 128 + 60 * np.sin(x / (7 + 3 * c) + phase) * np.cos(y / 11 - phase)
        value += 40 * ((x + 2 * y + 13 * c) % 37 < 18)
        channels.append(value)
    return np.clip(np.stack(channels, axis=2), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def small_image() -> np.ndarray:
    return natural_image(80, 112)


@pytest.fixture(scope="session")
def small_bitstream(model: ScalableCodec, small_image: np.ndarray) -> bytes:
    return encode(small_image, model)
