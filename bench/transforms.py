"""Fixed transforms with an ideal simple coder, beside the learned codec and JPEG 2000, on Kodak.

    python -m bench.transforms [--every 3] [--weights PATH]

Tells how much of JPEG 2000's lead over the codec its transform explains: the 16x16 DCT the lapped
transform starts from against the CDF 9/7 wavelet of codec.wavelet, each with per-channel entropy
and with a neighbour context (bench/transforms_measure.py says how). Writes its section of
bench/RESULTS.md.

This module is the command: bench/transforms_measure.py measures, bench/transforms_report.py writes the Markdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bench import report, transforms_measure, transforms_report
from bench.service import DEFAULT_IMAGES
from codec.data import list_images


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.transforms", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="weights file (default: weights/codec.pt or $CODEC_WEIGHTS)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Kodak folder")
    parser.add_argument("--every", type=int, default=1, help="every N-th image of the folder (1: all)")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=report.RESULTS, help="the markdown report to update")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    paths = list_images(args.images)[:: args.every]
    if not paths:
        parser.error(f"no images in {args.images}")
    machine = report.machine_table(report.machine_description())
    started = time.perf_counter()
    transforms, codec, jpeg2000 = transforms_measure.measure(paths, args.weights)
    body = transforms_report.render(transforms, codec, jpeg2000, paths, machine, argv)
    report.write_section("bench.transforms", body, args.results)
    print(body)
    print(f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
