"""Effort levels: what each encoder effort buys in bits and costs in encode time, on Kodak.

    python -m bench.effort [--weights PATH] [--every 2] [--torch-threads 2]

Encodes the same Kodak images at every effort level of `codec.effort.EFFORTS` with real container
bytes, decodes every layer, and reports per level the BD-rate (PSNR-RGB) against effort 1 and
against JPEG 2000 (OpenJPEG 9/7 + ICT, as `codec eval` runs it) measured on the same images in the
same run, with the median encode time beside JPEG 2000's. Writes its section of bench/RESULTS.md.

This module is the command: bench/effort_measure.py measures, bench/effort_report.py writes the Markdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bench import effort_measure, effort_report, report
from bench.service import DEFAULT_IMAGES
from codec.data import list_images
from codec.effort import EFFORTS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.effort", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="weights file (default: weights/codec.pt or $CODEC_WEIGHTS)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Kodak folder")
    parser.add_argument("--every", type=int, default=2, help="every N-th image of the folder (1: all)")
    parser.add_argument("--limit", type=int, help="at most this many images")
    parser.add_argument("--efforts", type=int, nargs="+", choices=sorted(EFFORTS), default=sorted(EFFORTS))
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=report.RESULTS, help="the markdown report to update")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    paths = list_images(args.images)[:: args.every][: args.limit]
    if not paths:
        parser.error(f"no images in {args.images}")
    machine = report.machine_table(report.machine_description())
    started = time.perf_counter()
    levels, jpeg2000, jpeg2000_seconds = effort_measure.measure(paths, args.weights, args.efforts)
    body = effort_report.render(levels, jpeg2000, jpeg2000_seconds, paths, machine, argv, args.torch_threads)
    report.write_section("bench.effort", body, args.results)
    print(body)
    print(f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
