"""The effort benchmark's Markdown: its bench/RESULTS.md section."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from bench import report
from bench.effort_measure import Level
from codec.effort import EFFORTS
from codec.evaluate import JPEG2000_TUNED, Curve, bd_rate


def _bd(anchor: Curve, test: Curve) -> str:
    value = bd_rate(anchor.rates(), anchor.psnrs(), test.rates(), test.psnrs())
    return "n/a" if np.isnan(value) else f"{value:+.1f} %"


def render(levels: list[Level], jpeg2000: Curve, jpeg2000_seconds: float, paths: list[Path], machine: str,
           argv: list[str], threads: int) -> str:  # fmt: skip
    command = " ".join(["python -m bench.effort", *argv])
    rows = []
    for level in levels:
        median = statistics.median(level.encode_seconds)
        rows.append(
            [
                str(level.effort),
                f"{EFFORTS[level.effort].steps}",
                " / ".join(f"{p.bpp:.3f}" for p in level.curve.points),
                " / ".join(f"{p.psnr:.2f}" for p in level.curve.points),
                _bd(levels[0].curve, level.curve),
                _bd(jpeg2000, level.curve),
                report.seconds(median),
                report.ratio(median, statistics.median(levels[0].encode_seconds)),
                report.ratio(median, jpeg2000_seconds),
            ]
        )
    headers = [
        "effort", "search steps", "bpp per layer", "PSNR per layer (dB)", "BD-rate against effort 1",
        "BD-rate against JPEG 2000", "encode (median)", "÷ effort 1", "÷ JPEG 2000 (one rate)",
    ]  # fmt: skip
    names = ", ".join(p.stem for p in paths)
    return (
        "## Encoder effort levels\n\n"
        f"`{command}` ({len(paths)} images of {paths[0].parent.name}/: {names}; {threads} torch threads). "
        "Each level encodes the same images with real container bytes; `codec.search` describes the search. "
        f"BD-rate is PSNR-RGB over the mean curves; JPEG 2000 is {JPEG2000_TUNED} through Pillow, "
        f"measured on the same images in this run ({jpeg2000_seconds * 1000:.0f} ms per image and rate). "
        "The decoder is the same at every level.\n\n"
        + report.table(headers, rows, right=[1, 4, 5, 6, 7, 8])
        + "\n"
        + machine
    )
