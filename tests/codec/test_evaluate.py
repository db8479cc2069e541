"""`python -m codec eval`: real container sizes, baselines from the same run, BD-rates."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec.api import encode
from codec.container import parse_header
from codec.evaluate import (
    AVIF_QUALITIES,
    JPEG2000_RATES_BPP,
    JPEG_QUALITIES,
    JPEGXL_DISTANCES,
    WEBP_QUALITIES,
    baseline_settings,
    bd_rate,
    decode_baseline,
    encode_baseline,
    evaluate_baselines,
    evaluate_directory,
)
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
    assert per_codec["jpeg xl"] == 2 * len(JPEGXL_DISTANCES)
    assert per_codec["avif"] == 2 * len(AVIF_QUALITIES)
    summary = (out / "summary.md").read_text()
    assert "BD-rate (PSNR)" in summary and "measured in this run" in summary
    for codec in ("jpeg", "webp", "jpeg2000 (9/7, ICT)", "jpeg xl", "avif"):
        assert f"| {codec} | measured in this run |" in summary
    assert (out / "rd.png").stat().st_size > 10_000
    assert (out / "rd_points.csv").exists()


@pytest.mark.parametrize("codec", ["jpeg xl", "avif"])
def test_jpeg_xl_and_avif_write_real_files_that_gain_psnr_with_quality(codec: str, tmp_path: Path) -> None:
    pixels = natural_image(SIDE, SIDE, 5)
    settings = baseline_settings()[codec]
    for options in (settings[0], settings[-1]):
        data = encode_baseline(pixels, options)
        if codec == "avif":
            assert data[4:12] == b"ftypavif" and Image.open(io.BytesIO(data)).format == "AVIF"
        else:
            assert data[:2] == b"\xff\x0a"  # a bare JPEG XL codestream, as cjxl writes one
        decoded = decode_baseline(data, options["format"])
        assert decoded.shape == pixels.shape and decoded.dtype == np.uint8

    path = tmp_path / "picture.png"
    Image.fromarray(pixels).save(path)
    results, seconds = evaluate_baselines([path], codecs=(codec,))
    assert list(results) == list(seconds) == [codec]
    points = [row[0] for row in results[codec]]  # one image: low quality first
    assert len(points) == len(settings)
    rates, psnrs = [p.bpp for p in points], [p.psnr for p in points]
    assert all(b > a for a, b in zip(rates, rates[1:])), rates
    assert all(b > a for a, b in zip(psnrs, psnrs[1:])), psnrs
    assert psnrs[-1] > psnrs[0] + 6.0
    assert all(0.0 < p.ms_ssim <= 1.0 for p in points)
