"""The cluster benchmark's Markdown: its bench/RESULTS.md section and the headline rows of bench/README.md."""

from __future__ import annotations

import statistics
from collections import Counter

from bench import report
from bench.cluster_measure import DIRECT, ONE_BEHIND_NGINX, TWO_BEHIND_NGINX, Figures, Plan
from bench.load import percentile

FRONTS = (DIRECT, ONE_BEHIND_NGINX, TWO_BEHIND_NGINX)


def _rate(figures: Figures, request: str, front: str, concurrency: int) -> float:
    row = next(
        (r for r in figures.http if r.request == request and r.front == front and r.concurrency == concurrency), None
    )
    return row.result.rate if row else float("nan")


def read_table(figures: Figures, plan: Plan) -> str:
    rows = []
    for request in dict.fromkeys(r.request for r in figures.http):
        for concurrency in plan.concurrency:
            rates = [_rate(figures, request, front, concurrency) for front in FRONTS]
            errors = sum(r.result.errors for r in figures.http if r.request == request and r.concurrency == concurrency)
            p50 = [
                percentile(r.result.latencies, 50)
                for front in FRONTS
                for r in figures.http
                if r.request == request and r.front == front and r.concurrency == concurrency
            ]
            rows.append(
                [request, str(concurrency), *(f"{rate:.0f}" for rate in rates)]
                + [" / ".join(report.seconds(value) for value in p50), report.ratio(rates[2], rates[1]), str(errors)]
            )
    headers = ["request", "clients", *(f"req/s, {front}" for front in FRONTS)]
    headers += ["median latency (same order)", "2 ÷ 1 behind nginx", "errors"]
    return report.table(headers, rows, right=(1, 2, 3, 4, 6, 7))


def burst_table(figures: Figures) -> str:
    rows = []
    for burst in figures.bursts:
        statuses = Counter(str(answer.status) for answer in burst.answers)
        rows.append(
            [
                str(burst.workers),
                str(len(burst.answers)),
                report.seconds(burst.seconds),
                report.seconds(statistics.median(answer.seconds for answer in burst.answers)),
                " + ".join(str(n) for n in burst.jobs_per_worker),
                ", ".join(f"{n}× {status}" for status, n in sorted(statuses.items())),
            ]
        )
    if len(figures.bursts) > 1:
        speedup = report.ratio(figures.bursts[0].seconds, figures.bursts[-1].seconds)
        rows.append(["", "", f"{speedup} faster with {figures.bursts[-1].workers}", "", "", ""])
    headers = ["workers", "uploads at once", "all stored after", "median answer", "jobs per worker", "answers"]
    return report.table(headers, rows, right=(0, 1, 2, 3))


def render(figures: Figures, plan: Plan, machine: str, argv: list[str], seconds: float) -> str:
    command = " ".join(["python -m bench.cluster", *argv])
    return f"""## Cluster (scale-out on loopback)

`{command}`, {seconds / 60:.1f} min. The cluster of docker-compose.yml's `cluster` profile without
containers: PostgreSQL {figures.postgres_version} (index and job queue), moto {figures.moto_version}'s
S3 server (the bitstreams), two API servers with `CODEC_SERVER_CLAIM_JOBS=false`, encode workers
(`python -m server worker`, {plan.torch_threads} torch thread each) and nginx {figures.nginx_version}
(one worker process) with deploy/nginx/codec.conf, the compose file's own server block, on a loopback
port. The alternative measured in the same run is one API server asked directly, as in the single
container. Every process, the load generator (bench/load.py, one Python process) and the engines share
the machine below.

{machine}
### Reads of a stored {figures.picture_bytes:,}-byte picture and of its first layer's {figures.first_end:,} bytes

Closed-loop clients for {plan.duration:g} s a phase; the picture is in every API server's cache (each
process keeps its own) before the clock starts; a `Range` request reads its bytes from S3 each time.

{read_table(figures, plan)}
### A burst of uploads spread over the workers

{plan.uploads} Kodak pictures posted at once through nginx (`POST /encode?wait=true`); the API servers
only queue them, and each worker claims the oldest waiting job whenever its model is idle.

{burst_table(figures)}
### What the 2-core machine bounds

Two cores carry the load generator (one Python process), nginx, both API servers, PostgreSQL and moto
at once. A second API process adds no cores here, only a second event loop competing for the same two,
so the "2 ÷ 1" column says what a second process costs or buys on one small host, not how the cluster
scales across hosts, where each API server brings its own cores; the gap between "direct" and "behind
nginx" is nginx's share of the same two cores. Encodes are compute-bound (the codec section), so two
workers at one torch thread each can at best use both cores while the API servers and the engines
take their share. moto is a Python server, slower than MinIO or S3; it bounds the `Range` rows, which
read S3 on every request.
"""


def headline(figures: Figures, plan: Plan, date: str) -> str:
    top = max(plan.concurrency)
    picture = next(r.request for r in figures.http if r.request.startswith("picture"))
    ranges = next(r.request for r in figures.http if r.request.startswith("bitstream"))
    rows = [
        [
            f"{label}, req/s at {top} clients",
            *(f"{_rate(figures, request, front, top):.0f}" for front in FRONTS),
        ]
        for label, request in (("cached picture", picture), ("bitstream `Range`", ranges))
    ]
    bursts = "; ".join(
        f"{b.workers} worker(s): {report.seconds(b.seconds)} (jobs {' + '.join(map(str, b.jobs_per_worker))})"
        for b in figures.bursts
    )
    return (
        f"Cluster on loopback (PostgreSQL, moto S3, 2 API servers, nginx, workers), {date} "
        "(full tables in RESULTS.md):\n\n"
        + report.table(["", *FRONTS], rows, right=(1, 2, 3))
        + f"\nA burst of {plan.uploads} uploads through nginx, all stored after: {bursts}.\n"
    )
