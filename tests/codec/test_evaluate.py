"""`python -m codec eval`: real container sizes, baselines from the same run, BD-rates."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image

from codec.api import encode
from codec.container import parse_header
from codec.evaluate import JPEG2000_RATES_BPP, JPEG_QUALITIES, WEBP_QUALITIES, bd_rate, evaluate_directory
from codec.model import ScalableCodec

from .conftest import natural_image

SIDE = 176  # MS-SSIM's five scales need more than 160 pixels a side


def test_bd_rate_of_a_curve_that_needs_a_fifth_fewer_bits_is_minus_twenty_percent() -> None:
    rates = np.array([0.25, 0.5, 1.0, 2.0])
    quality = np.array([28.0, 31.0, 34.0, 37.0])
    assert math.isclose(bd_rate(rates, quality, 0.8 * rates, quality), -20.0, abs_tol=1e-6)
    assert math.isnan(bd_rate(rates, quality, rates, quality + 20.0))  # no overlapping quality range


def test_evaluation_counts_real_bytes_and_measures_baselines_on_the_same_images(
    model: ScalableCodec, tmp_path: Path
) -> None:
    images, out = tmp_path / "images", tmp_path / "results"
    images.mkdir()
    pictures = {f"picture{seed}.png": natural_image(SIDE, SIDE, seed) for seed in range(2)}
    for name, pixels in pictures.items():
        Image.fromarray(pixels).save(images / name)

    evaluate_directory(model, images, out)

    with (out / "per_image.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    ours = [row for row in rows if row["codec"] == "ours"]
    layer_count = model.config.layers
    assert len(ours) == 2 * layer_count
    for name, pixels in pictures.items():
        header = parse_header(encode(pixels, model))
        for n in range(1, layer_count + 1):
            (row,) = [r for r in ours if r["image"] == name and r["setting"] == f"layer {n}"]
            assert float(row["bpp"]) == round(header.end_of_layer(n) * 8 / SIDE**2, 5)
    per_codec = {codec: sum(row["codec"] == codec for row in rows) for codec in {row["codec"] for row in rows}}
    assert per_codec["jpeg"] == 2 * len(JPEG_QUALITIES)
    assert per_codec["webp"] == 2 * len(WEBP_QUALITIES)
    assert sum(count for codec, count in per_codec.items() if codec.startswith("jpeg2000")) == 2 * 2 * len(
        JPEG2000_RATES_BPP
    )
    summary = (out / "summary.md").read_text()
    assert "BD-rate (PSNR)" in summary and "measured in this run" in summary
    assert (out / "rd.png").stat().st_size > 10_000
    assert (out / "rd_points.csv").exists()
