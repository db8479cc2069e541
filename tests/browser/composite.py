"""Two screenshots of the viewer side by side in one picture (first layer | last layer)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

GAP = 16
BACKGROUND = (246, 247, 249)  # the page's background colour


def side_by_side(left: Path, right: Path, output: Path) -> Path:
    with Image.open(left) as first, Image.open(right) as last:
        height = max(first.height, last.height)
        canvas = Image.new("RGB", (first.width + GAP + last.width, height), BACKGROUND)
        canvas.paste(first.convert("RGB"), (0, 0))
        canvas.paste(last.convert("RGB"), (first.width + GAP, 0))
    output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(output, optimize=True)
    return output
