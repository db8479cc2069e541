"""Service benchmark: the progressive-decoding service on loopback, beside static file servers.

    python -m bench.service [--weights PATH] [--duration 10] [--concurrency 1 16] [--streams 1 16 64]

Starts `python -m server` (the same way tests/harness.py does) on a fresh data
directory, uploads Kodak images, and measures with a bounded closed-loop client
(bench/load.py): WebSocket open to first and last layer, requests/s and latency
percentiles of cached and uncached pictures and of `Range` requests of the
bitstream, concurrent WebSocket streams, upload throughput and the 429 answer of
a saturated pool. The same bytes (the bitstream file and the reconstruction PNG)
are served in the same run by Starlette's StaticFiles under uvicorn and, when
it is installed, by nginx. Writes its section of bench/RESULTS.md and the
headline of bench/README.md.

This module is the command: bench/service_measure.py measures (starting its
processes through bench/processes.py), bench/service_report.py writes the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from bench import report, service_measure, service_report
from bench.processes import REPO
from bench.service_measure import Plan

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "kodak"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="weights file (default: weights/codec.pt or $CODEC_WEIGHTS)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Kodak folder")
    parser.add_argument("--count", type=int, default=3, help="Kodak images uploaded (the first is read back)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    parser.add_argument("--upload-duration", type=float, default=20.0, help="seconds per upload phase")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="HTTP clients")
    parser.add_argument("--uncached-concurrency", type=int, nargs="+", default=[1, 2], help="clients, uncached")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64], help="WebSocket clients")
    parser.add_argument("--uploads", type=int, nargs="+", default=[2, 4], help="concurrent uploaders")
    parser.add_argument("--burst", type=int, default=16, help="uploads sent at once to saturate the pool")
    parser.add_argument("--workers", type=int, default=2, help="the service's model workers")
    parser.add_argument("--queue-size", type=int, default=2, help="the service's model queue")
    parser.add_argument("--torch-threads", type=int, default=1, help="the service's torch threads per worker")
    parser.add_argument("--results", type=Path, default=report.RESULTS, help="the markdown report to update")
    parser.add_argument("--readme", type=Path, default=report.README, help="where the headline rows go")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    plan = Plan(**{option.name: getattr(args, option.name) for option in dataclasses.fields(Plan)})
    started = time.perf_counter()
    machine = report.machine_description()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as root:
        figures = asyncio.run(service_measure.measure(plan, Path(root)))
    body = service_report.render(figures, plan, report.machine_table(machine), argv, time.perf_counter() - started)
    report.write_section("bench.service", body, args.results)
    headline = service_report.headline(figures, plan, dict(machine)["date (UTC)"])
    report.write_section("bench.service", headline, args.readme)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
