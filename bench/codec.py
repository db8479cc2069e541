"""Codec benchmark: our encode and progressive decode beside JPEG 2000 and bmshj2018-hyperprior.

    python -m bench.codec [--images ../shared/data/kodak] [--count 3] [--repeats 3] [--threads 1 2]
                          [--sizes 256x256 512x512 768x512 1024x1024 2048x2048] [--weights PATH]

Every configuration (codec, image size, torch threads) runs in a fresh process
(`python -m bench.codec measure ...`), so its peak RSS is its own; the alternatives
run in the same command, on the same pictures, so their ratios to ours survive a
busy machine. Pictures of each size are cut from Kodak images (centre crop to the
aspect, then a Lanczos resize). Times are medians over `count` images x `repeats`.
Sizes above `--once-above` megapixels are measured once, on one image.

Our decode is timed as the client and the server run it: layer 1 from scratch
(a new `Decoder`), then each further layer incrementally (one RNN step).
JPEG 2000 (Pillow/OpenJPEG) gets one file with a quality layer at each of our
layers' mean rates, and decodes the first n of them from scratch.
CompressAI's bmshj2018-hyperprior runs with random weights: its times are real,
its rates are not. Writes its section of bench/RESULTS.md and the headline of
bench/README.md, and profiles one Kodak encode and decode with py-spy.

This module is the command: bench/codec_measure.py measures, bench/codec_report.py
writes the Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from bench import codec_measure, codec_report, report
from bench.codec_measure import Plan, Size
from bench.processes import REPO

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "kodak"
DEFAULT_SIZES = ("256x256", "512x512", "768x512", "1024x1024", "2048x2048")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Kodak folder")
    parser.add_argument("--count", type=int, default=3, help="images per size")
    parser.add_argument("--repeats", type=int, default=3, help="runs per image")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts")
    parser.add_argument("--sizes", type=Size.parse, nargs="+", default=[Size.parse(s) for s in DEFAULT_SIZES])
    parser.add_argument("--once-above", type=float, default=2.0, help="megapixels above which a size runs once")
    parser.add_argument("--bmshj-qualities", type=int, nargs="*", default=[3, 6], help="CompressAI qualities")
    parser.add_argument("--weights", help="weights file (default: weights/codec.pt or $CODEC_WEIGHTS)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the py-spy profile")
    parser.add_argument("--results", type=Path, default=report.RESULTS, help="the markdown report to update")
    parser.add_argument("--readme", type=Path, default=report.README, help="where the headline rows go")
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("measure", help="measure one configuration in this process; prints JSON")
    one.add_argument("--codec", choices=("ours", "ours-torch", "jpeg2000", "bmshj"), required=True)
    one.add_argument("--width", type=int, required=True)
    one.add_argument("--height", type=int, required=True)
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--count", type=int, default=1)
    one.add_argument("--repeats", type=int, default=1)
    one.add_argument("--images", default=str(DEFAULT_IMAGES))
    one.add_argument("--weights")
    one.add_argument("--rates", type=float, nargs="+", help="jpeg2000: bits per pixel of each quality layer")
    one.add_argument("--quality", type=int, default=3, help="bmshj: CompressAI quality")
    return parser


def measure_one(args: argparse.Namespace) -> None:
    """The `measure` command: one configuration in this process; prints its Timings as JSON."""
    timings = codec_measure.measure(
        args.codec, Size(args.width, args.height), args.threads, Path(args.images), args.count, args.repeats,
        args.weights, args.rates, args.quality,
    )  # fmt: skip
    print(json.dumps(dataclasses.asdict(timings)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command == "measure":
        measure_one(args)
        return 0
    plan = Plan(**{option.name: getattr(args, option.name) for option in dataclasses.fields(Plan)})
    started = time.perf_counter()
    machine = report.machine_description()
    weights = codec_measure.weights(plan.weights)
    outcomes = codec_measure.run_all(plan)
    seconds = time.perf_counter() - started  # the profile after it is not counted
    profile = codec_measure.profile(plan) if plan.profile else None
    body = codec_report.render(outcomes, plan, weights, profile, report.machine_table(machine), argv, seconds)
    report.write_section("bench.codec", body, args.results)
    report.write_section("bench.codec", codec_report.headline(outcomes, plan, dict(machine)["date (UTC)"]), args.readme)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
