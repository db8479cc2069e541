"""Browser benchmark: the viewer decoding a stored picture in headless Chromium, beside server previews.

    python -m bench.browser [--weights PATH] [--size 768x512] [--repeats 3] [--workers 1 2]

Stores the first Kodak picture at `--size` on a `python -m server` on loopback, then times in Debian's
headless Chromium (WASM, no GPU): page load → each layer painted, with the page decoding the bitstream
itself and, in the same run, with the server's previews; and the decoder's worker pool alone per layer,
beside the Python `Decoder` on the same file. Writes its section of bench/RESULTS.md and the headline of
bench/README.md.

This module is the command: bench/browser_measure.py measures, bench/browser_report.py writes the Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from bench import browser_measure, browser_report, report
from bench.browser_measure import Plan
from bench.codec_measure import Size
from bench.service import DEFAULT_IMAGES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.browser", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="weights file (default: weights/codec.pt or $CODEC_WEIGHTS)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Kodak folder (the first is used)")
    parser.add_argument("--size", type=Size.parse, default=Size(768, 512), help="WIDTHxHEIGHT of the picture")
    parser.add_argument("--repeats", type=int, default=3, help="page loads and decoder runs of each kind")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker pool sizes to time")
    parser.add_argument("--torch-threads", type=int, default=2, help="the server's and the Python decoder's")
    parser.add_argument("--results", type=Path, default=report.RESULTS, help="the markdown report to update")
    parser.add_argument("--readme", type=Path, default=report.README, help="where the headline rows go")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    options = {option.name: getattr(args, option.name) for option in dataclasses.fields(Plan)}
    plan = Plan(**{**options, "workers": tuple(args.workers)})
    started = time.perf_counter()
    machine = report.machine_description()
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as root:
        figures = browser_measure.measure(plan, Path(root))
    body = browser_report.render(figures, plan, report.machine_table(machine), argv, time.perf_counter() - started)
    report.write_section("bench.browser", body, args.results)
    report.write_section("bench.browser", browser_report.headline(figures, dict(machine)["date (UTC)"]), args.readme)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
