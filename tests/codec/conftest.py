"""Codec fixtures: the shared untrained model and small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from codec.api import encode
from codec.model import ScalableCodec


@pytest.fixture(scope="session")
def model(codec_model: ScalableCodec) -> ScalableCodec:
    """The untrained model behind the shared `weights_path` file."""
    return codec_model


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
