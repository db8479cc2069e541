"""The service benchmark's Markdown: its section of bench/RESULTS.md and its headline rows.

Reads only what bench/service_measure.py measured, so a report can be rendered again, or
differently, without measuring again.
"""

from __future__ import annotations

import statistics

from bench import report
from bench.load import percentile
from bench.service_measure import Figures, Plan


def _p(values: list[float], q: float) -> str:
    return report.seconds(percentile(values, q))


def _rate(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _per_second_ratio(ours: float, other: float) -> str:
    return "n/a" if not other or other != other or ours != ours else f"{ours / other:.2f}×"


def progressive_table(figures: Figures) -> str:
    s, ref = figures.stored, figures.reference
    concurrency, ours, ranges = min(figures.streams, key=lambda row: row[0])
    cold_first = [t.first_preview for t in figures.cold if t.first_preview is not None]
    cold_last = [t.last_preview for t in figures.cold if t.last_preview is not None]
    further = [(t.last_preview - t.first_preview) / (s.layers - 1) for t in figures.cold if s.layers > 1]
    uploads = [seconds for _, seconds in figures.sequential_uploads]
    alt = f"2 `Range` GETs from {figures.static_name}"
    rows = [
        [
            f"WebSocket open → first layer's bytes ({concurrency} client)",
            _p(ours.first, 50),
            f"p90 {_p(ours.first, 90)}",
            f"{alt}: {_p(ranges.first, 50)}",
            report.ratio(percentile(ours.first, 50), percentile(ranges.first, 50)),
        ],
        [
            f"WebSocket open → last layer's bytes ({concurrency} client)",
            _p(ours.last, 50),
            f"p90 {_p(ours.last, 90)}",
            f"{alt}: {_p(ranges.last, 50)}",
            report.ratio(percentile(ours.last, 50), percentile(ranges.last, 50)),
        ],
        [
            "WebSocket open → first preview (server decodes layer 1; fresh process)",
            _p(cold_first, 50),
            f"max {_p(cold_first, 100)}",
            f"decode of layer 1 in process: {report.seconds(ref.first_layer)}",
            report.ratio(percentile(cold_first, 50), ref.first_layer),
        ],
        [
            "each further preview (one incremental layer, PNG, send)",
            _p(further, 50),
            f"max {_p(further, 100)}",
            f"one further layer in process: {report.seconds(ref.further_layer)}",
            report.ratio(percentile(further, 50), ref.further_layer),
        ],
        [
            "WebSocket open → last preview",
            _p(cold_last, 50),
            f"max {_p(cold_last, 100)}",
            f"all layers in process: {report.seconds(ref.all_layers)}",
            report.ratio(percentile(cold_last, 50), ref.all_layers),
        ],
        [
            "upload → 201 (encode, verify, store; one at a time)",
            _p(uploads, 50),
            f"max {_p(uploads, 100)}",
            f"encode + decode in process: {report.seconds(ref.encode_and_verify)}",
            report.ratio(percentile(uploads, 50), ref.encode_and_verify),
        ],
    ]
    return report.table(["", "median", "spread", "alternative", "ours ÷ alternative"], rows)


def http_table(figures: Figures) -> str:
    alternatives = sorted({row.server for row in figures.http if row.server != "ours"})
    rows = []
    for row in figures.http:
        r = row.result
        cells = [
            row.request,
            row.server,
            str(row.concurrency),
            _rate(r.rate),
            _p(r.latencies, 50),
            _p(r.latencies, 90),
            _p(r.latencies, 99),
            r.error_text(str(200 if "picture" in row.request else 206)),
        ]
        for name in alternatives:
            other = next(
                (
                    o.result
                    for o in figures.http
                    if o.server == name and o.concurrency == row.concurrency and _kind(o.request) == _kind(row.request)
                ),
                None,
            )
            cells.append(_per_second_ratio(r.rate, other.rate) if row.server == "ours" and other else "—")
        rows.append(cells)
    headers = ["request", "server", "clients", "req/s", "p50", "p90", "p99", "errors"]
    headers += [f"req/s ÷ {name}" for name in alternatives]
    return report.table(headers, rows, right=range(2, len(headers)))


def _kind(request: str) -> str:
    """Rows compared with each other: any picture with the static PNG, ranges with ranges."""
    return "picture" if request.startswith("picture") else "range"


def streams_table(figures: Figures) -> str:
    rows = []
    for concurrency, ours, ranges in figures.streams:
        rows.append(
            [
                str(concurrency),
                _rate(ours.rate),
                f"{_p(ours.first, 50)} / {_p(ours.first, 99)}",
                f"{_p(ours.last, 50)} / {_p(ours.last, 99)}",
                ours.error_text(),
                _rate(ranges.rate),
                f"{_p(ranges.first, 50)} / {_p(ranges.last, 50)}",
                ranges.error_text(),
                _per_second_ratio(ours.rate, ranges.rate),
            ]
        )
    headers = [
        "clients", "streams/s", "first layer p50 / p99", "last layer p50 / p99", "errors",
        f"{figures.static_name} ranges: fetches/s", "first / last p50", "errors", "streams/s ÷ ranges",
    ]  # fmt: skip
    return report.table(headers, rows, right=range(len(headers)))


def uploads_table(figures: Figures, workers: int) -> str:
    ideal_one = 1 / figures.reference.encode_and_verify
    uploads = [seconds for _, seconds in figures.sequential_uploads]
    rows = [
        [
            "1, one after another",
            _rate(1 / statistics.median(uploads)),
            f"{_p(uploads, 50)} / {_p(uploads, 90)}",
            str(len(uploads)),
            "0",
            "0",
            _rate(ideal_one),
            _per_second_ratio(1 / statistics.median(uploads), ideal_one),
        ]
    ]
    for concurrency, result in figures.uploads:
        ideal = min(concurrency, workers) * ideal_one
        rows.append(
            [
                str(concurrency),
                _rate(result.rate),
                f"{_p(result.latencies, 50)} / {_p(result.latencies, 90)}",
                str(result.outcomes.get("201", 0)),
                str(result.outcomes.get("429", 0)),
                str(result.errors - result.outcomes.get("429", 0)),
                _rate(ideal),
                _per_second_ratio(result.rate, ideal),
            ]
        )
    headers = [
        "concurrent uploads", "images/s", "latency p50 / p90", "201", "429", "other errors",
        "in-process bound: images/s", "ours ÷ bound",
    ]  # fmt: skip
    return report.table(headers, rows, right=range(1, len(headers)))


def burst_table(figures: Figures, plan: Plan) -> str:
    answers = figures.burst
    created = [a.seconds for a in answers if a.status == 201]
    busy = [a for a in answers if a.status == 429]
    other = len(answers) - len(created) - len(busy)
    retry_after = sorted({a.retry_after or "missing" for a in busy})
    after = figures.after_burst
    row = [
        str(len(answers)),
        str(plan.workers + plan.queue_size),
        str(len(created)),
        str(len(busy)),
        str(other),
        f"{_p([a.seconds for a in busy], 50)} / {_p([a.seconds for a in busy], 100)}",
        ", ".join(retry_after) or "—",
        _p(created, 100),
        f"{after.status} in {report.seconds(after.seconds)}" if after else "n/a",
    ]
    headers = [
        "uploads at once", "workers + queue", "201", "429", "other", "429 answered in (p50 / max)", "Retry-After",
        "last 201 after", "one more upload after the burst",
    ]  # fmt: skip
    return report.table(headers, [row], right=range(0, 6))


def render(figures: Figures, plan: Plan, machine: str, argv: list[str], seconds: float) -> str:
    """The section of bench/RESULTS.md."""
    s = figures.stored
    rss = ", ".join(f"{report.mebibytes(value)} ({name})" for name, value in figures.rss.items())
    return "\n".join(
        [
            "## Service: HTTP and WebSocket on loopback\n",
            f"`python -m bench.service {' '.join(argv)}` — {seconds / 60:.1f} min.\n",
            machine,
            f"* Service: `python -m server` with {plan.workers} model workers × {plan.torch_threads} torch "
            f"thread(s), queue {plan.queue_size}, default caches (64 MiB of pictures, 16 decoders); weights as in "
            "the codec section (float64 inference). Server RSS at the end of its phases: "
            f"{rss}.",
            f"* Stored image: `{s.name}`, {s.width}×{s.height}, {s.layers} layers, {s.total_bytes} bytes "
            f"({s.first_end} for the header and layer 1); its PNG of every layer is {s.picture_bytes} bytes.",
            f"* Alternatives, in the same run, serving the same two files: Starlette {figures.starlette_version} "
            f"StaticFiles under uvicorn (the service's own stack without the application) and nginx "
            f"{figures.nginx_version} (one worker, sendfile).",
            "* Load: a closed loop of `clients` concurrent clients for "
            f"{plan.duration:g} s per phase (uploads {plan.upload_duration:g} s), asyncio + httpx (one keep-alive "
            "connection per client) and `websockets`, on the same 2 cores as the servers: the static servers' "
            "figures are bounded by this Python client, so their ratios to ours are lower bounds of the gap.",
            "* Ratios: ours ÷ alternative; for req/s below 1 means ours serves fewer, for times above 1 means "
            "ours is slower.\n",
            f"### Progressive delivery of one stored Kodak image ({s.width}×{s.height})\n",
            "Bitstream over the WebSocket (`?credit=255`; the client decodes) against the same bytes in two "
            f"`Range` GETs from {figures.static_name} (how `client fetch --via range` reads them); server-side "
            f"previews (`?previews=png`) on a freshly started service, so that every layer is decoded (median "
            f"over {len(figures.cold)} images), against the same decode in this process; uploads against "
            "encoding and decoding in this process (uploaded one at a time to the service without caches: the same "
            "encode, verify and store).\n",
            progressive_table(figures),
            "### HTTP requests\n",
            "Cached pictures come from the picture cache (no model work); uncached ones from a service started "
            "with `CODEC_SERVER_PICTURE_CACHE_BYTES=0` and `CODEC_SERVER_DECODER_CACHE=0`, so every request "
            "decodes its layers from scratch and encodes the PNG. Requests for one image are serialised by its "
            "lock (one decoder per image), so a second client adds no throughput for one image.\n",
            http_table(figures),
            "### Concurrent WebSocket streams\n",
            "Every client opens a stream of the stored image with credit for every layer, reads to `done`, and "
            "opens the next. Errors by close code (`ws_max_streams` is 64). Beside it: the same progressive "
            f"fetch as two `Range` GETs from {figures.static_name}.\n",
            streams_table(figures),
            "### Uploads: encode throughput\n",
            f"Kodak PNGs posted to `/encode` by concurrent clients for {plan.upload_duration:g} s. In-process "
            f"bound: min(clients, workers) ÷ (encode + decode of every layer in this process, "
            f"{report.seconds(figures.reference.encode_and_verify)}).\n",
            uploads_table(figures, plan.workers),
            "### Saturation: the 429 answer\n",
            burst_table(figures, plan),
            compass_note(figures),
            f"Training run at the end of this benchmark: {report.training_state()}.\n",
        ]
    )


def compass_note(figures: Figures) -> str:
    s = figures.stored
    further = [(t.last_preview - t.first_preview) / (s.layers - 1) for t in figures.cold if s.layers > 1]
    first = [t.first_preview for t in figures.cold if t.first_preview is not None]
    _, ours, _ = min(figures.streams, key=lambda row: row[0])
    return (
        f"Compass (Kodak-size images served progressively in well under a second per layer): the layers' "
        f"bytes reach a client in {_p(ours.first, 50)} (first) and {_p(ours.last, 50)} (last); where the "
        f"server decodes (previews, a cold decoder) the first picture arrives after {_p(first, 50)} and each "
        f"further one {_p(further, 50)} later.\n"
    )


def headline(figures: Figures, plan: Plan, date: str) -> str:
    """The rows quoted in bench/README.md."""
    s, ref = figures.stored, figures.reference
    _, ours, ranges = min(figures.streams, key=lambda row: row[0])
    first = [t.first_preview for t in figures.cold if t.first_preview is not None]
    further = [(t.last_preview - t.first_preview) / (s.layers - 1) for t in figures.cold if s.layers > 1]
    top = max(plan.concurrency)

    def rate(request: str, server: str, concurrency: int = top) -> float:
        row = next(
            (r for r in figures.http if r.server == server and r.concurrency == concurrency and request in r.request),
            None,
        )
        return row.result.rate if row else float("nan")

    uncached = next((r for r in figures.http if "uncached (`?layers=1`" in r.request), None)
    uploads = [seconds for _, seconds in figures.sequential_uploads]
    alt = figures.static_name
    rows = [
        [
            "WebSocket open → first layer's bytes",
            _p(ours.first, 50),
            f"{alt} `Range`: {_p(ranges.first, 50)}",
            report.ratio(percentile(ours.first, 50), percentile(ranges.first, 50)),
        ],
        [
            "WebSocket open → last layer's bytes",
            _p(ours.last, 50),
            f"{alt} `Range`: {_p(ranges.last, 50)}",
            report.ratio(percentile(ours.last, 50), percentile(ranges.last, 50)),
        ],
        [
            "server-side preview: first layer (cold)",
            _p(first, 50),
            f"decode in process: {report.seconds(ref.first_layer)}",
            report.ratio(percentile(first, 50), ref.first_layer),
        ],
        [
            "server-side preview: each further layer",
            _p(further, 50),
            f"decode in process: {report.seconds(ref.further_layer)}",
            report.ratio(percentile(further, 50), ref.further_layer),
        ],
        [
            f"cached picture, req/s at {top} clients",
            _rate(rate("picture, cached", "ours")),
            f"{alt}: {_rate(rate('picture, cached', alt))}",
            _per_second_ratio(rate("picture, cached", "ours"), rate("picture, cached", alt)),
        ],
        [
            f"bitstream `Range`, req/s at {top} clients",
            _rate(rate("Range", "ours")),
            f"{alt}: {_rate(rate('Range', alt))}",
            _per_second_ratio(rate("Range", "ours"), rate("Range", alt)),
        ],
        [
            "uncached picture of layer 1, latency",
            _p(uncached.result.latencies, 50) if uncached else "n/a",
            "—",
            "—",
        ],
        [
            "upload (encode + verify + store)",
            _p(uploads, 50),
            f"in process: {report.seconds(ref.encode_and_verify)}",
            report.ratio(percentile(uploads, 50), ref.encode_and_verify),
        ],
    ]
    return (
        f"Service with a stored {s.width}×{s.height} Kodak image, {plan.workers} workers × {plan.torch_threads} "
        f"thread(s), {date} UTC (median latencies; full tables in RESULTS.md):\n\n"
        + report.table(["", "ours", "alternative", "ours ÷ alternative"], rows)
    )
