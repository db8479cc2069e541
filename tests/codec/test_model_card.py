"""The model card's figures: the training curve from the log, only when there is one; the MACs of every part."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from codec.api import fresh_model, load_model, save_weights
from codec.model import CodecConfig, count_macs_per_pixel
from codec.model_card import plot_training_curve, write_model_card


def test_the_training_curve_is_drawn_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    header = "step,seconds,loss," + ",".join(f"bpp{k},psnr{k}" for k in (1, 2))
    log.write_text(f"{header}\n250,10,2.5,0.2,24.0,0.5,27.0\n500,20,2.4,0.19,24.5,0.48,27.6\n")
    curve = tmp_path / "curve.png"

    assert plot_training_curve(log, curve)
    assert Image.open(curve).size[0] > 500
    assert not plot_training_curve(tmp_path / "missing.csv", tmp_path / "other.png")
    assert not (tmp_path / "other.png").exists()


def test_the_multiply_accumulates_count_every_part_of_a_model_loaded_for_inference(tmp_path: Path) -> None:
    """The analysis, synthesis and post-filter run through ONNX Runtime at inference; they are counted all the same."""
    weights = tmp_path / "filtered.pt"
    save_weights(fresh_model(CodecConfig(post_filter_channels=8)), weights)
    loaded, plain = load_model(weights), load_model(weights, runtime="torch")
    assert loaded.inference is not None

    macs = count_macs_per_pixel(loaded, size=64)
    assert macs == count_macs_per_pixel(plain, size=64)
    assert set(macs) == {"encoder", "decoder", "hyper_encoder", "hyper_decoder", "post_filter"}
    # the lapped analysis alone: a 3x32x32 basis per latent, 256 latents per 16x16 block
    assert macs["encoder"] >= 3 * 32 * 32
    assert loaded.inference is not None, "counting must give the model its ONNX Runtime networks back"


def test_the_card_describes_the_transform_the_weights_have(tmp_path: Path) -> None:
    cards = {}
    for transform, (luma, chroma) in (("lapped", (12, 6)), ("wavelet", (16, 4))):
        config = CodecConfig(transform=transform, luma_coefficients=luma, chroma_coefficients=chroma)
        weights = tmp_path / f"{transform}.pt"
        save_weights(fresh_model(config), weights)
        output = tmp_path / f"{transform}.md"
        cards[transform] = write_model_card(
            load_model(weights), weights, tmp_path / "no-eval.md", tmp_path / "no-log.csv", output, "test CPU"
        )
    assert "lapped analysis (32×32 bases" in cards["lapped"] and "CDF 9/7" not in cards["lapped"]
    assert "CDF 9/7 wavelet in four levels" in cards["wavelet"] and "inverse wavelet" in cards["wavelet"]
    assert "lapped" not in cards["wavelet"].split("## Architecture")[1].split("\n\n")[1]
