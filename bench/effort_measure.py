"""The effort benchmark's measurements: Kodak images at every effort level, and JPEG 2000 on the same images."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from codec.api import load_model
from codec.evaluate import JPEG2000_TUNED, Curve, ImageResult, evaluate_baselines, evaluate_image, mean_point


@dataclass
class Level:
    effort: int
    curve: Curve
    encode_seconds: list[float]


def measure(paths: list[Path], weights: str | None, efforts: list[int]) -> tuple[list[Level], Curve, float]:
    """Our curve and encode times per level; JPEG 2000's curve and its seconds per image and setting."""
    model = load_model(weights)
    levels = []
    for effort in efforts:
        results: list[ImageResult] = []
        for path in paths:
            results.append(evaluate_image(model, path, effort))
            print(f"effort {effort}: {path.name} {results[-1].encode_seconds:.1f} s", file=sys.stderr, flush=True)
        points = [mean_point([r.layers[k] for r in results]) for k in range(len(results[0].layers))]
        levels.append(Level(effort, Curve(f"ours, effort {effort}", points), [r.encode_seconds for r in results]))
    baselines, seconds = evaluate_baselines(paths, (JPEG2000_TUNED,))
    settings = baselines[JPEG2000_TUNED]
    jpeg2000 = Curve(JPEG2000_TUNED, sorted((mean_point(row) for row in settings), key=lambda p: p.bpp))
    return levels, jpeg2000, seconds[JPEG2000_TUNED] / (len(settings) * len(paths))
