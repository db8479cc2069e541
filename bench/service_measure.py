"""The service benchmark's measurements: its phases against the service and the static servers, as `Figures`.

Kept apart from the Markdown (bench/service_report.py) so that what was measured is plain data;
the processes it measures are started by bench/processes.py.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import processes
from bench.load import (
    Answer,
    LoadResult,
    StreamResult,
    StreamTimes,
    burst,
    http_load,
    range_fetch_load,
    stream_load,
    stream_once,
)
from bench.processes import Running

WRITE_KEY = "bench-write-key"
BITSTREAM_FILE = "image.sric"
PICTURE_FILE = "image.png"
ALTERNATIVE_NAMES = {"starlette": "Starlette StaticFiles", "nginx": "nginx"}


@dataclass(frozen=True)
class Plan:
    """What one `python -m bench.service` run measures (its options, less where it writes)."""

    weights: str | None
    images: Path
    count: int
    duration: float
    upload_duration: float
    concurrency: list[int]
    uncached_concurrency: list[int]
    streams: list[int]
    uploads: list[int]
    burst: int
    workers: int
    queue_size: int
    torch_threads: int


def start_service(name: str, root: Path, data_dir: Path, plan: Plan, **settings: str) -> Running:
    """`python -m server` with the plan's pool, the write key, and `settings` as `CODEC_SERVER_*`."""
    env = processes.server_environment(
        {
            "CODEC_SERVER_WRITE_KEY": WRITE_KEY,
            "CODEC_SERVER_WORKERS": str(plan.workers),
            "CODEC_SERVER_QUEUE_SIZE": str(plan.queue_size),
            "CODEC_SERVER_TORCH_THREADS": str(plan.torch_threads),
            **{f"CODEC_SERVER_{key.upper()}": value for key, value in settings.items()},
        }
    )
    weights = Path(plan.weights) if plan.weights else None
    return processes.start(name, lambda port: processes.server_command(port, data_dir, weights), root, "/ready", env)


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
    """One HTTP load phase: which request, to which server, from how many clients."""

    request: str
    server: str
    concurrency: int
    result: LoadResult


@dataclass
class Figures:
    """Everything a run measured: what bench/service_report.py turns into tables."""

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
    starlette_version: str = ""
    nginx_version: str = ""  # "not installed" when it is not
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


def uploader(url: str, pictures: list[tuple[str, bytes]]) -> Callable[[httpx.AsyncClient], object]:
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


def getter(url: str, headers: dict[str, str] | None = None) -> Callable[[httpx.AsyncClient], object]:
    return lambda client: client.get(url, headers=headers)


async def measure(plan: Plan, root: Path) -> Figures:
    """Two service processes on one data directory, one after the other, and the static servers."""
    from codec.data import list_images

    paths = list_images(plan.images)[: plan.count]
    if not paths:
        raise SystemExit(f"no images in {plan.images}")
    pictures = [(path.name, path.read_bytes()) for path in paths]
    print("bench.service: in-process reference", file=sys.stderr)
    reference = measure_in_process(paths[0], plan.torch_threads, plan.weights)
    data_dir, static = root / "data", root / "static"
    static.mkdir()
    running: list[Running] = []
    try:
        # without caches: the uploads keep no decoder, and every picture request decodes from scratch
        uncached = start_service("service-uncached", root, data_dir, plan, picture_cache_bytes="0", decoder_cache="0")
        running.append(uncached)
        figures = await upload_one_by_one(uncached, pictures, reference)
        await uncached_phases(uncached, figures, plan)
        figures.rss["service without caches"] = uncached.rss()
        uncached.stop()

        service = start_service("service", root, data_dir, plan)
        running.append(service)
        await cold_previews(service, figures)
        alternatives = start_alternatives(service, figures, root, static)
        running += alternatives
        await http_phases(service, alternatives, figures, plan)
        await stream_phases(service, alternatives[-1], figures, plan)
        await upload_phases(service, pictures, figures, plan)
        figures.rss["service"] = service.rss()
        return figures
    finally:
        for process in running:
            process.stop()


