"""IIIF benchmark: deep-zoom tiles of a large picture, ours beside JPEG 2000 tiles cut by OpenJPEG.

    python -m bench.iiif [--weights PATH] [--size 4000x3000] [--tiles 12]

Uploads one Kodak picture resized to `--size` (12 MP by default), then times 256² IIIF tiles from a
fresh server at a zoomed-out level and at full resolution: the first (cold) tile and tiles/s. The same
tiles are cut in the same run from a tiled JPEG 2000 of the same picture by `opj_decompress`, as
Cantaloupe's OpenJpegProcessor does. Writes its section of bench/RESULTS.md and the headline of
bench/README.md.

This module is the command: bench/iiif_measure.py measures, bench/iiif_report.py writes the Markdown.
opj_decompress comes from scripts/ensure-system-packages (libopenjp2-tools).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from bench import iiif_measure, iiif_report, report
from bench.codec_measure import Size
from bench.iiif_measure import Plan
from bench.service import DEFAULT_IMAGES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.iiif", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="weights file (default: weights/codec.pt or $CODEC_WEIGHTS)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Kodak folder (the first is used)")
    parser.add_argument("--size", type=Size.parse, default=Size(4000, 3000), help="WIDTHxHEIGHT of the picture")
    parser.add_argument("--tiles", type=int, default=12, help="tiles timed at each level")
    parser.add_argument("--torch-threads", type=int, default=2, help="the server's torch threads")
    parser.add_argument("--results", type=Path, default=report.RESULTS, help="the markdown report to update")
    parser.add_argument("--readme", type=Path, default=report.README, help="where the headline rows go")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    plan = Plan(**{option.name: getattr(args, option.name) for option in dataclasses.fields(Plan)})
    started = time.perf_counter()
    machine = report.machine_description()
    with tempfile.TemporaryDirectory(prefix="bench-iiif-") as root:
        figures = iiif_measure.measure(plan, Path(root))
    body = iiif_report.render(figures, plan, report.machine_table(machine), argv, time.perf_counter() - started)
    report.write_section("bench.iiif", body, args.results)
    report.write_section("bench.iiif", iiif_report.headline(figures, dict(machine)["date (UTC)"]), args.readme)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
