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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench import processes, report
from bench.load import (
    Answer,
    LoadResult,
    StreamResult,
    StreamTimes,
    burst,
    http_load,
    percentile,
    range_fetch_load,
    stream_load,
    stream_once,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "kodak"
WRITE_KEY = "bench-write-key"
STATIC_DIR_ENV = "BENCH_STATIC_DIR"
BITSTREAM_FILE = "image.sric"
PICTURE_FILE = "image.png"
ALTERNATIVE_NAMES = {"starlette": "Starlette StaticFiles", "nginx": "nginx"}
NGINX_CONFIG = """\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    types {{ image/png png; application/octet-stream sric; }}
    server {{
        listen 127.0.0.1:{port};
        root {static};
    }}
}}
"""


def static_files_app():
    """Starlette's StaticFiles alone (`uvicorn --factory`): the same bytes, no application logic."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    return Starlette(routes=[Mount("/", StaticFiles(directory=os.environ[STATIC_DIR_ENV]))])


# -- processes ---------------------------------------------------------------------------------------------


@dataclass
class Running:
    """A server process on a loopback port."""

    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def rss(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss

    def stop(self) -> None:
        processes.stop(self.process)


def start(
    name: str, command_for: Callable[[int], list[str]], root: Path, probe: str, env: dict[str, str] | None = None
) -> Running:
    """Start the command that listens on the given port, and wait until `probe` answers 200."""
    log_path = root / f"{name}.log"
    try:
        process, port = processes.launch(command_for, log_path, {**os.environ, **(env or {})}, probe)
    except RuntimeError as error:
        raise RuntimeError(f"{name} {error}") from None
    return Running(name, process, port, log_path)


def start_service(name: str, root: Path, data_dir: Path, args: argparse.Namespace, **settings: str) -> Running:
    env = processes.server_environment(
        {
            "CODEC_SERVER_WRITE_KEY": WRITE_KEY,
            "CODEC_SERVER_WORKERS": str(args.workers),
            "CODEC_SERVER_QUEUE_SIZE": str(args.queue_size),
            "CODEC_SERVER_TORCH_THREADS": str(args.torch_threads),
            **{f"CODEC_SERVER_{key.upper()}": value for key, value in settings.items()},
        }
    )
    weights = Path(args.weights) if args.weights else None
    return start(name, lambda port: processes.server_command(port, data_dir, weights), root, "/ready", env)


def start_starlette(root: Path, static: Path) -> Running:
    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "--factory", "bench.service:static_files_app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip

    return start("starlette", command, root, f"/{PICTURE_FILE}", {STATIC_DIR_ENV: str(static)})


def start_nginx(root: Path, static: Path) -> Running | None:
    """nginx with one worker and sendfile, or None when it is not installed."""
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        return None
    home = root / "nginx"
    home.mkdir()
    for folder in (root, static):  # nginx's worker runs as nobody when started by root
        folder.chmod(0o755)

    def command(port: int) -> list[str]:
        config = home / "nginx.conf"
        config.write_text(NGINX_CONFIG.format(root=home, port=port, static=static))
        return [nginx, "-p", str(home), "-c", str(config), "-e", str(home / "error.log")]

    return start("nginx", command, root, f"/{PICTURE_FILE}")


def nginx_version() -> str:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    try:
        answer = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    return answer.stderr.strip().removeprefix("nginx version: nginx/")


# -- the measurement ---------------------------------------------------------------------------------------


@dataclass
class Stored:
    """The Kodak image that the read phases ask for."""

    id: str
    name: str
    width: int
    height: int
    layers: int
    total_bytes: int
    first_end: int  # bytes of the header and layer 1
    picture_bytes: int = 0  # the PNG of every layer


@dataclass
class InProcess:
    """A worker's model work for one upload, in this process with the server's torch threads."""

    encode: float
    first_layer: float
    further_layer: float
    all_layers: float

    @property
    def encode_and_verify(self) -> float:
        return self.encode + self.all_layers


@dataclass
class HttpRow:
    request: str
    server: str
    concurrency: int
    result: LoadResult


@dataclass
class Figures:
    stored: Stored
    reference: InProcess
    sequential_uploads: list[tuple[str, float]] = field(default_factory=list)
    cold: list[StreamTimes] = field(default_factory=list)
    http: list[HttpRow] = field(default_factory=list)
    streams: list[tuple[int, StreamResult, StreamResult]] = field(default_factory=list)
    uploads: list[tuple[int, LoadResult]] = field(default_factory=list)
    burst: list[Answer] = field(default_factory=list)
    after_burst: Answer | None = None
    rss: dict[str, int] = field(default_factory=dict)
    static_name: str = ""
    infos: list[dict] = field(default_factory=list)  # the info documents of the uploads


def measure_in_process(path: Path, threads: int, weights: str | None) -> InProcess:
    """Encode and decode every layer once (after a warm-up), as a worker would."""
    import torch

    from codec.api import Decoder, encode, load_model
    from codec.imageio import read_image

    torch.set_num_threads(threads)
    model = load_model(weights)
    pixels = read_image(path)
    Decoder(encode(pixels[:128, :128], model), model).decode()
    started = time.perf_counter()
    data = encode(pixels, model)
    encode_seconds = time.perf_counter() - started
    decoder = Decoder(data, model)
    seconds = []
    for n in range(1, decoder.layers_available + 1):
        started = time.perf_counter()
        decoder.decode(n)
        seconds.append(time.perf_counter() - started)
    further = statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan")
    return InProcess(encode_seconds, seconds[0], further, sum(seconds))


def _uploader(url: str, pictures: list[tuple[str, bytes]]) -> Callable[[httpx.AsyncClient], object]:
    """A `send` that posts the pictures in turn to /encode with the write key."""
    turn = iter(range(1 << 62))

    def send(client: httpx.AsyncClient):
        name, data = pictures[next(turn) % len(pictures)]
        return client.post(
            url + "/encode?wait=true",
            files={"file": (name, data, "image/png")},
            headers={"Authorization": f"Bearer {WRITE_KEY}"},
        )

    return send


def _getter(url: str, headers: dict[str, str] | None = None) -> Callable[[httpx.AsyncClient], object]:
    return lambda client: client.get(url, headers=headers)


async def measure(args: argparse.Namespace, root: Path) -> Figures:
    """Two service processes on one data directory, one after the other, and the static servers."""
    from codec.data import list_images

    paths = list_images(args.images)[: args.count]
    if not paths:
        raise SystemExit(f"no images in {args.images}")
    pictures = [(path.name, path.read_bytes()) for path in paths]
    print("bench.service: in-process reference", file=sys.stderr)
    reference = measure_in_process(paths[0], args.torch_threads, args.weights)
    data_dir, static = root / "data", root / "static"
    static.mkdir()
    running: list[Running] = []
    try:
        # without caches: the uploads keep no decoder, and every picture request decodes from scratch
        uncached = start_service("service-uncached", root, data_dir, args, picture_cache_bytes="0", decoder_cache="0")
        running.append(uncached)
        figures = await upload_one_by_one(uncached, pictures, reference)
        await uncached_phases(uncached, figures, args)
        figures.rss["service without caches"] = uncached.rss()
        uncached.stop()

        service = start_service("service", root, data_dir, args)
        running.append(service)
        await cold_previews(service, figures)
        alternatives = start_alternatives(service, figures, root, static)
        running += alternatives
        await http_phases(service, alternatives, figures, args)
        await stream_phases(service, alternatives[-1], figures, args)
        await upload_phases(service, pictures, figures, args)
        figures.rss["service"] = service.rss()
        return figures
    finally:
        for process in running:
            process.stop()


async def upload_one_by_one(service: Running, pictures: list[tuple[str, bytes]], reference: InProcess) -> Figures:
    """Upload every picture in turn; the first becomes the image that the read phases ask for."""
    print("bench.service: uploads one by one", file=sys.stderr)
    send = _uploader(service.url, pictures)
    infos, sequential = [], []
    for name, _ in pictures:
        answer = (await burst(send, 1))[0]
        if answer.status != 201:
            raise RuntimeError(f"upload of {name} answered {answer.status}")
        sequential.append((name, answer.seconds))
        infos.append(answer.document)
    info = infos[0]
    stored = Stored(
        info["id"], pictures[0][0], info["width"], info["height"], len(info["layers"]), info["bytes"],
        info["layers"][0]["end"],
    )  # fmt: skip
    return Figures(stored, reference, sequential, infos=infos)


async def uncached_phases(service: Running, figures: Figures, args: argparse.Namespace) -> None:
    stored = figures.stored
    for layers in sorted({1, stored.layers}):
        for concurrency in args.uncached_concurrency:
            print(f"bench.service: uncached pictures, {concurrency} client(s)", file=sys.stderr)
            result = await http_load(
                _getter(f"{service.url}/image/{stored.id}?layers={layers}"), concurrency=concurrency,
                duration=args.duration, expect=200, warm_up=False,
            )  # fmt: skip
            request = f"picture, uncached (`?layers={layers}`, no decoder kept)"
            figures.http.append(HttpRow(request, "ours", concurrency, result))


async def cold_previews(service: Running, figures: Figures) -> None:
    """Streams with previews on a process that has decoded nothing yet: every layer is decoded once."""
    print("bench.service: cold previews", file=sys.stderr)
    for document in figures.infos:
        url = f"{service.ws_url}/ws/image/{document['id']}?credit=255&previews=png"
        figures.cold.append(await stream_once(url, len(document["layers"])))


def start_alternatives(service: Running, figures: Figures, root: Path, static: Path) -> list[Running]:
    """Write the stored bitstream and its PNG to `static`, then serve them with Starlette and nginx."""
    stored = figures.stored
    with httpx.Client(base_url=service.url, timeout=600) as client:
        picture = client.get(f"/image/{stored.id}?layers={stored.layers}").raise_for_status().content
        (static / PICTURE_FILE).write_bytes(picture)
        bitstream = client.get(f"/image/{stored.id}/bitstream").raise_for_status().content
        (static / BITSTREAM_FILE).write_bytes(bitstream)
    stored.picture_bytes = len(picture)
    alternatives = [start_starlette(root, static)]
    nginx = start_nginx(root, static)
    if nginx is not None:
        alternatives.append(nginx)
    figures.static_name = ALTERNATIVE_NAMES[alternatives[-1].name]
    return alternatives


async def http_phases(
    service: Running, alternatives: list[Running], figures: Figures, args: argparse.Namespace
) -> None:
    stored = figures.stored
    first_layer = {"Range": f"bytes=0-{stored.first_end - 1}"}
    for concurrency in args.concurrency:
        print(f"bench.service: HTTP phases, {concurrency} client(s)", file=sys.stderr)
        picture_urls = [("ours", f"{service.url}/image/{stored.id}?layers={stored.layers}")]
        picture_urls += [(ALTERNATIVE_NAMES[a.name], f"{a.url}/{PICTURE_FILE}") for a in alternatives]
        for server, url in picture_urls:
            result = await http_load(
                _getter(url), concurrency=concurrency, duration=args.duration, expect=200,
                expect_bytes=stored.picture_bytes,
            )  # fmt: skip
            figures.http.append(HttpRow(f"picture, cached (`?layers={stored.layers}`)", server, concurrency, result))
        range_urls = [("ours", f"{service.url}/image/{stored.id}/bitstream")]
        range_urls += [(ALTERNATIVE_NAMES[a.name], f"{a.url}/{BITSTREAM_FILE}") for a in alternatives]
        for server, url in range_urls:
            result = await http_load(
                _getter(url, first_layer), concurrency=concurrency, duration=args.duration, expect=206,
                expect_bytes=stored.first_end,
            )  # fmt: skip
            figures.http.append(HttpRow("bitstream `Range` (header + layer 1)", server, concurrency, result))


async def stream_phases(service: Running, alternative: Running, figures: Figures, args: argparse.Namespace) -> None:
    stored = figures.stored
    for concurrency in args.streams:
        print(f"bench.service: WebSocket streams, {concurrency} client(s)", file=sys.stderr)
        ours = await stream_load(
            f"{service.ws_url}/ws/image/{stored.id}?credit=255", stored.layers,
            concurrency=concurrency, duration=args.duration,
        )  # fmt: skip
        ranges = await range_fetch_load(
            f"{alternative.url}/{BITSTREAM_FILE}", stored.first_end, stored.total_bytes,
            concurrency=concurrency, duration=args.duration,
        )  # fmt: skip
        figures.streams.append((concurrency, ours, ranges))


async def upload_phases(
    service: Running, pictures: list[tuple[str, bytes]], figures: Figures, args: argparse.Namespace
) -> None:
    send = _uploader(service.url, pictures)
    for concurrency in args.uploads:
        print(f"bench.service: uploads, {concurrency} client(s)", file=sys.stderr)
        result = await http_load(
            send, concurrency=concurrency, duration=args.upload_duration, expect=201, warm_up=False
        )
        figures.uploads.append((concurrency, result))
    print(f"bench.service: a burst of {args.burst} uploads", file=sys.stderr)
    figures.burst = await burst(send, args.burst)
    figures.after_burst = (await burst(send, 1))[0]


# -- the report --------------------------------------------------------------------------------------------


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


def burst_table(figures: Figures, args: argparse.Namespace) -> str:
    answers = figures.burst
    created = [a.seconds for a in answers if a.status == 201]
    busy = [a for a in answers if a.status == 429]
    other = len(answers) - len(created) - len(busy)
    retry_after = sorted({a.retry_after or "missing" for a in busy})
    after = figures.after_burst
    row = [
        str(len(answers)),
        str(args.workers + args.queue_size),
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


def render(figures: Figures, args: argparse.Namespace, machine: str, seconds: float) -> str:
    s = figures.stored
    rss = ", ".join(f"{report.mebibytes(value)} ({name})" for name, value in figures.rss.items())
    return "\n".join(
        [
            "## Service: HTTP and WebSocket on loopback\n",
            f"`python -m bench.service {' '.join(args.argv)}` — {seconds / 60:.1f} min.\n",
            machine,
            f"* Service: `python -m server` with {args.workers} model workers × {args.torch_threads} torch "
            f"thread(s), queue {args.queue_size}, default caches (64 MiB of pictures, 16 decoders); weights as in "
            "the codec section (float64 inference). Server RSS at the end of its phases: "
            f"{rss}.",
            f"* Stored image: `{s.name}`, {s.width}×{s.height}, {s.layers} layers, {s.total_bytes} bytes "
            f"({s.first_end} for the header and layer 1); its PNG of every layer is {s.picture_bytes} bytes.",
            f"* Alternatives, in the same run, serving the same two files: Starlette {_starlette_version()} "
            f"StaticFiles under uvicorn (the service's own stack without the application) and nginx "
            f"{nginx_version()} (one worker, sendfile).",
            "* Load: a closed loop of `clients` concurrent clients for "
            f"{args.duration:g} s per phase (uploads {args.upload_duration:g} s), asyncio + httpx (one keep-alive "
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
            f"Kodak PNGs posted to `/encode` by concurrent clients for {args.upload_duration:g} s. In-process "
            f"bound: min(clients, workers) ÷ (encode + decode of every layer in this process, "
            f"{report.seconds(figures.reference.encode_and_verify)}).\n",
            uploads_table(figures, args.workers),
            "### Saturation: the 429 answer\n",
            burst_table(figures, args),
            compass_note(figures),
            f"Training run at the end of this benchmark: {report.training_state()}.\n",
        ]
    )


def _starlette_version() -> str:
    import starlette

    return starlette.__version__


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


def headline(figures: Figures, args: argparse.Namespace, date: str) -> str:
    """The rows quoted in bench/README.md."""
    s, ref = figures.stored, figures.reference
    _, ours, ranges = min(figures.streams, key=lambda row: row[0])
    first = [t.first_preview for t in figures.cold if t.first_preview is not None]
    further = [(t.last_preview - t.first_preview) / (s.layers - 1) for t in figures.cold if s.layers > 1]
    top = max(args.concurrency)

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
        f"Service with a stored {s.width}×{s.height} Kodak image, {args.workers} workers × {args.torch_threads} "
        f"thread(s), {date} UTC (median latencies; full tables in RESULTS.md):\n\n"
        + report.table(["", "ours", "alternative", "ours ÷ alternative"], rows)
    )


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
    args.argv = argv
    started = time.perf_counter()
    machine = report.machine_description()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as root:
        figures = asyncio.run(measure(args, Path(root)))
    body = render(figures, args, report.machine_table(machine), time.perf_counter() - started)
    report.write_section("bench.service", body, args.results)
    report.write_section("bench.service", headline(figures, args, dict(machine)["date (UTC)"]), args.readme)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