async def upload_one_by_one(service: Running, pictures: list[tuple[str, bytes]], reference: InProcess) -> Figures:
    """Upload every picture in turn; the first becomes the image that the read phases ask for."""
    print("bench.service: uploads one by one", file=sys.stderr)
    send = uploader(service.url, pictures)
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


async def uncached_phases(service: Running, figures: Figures, plan: Plan) -> None:
    stored = figures.stored
    for layers in sorted({1, stored.layers}):
        for concurrency in plan.uncached_concurrency:
            print(f"bench.service: uncached pictures, {concurrency} client(s)", file=sys.stderr)
            result = await http_load(
                getter(f"{service.url}/image/{stored.id}?layers={layers}"), concurrency=concurrency,
                duration=plan.duration, expect=200, warm_up=False,
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
    alternatives = [processes.start_starlette(root, static, f"/{PICTURE_FILE}")]
    nginx = processes.start_nginx(root, static, f"/{PICTURE_FILE}")
    if nginx is not None:
        alternatives.append(nginx)
    figures.static_name = ALTERNATIVE_NAMES[alternatives[-1].name]
    figures.starlette_version, figures.nginx_version = _starlette_version(), processes.nginx_version()
    return alternatives


def _starlette_version() -> str:
    import starlette

    return starlette.__version__


async def http_phases(service: Running, alternatives: list[Running], figures: Figures, plan: Plan) -> None:
    stored = figures.stored
    first_layer = {"Range": f"bytes=0-{stored.first_end - 1}"}
    for concurrency in plan.concurrency:
        print(f"bench.service: HTTP phases, {concurrency} client(s)", file=sys.stderr)
        picture_urls = [("ours", f"{service.url}/image/{stored.id}?layers={stored.layers}")]
        picture_urls += [(ALTERNATIVE_NAMES[a.name], f"{a.url}/{PICTURE_FILE}") for a in alternatives]
        for server, url in picture_urls:
            result = await http_load(
                getter(url), concurrency=concurrency, duration=plan.duration, expect=200,
                expect_bytes=stored.picture_bytes,
            )  # fmt: skip
            figures.http.append(HttpRow(f"picture, cached (`?layers={stored.layers}`)", server, concurrency, result))
        range_urls = [("ours", f"{service.url}/image/{stored.id}/bitstream")]
        range_urls += [(ALTERNATIVE_NAMES[a.name], f"{a.url}/{BITSTREAM_FILE}") for a in alternatives]
        for server, url in range_urls:
            result = await http_load(
                getter(url, first_layer), concurrency=concurrency, duration=plan.duration, expect=206,
                expect_bytes=stored.first_end,
            )  # fmt: skip
            figures.http.append(HttpRow("bitstream `Range` (header + layer 1)", server, concurrency, result))


async def stream_phases(service: Running, alternative: Running, figures: Figures, plan: Plan) -> None:
    stored = figures.stored
    for concurrency in plan.streams:
        print(f"bench.service: WebSocket streams, {concurrency} client(s)", file=sys.stderr)
        ours = await stream_load(
            f"{service.ws_url}/ws/image/{stored.id}?credit=255", stored.layers,
            concurrency=concurrency, duration=plan.duration,
        )  # fmt: skip
        ranges = await range_fetch_load(
            f"{alternative.url}/{BITSTREAM_FILE}", stored.first_end, stored.total_bytes,
            concurrency=concurrency, duration=plan.duration,
        )  # fmt: skip
        figures.streams.append((concurrency, ours, ranges))


async def upload_phases(service: Running, pictures: list[tuple[str, bytes]], figures: Figures, plan: Plan) -> None:
    send = uploader(service.url, pictures)
    for concurrency in plan.uploads:
        print(f"bench.service: uploads, {concurrency} client(s)", file=sys.stderr)
        result = await http_load(
            send, concurrency=concurrency, duration=plan.upload_duration, expect=201, warm_up=False
        )
        figures.uploads.append((concurrency, result))
    print(f"bench.service: a burst of {plan.burst} uploads", file=sys.stderr)
    figures.burst = await burst(send, plan.burst)
    figures.after_burst = (await burst(send, 1))[0]
