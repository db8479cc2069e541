"""PSNR against an independent computation from a known MSE."""

from __future__ import annotations

import math

import numpy as np
import pytest

from codec.quality import PSNR_CAP, psnr, psnr_from_mse, squared_error


def test_psnr_of_a_known_mean_squared_error() -> None:
    reference = np.zeros((4, 4, 3), np.uint8)
    test = reference.copy()
    test[0, 0, 0] = 48  # one error of 48 among 48 values: MSE 48
    assert psnr(reference, test) == pytest.approx(10 * math.log10(255**2 / 48))
    assert psnr_from_mse(255.0**2) == 0.0
    assert psnr_from_mse(65.025) == pytest.approx(30.0)


def test_identical_pictures_score_the_cap_and_shapes_must_match() -> None:
    picture = np.full((3, 5, 3), 7, np.uint8)
    assert psnr(picture, picture) == PSNR_CAP == psnr_from_mse(1e-30)
    with pytest.raises(ValueError):
        psnr(picture, picture[:, :4])


def test_squared_errors_of_parts_add_up_to_the_whole_pictures() -> None:
    rng = np.random.default_rng(0)
    reference, test = (rng.integers(0, 256, (6, 10, 3), dtype=np.uint8) for _ in range(2))
    parts = squared_error(reference[:, :4], test[:, :4]) + squared_error(reference[:, 4:], test[:, 4:])
    expected = float(((reference.astype(np.int64) - test.astype(np.int64)) ** 2).sum())
    assert parts == squared_error(reference, test) == expected
    assert psnr(reference, test) == pytest.approx(psnr_from_mse(expected / reference.size))
