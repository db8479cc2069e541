"""The transform benchmark's Markdown: its bench/RESULTS.md section."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import report
from bench.transforms_measure import DEAD_ZONE_RECONSTRUCTION, TransformCurves
from codec.evaluate import JPEG2000_TUNED, Curve, bd_rate


def _bd(anchor: Curve, test: Curve) -> str:
    value = bd_rate(anchor.rates(), anchor.psnrs(), test.rates(), test.psnrs())
    return "n/a" if np.isnan(value) else f"{value:+.1f} %"


def _at(curve: Curve, bpp: float) -> str:
    """PSNR at `bpp` on the curve (log-rate interpolation), or n/a outside it."""
    rates = curve.rates()
    if not rates.min() <= bpp <= rates.max():
        return "n/a"
    return f"{np.interp(np.log(bpp), np.log(rates), curve.psnrs()):.2f}"


def render(transforms: list[TransformCurves], codec: Curve, jpeg2000: Curve, paths: list[Path], machine: str,
           argv: list[str]) -> str:  # fmt: skip
    command = " ".join(["python -m bench.transforms", *argv])
    rates = [p.bpp for p in codec.points]
    rows = []
    for t in transforms:
        for label, curve in (("per channel", t.zeroth_order), ("per channel, neighbour context", t.context)):
            rows.append([t.name, label, _bd(jpeg2000, curve), _bd(codec, curve), *(_at(curve, r) for r in rates)])
    rows.append(["the learned codec (shipped weights, effort 1)", "its own", _bd(jpeg2000, codec), "0",
                 *(f"{p.psnr:.2f}" for p in codec.points)])  # fmt: skip
    rows.append([JPEG2000_TUNED, "EBCOT", "0", _bd(codec, jpeg2000), *(_at(jpeg2000, r) for r in rates)])
    headers = ["transform", "entropy model", "BD-rate against JPEG 2000", "BD-rate against the codec",
               *(f"PSNR at {r:.3f} bpp" for r in rates)]  # fmt: skip
    names = ", ".join(p.stem for p in paths)
    return (
        "## Fixed transforms with an ideal simple coder\n\n"
        f"`{command}` ({len(paths)} images of {paths[0].parent.name}/: {names}). How much of JPEG 2000's lead "
        "is its transform: each fixed transform keeps every coefficient, quantised with one dead-zone step "
        f"(reconstructed {DEAD_ZONE_RECONSTRUCTION} into the bin) over a sweep of steps, and its rate is the "
        "empirical entropy of each coefficient channel's symbols per image (an ideal adaptive coder, side "
        "information free), alone or conditioned on the left and upper neighbours' magnitudes. The learned "
        f"codec (real container bytes) and JPEG 2000 ({JPEG2000_TUNED} through Pillow) are measured on the same "
        "images in this run. BD-rate is PSNR-RGB; the PSNR columns sit at the codec's six layer rates.\n\n"
        + report.table(headers, rows, right=list(range(2, len(headers))))
        + "\n"
        + machine
    )
