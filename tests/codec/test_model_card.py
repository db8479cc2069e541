"""The model card's training curve is drawn from the training log, and only when there is one."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from codec.model_card import plot_training_curve


def test_the_training_curve_is_drawn_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    header = "step,seconds,loss," + ",".join(f"bpp{k},psnr{k}" for k in (1, 2))
    log.write_text(f"{header}\n250,10,2.5,0.2,24.0,0.5,27.0\n500,20,2.4,0.19,24.5,0.48,27.6\n")
    curve = tmp_path / "curve.png"

    assert plot_training_curve(log, curve)
    assert Image.open(curve).size[0] > 500
    assert not plot_training_curve(tmp_path / "missing.csv", tmp_path / "other.png")
    assert not (tmp_path / "other.png").exists()
