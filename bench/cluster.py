"""Cluster benchmark: the scale-out deployment on loopback, with 1 and 2 API servers behind nginx.

    python -m bench.cluster [--weights PATH] [--duration 10] [--concurrency 16] [--workers 1 2] [--uploads 8]

Starts PostgreSQL and moto's S3 server (bench/engines.py), two API servers that only queue encodes,
encode workers and nginx with the compose file's server block (deploy/nginx/codec.conf), uploads a
Kodak picture, then measures requests/s of a cached picture and of a `Range` request of its first
layer through nginx in front of 1 and of 2 API servers, beside one API server asked directly; and a
burst of uploads through nginx spread over 1, then 2 workers. Writes its section of bench/RESULTS.md
and the headline of bench/README.md.

This module is the command: bench/cluster_measure.py measures, bench/cluster_report.py writes the
Markdown. nginx and PostgreSQL come from scripts/ensure-system-packages.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from bench import cluster_measure, cluster_report, report
from bench.cluster_measure import Plan
from bench.service import DEFAULT_IMAGES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="weights file (default: weights/codec.pt or $CODEC_WEIGHTS)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Kodak folder")
    parser.add_argument("--uploads", type=int, default=8, help="uploads in each burst")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per read phase")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16], help="HTTP clients")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes, one burst each")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads of each process")
    parser.add_argument("--results", type=Path, default=report.RESULTS, help="the markdown report to update")
    parser.add_argument("--readme", type=Path, default=report.README, help="where the headline rows go")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    plan = Plan(**{option.name: getattr(args, option.name) for option in dataclasses.fields(Plan)})
    started = time.perf_counter()
    machine = report.machine_description()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as root:
        figures = asyncio.run(cluster_measure.measure(plan, Path(root)))
    body = cluster_report.render(figures, plan, report.machine_table(machine), argv, time.perf_counter() - started)
    report.write_section("bench.cluster", body, args.results)
    headline = cluster_report.headline(figures, plan, dict(machine)["date (UTC)"])
    report.write_section("bench.cluster", headline, args.readme)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
