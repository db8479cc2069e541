"""A bounded soak of the service on loopback (outside CI; figures in docs/hardening.md).

    python -m bench.soak --minutes 5                  # starts its own server with small caches
    python -m bench.soak --minutes 5 --url http://127.0.0.1:8000 --key KEY --pid PID

A few concurrent clients mix uploads (and deletes, so the store stays bounded), pictures at random
layers and formats, info documents, byte ranges, listings, WebSocket streams (some abandoned
mid-layer) and garbage uploads, until the time is up. The server's RSS is sampled every second.

Passes when no request failed at the transport level, no 5xx came back other than the deliberate
503, and the RSS stopped growing once the caches were full: the growth over the second half of the
run stays within `--rss-slack`, and the peak above the post-warm-up level within the cache bound
(picture cache plus decoders). Prints a summary and writes it as JSON with `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench import processes

MiB = 1024 * 1024
WRITE_KEY = "soak-write-key"
PICTURE_CACHE = 8 * MiB
DECODER_SLOTS = 8
DECODER_ALLOWANCE = 4 * MiB  # RNN state, bytes and decoded layers of one small image's decoder
DELIBERATE = {429, 503}  # busy, not ready: answers the service gives on purpose under load
ACTIONS = {"upload": 12, "picture": 30, "info": 8, "range": 20, "stream": 15, "list": 5, "garbage": 5, "delete": 5}


@dataclass
class Record:
    """What the clients saw: answers per action and status, transport failures, latencies."""

    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def answer(self, action: str, status: int | str, started: float) -> None:
        """`status`: the HTTP status, a WebSocket close code, or a word for an outcome without one."""
        self.statuses[(action, str(status))] += 1
        self.seconds.setdefault(action, []).append(time.perf_counter() - started)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def unexpected_5xx(self) -> int:
        """Server errors other than the deliberate 503, a WebSocket close 1011 (server error) included."""
        return sum(n for (_, status), n in self.statuses.items() if _server_error(status))


def outcome(response: httpx.Response) -> int | str:
    """The status, with the error code for a server error (e.g. "503 storage_unavailable")."""
    if response.status_code < 500:
        return response.status_code
    try:
        return f"{response.status_code} {response.json()['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} (not the JSON error shape)"


def _code(status: str) -> int | None:
    first = status.split(" ", 1)[0]
    return int(first) if first.isdigit() else None


def _server_error(status: str) -> bool:
    """A 5xx other than the deliberate ones, or a WebSocket close 1011 (server error)."""
    code = _code(status)
    return code is not None and ((500 <= code < 600 and code not in DELIBERATE) or code == 1011)


@dataclass
class Rss:
    samples: list[tuple[float, int]] = field(default_factory=list)

    def at(self, fraction: float) -> int:
        """The sample nearest to `fraction` of the run."""
        return self.samples[min(len(self.samples) - 1, int(fraction * len(self.samples)))][1]

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)


def picture(rng: random.Random) -> tuple[bytes, str]:
    width, height = rng.randrange(24, 129), rng.randrange(24, 97)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x * y + rng.randrange(256)) % 256], axis=2)
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 40, pixels.shape)
    fmt = rng.choice(["PNG", "JPEG", "WEBP"])
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), "RGB").save(buffer, format=fmt)
    return buffer.getvalue(), fmt.lower()


class Clients:
    """The workload: one shared pool of stored images, several client loops."""

    def __init__(self, url: str, key: str, seed: int, max_images: int) -> None:
        self.url = url.rstrip("/")
        self.ws_url = "ws" + self.url[len("http") :]
        self.key = key
        self.rng = random.Random(seed)
        self.max_images = max_images
        self.images: list[dict] = []
        self.record = Record()

    async def run(self, workers: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=workers * 2)
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(base_url=self.url, timeout=120, limits=limits, headers=headers) as http:
            await asyncio.gather(*(self._loop(http, deadline) for _ in range(workers)))

    async def _loop(self, http: httpx.AsyncClient, deadline: float) -> None:
        names, weights = zip(*ACTIONS.items(), strict=True)
        while time.monotonic() < deadline:
            action = "upload" if len(self.images) < 3 else self.rng.choices(names, weights)[0]
            started = time.perf_counter()
            try:
                status = await getattr(self, action)(http)
            except (httpx.TransportError, OSError, ConnectionClosed, TimeoutError) as error:
                self.record.failures[(action, type(error).__name__)] += 1
                continue
            self.record.answer(action, status, started)

    async def upload(self, http: httpx.AsyncClient) -> int:
        data, fmt = picture(self.rng)
        response = await http.post("/encode?wait=true", files={"file": (f"soak.{fmt}", data, f"image/{fmt}")})
        if response.status_code == 201:
            self.images.append(response.json())
            if len(self.images) > self.max_images:
                await self._delete(http, self.images.pop(0))
        return outcome(response)

    async def delete(self, http: httpx.AsyncClient) -> int:
        if len(self.images) < 4:
            return await self.upload(http)
        return await self._delete(http, self.images.pop(self.rng.randrange(len(self.images))))

    async def _delete(self, http: httpx.AsyncClient, image: dict) -> int:
        return outcome(await http.delete(image["urls"]["image"]))

    def _image(self) -> dict:
        return self.rng.choice(self.images)

    def _read_status(self, image: dict, response: httpx.Response) -> int | str:
        """A 404 is right for an image another client deleted meanwhile; any other 404 is reported as is."""
        if response.status_code == 404 and image not in self.images:
            return "404 deleted meanwhile"
        return outcome(response)

    async def picture(self, http: httpx.AsyncClient) -> int | str:
        image = self._image()
        params = {"layers": self.rng.randint(1, len(image["layers"])), "format": self.rng.choice(["png", "webp"])}
        return self._read_status(image, await http.get(image["urls"]["image"], params=params))

    async def info(self, http: httpx.AsyncClient) -> int | str:
        image = self._image()
        return self._read_status(image, await http.get(image["urls"]["info"]))

    async def range(self, http: httpx.AsyncClient) -> int | str:
        image = self._image()
        size = image["bytes"]
        starts = sorted(self.rng.randrange(size) for _ in range(self.rng.randint(1, 4)))
        spec = ",".join(f"{start}-{min(size - 1, start + self.rng.randrange(1, 4096))}" for start in starts)
        response = await http.get(image["urls"]["bitstream"], headers={"Range": f"bytes={spec}"})
        return self._read_status(image, response)

    async def list(self, http: httpx.AsyncClient) -> int:
        return outcome(await http.get("/images", params={"limit": self.rng.randint(1, 50)}))

    async def garbage(self, http: httpx.AsyncClient) -> int:
        data = self.rng.randbytes(self.rng.randrange(0, 4096))
        return outcome(await http.post("/encode?wait=true", files={"file": ("junk.png", data, "image/png")}))

    async def stream(self, _: httpx.AsyncClient) -> int | str:
        """A full-credit stream (sometimes with previews), or one abandoned after the first layer."""
        image = self._image()
        abandon = self.rng.random() < 0.3
        query = "?credit=255" + ("&previews=webp" if self.rng.random() < 0.2 else "")
        async with connect(self.ws_url + image["urls"]["websocket"] + query, max_size=None) as ws:
            received = 0
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 120)
                    received += 1
                    if abandon and received == 3:  # info, header, layer 1: hang up mid-stream
                        return "abandoned"
            except ConnectionClosed as closed:
                if closed.rcvd is None:
                    return "dropped"
                return closed.rcvd.code if closed.rcvd.code == 1000 else f"{closed.rcvd.code} {closed.rcvd.reason}"


async def sample_rss(pid: int, rss: Rss, stop: asyncio.Event) -> None:
    process = psutil.Process(pid)
    started = time.monotonic()
    while not stop.is_set():
        rss.samples.append((time.monotonic() - started, process.memory_info().rss))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


def start_server(root: Path, weights: Path | None) -> tuple[subprocess.Popen, str]:
    """`python -m server` with small caches on a free port; untrained weights unless `weights` is given."""
    if weights is None:
        from codec.api import fresh_model, save_weights

        weights = root / "untrained.pt"
        save_weights(fresh_model(), weights)
    environment = processes.server_environment(
        {
            "CODEC_SERVER_WRITE_KEY": WRITE_KEY,
            "CODEC_SERVER_WORKERS": "1",
            "CODEC_SERVER_QUEUE_SIZE": "8",
            "CODEC_SERVER_TORCH_THREADS": "1",
            "CODEC_SERVER_PICTURE_CACHE_BYTES": str(PICTURE_CACHE),
            "CODEC_SERVER_DECODER_CACHE": str(DECODER_SLOTS),
        }
    )
    process, port = processes.launch(
        lambda port: processes.server_command(port, root / "data", weights), root / "server.log", environment
    )
    return process, f"http://127.0.0.1:{port}"


async def soak(url: str, key: str, pid: int, minutes: float, workers: int, seed: int) -> tuple[Record, Rss]:
    rss = Rss()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, rss, stop))
    clients = Clients(url, key, seed, max_images=40)
    await clients.run(workers, minutes * 60)
    stop.set()
    await sampler
    return clients.record, rss


def summarize(record: Record, rss: Rss, minutes: float, cache_bound: int, rss_slack: int) -> dict:
    warm, middle, end = rss.at(0.2), rss.at(0.5), rss.samples[-1][1]
    statuses: dict[str, dict[str, int]] = {}
    for (action, status), count in sorted(record.statuses.items()):
        statuses.setdefault(action, {})[status] = count
    latency = {
        action: {f"p{q}_ms": round(1000 * float(np.percentile(seconds, q)), 1) for q in (50, 95)}
        for action, seconds in sorted(record.seconds.items())
    }
    summary = {
        "minutes": minutes,
        "requests": record.requests,
        "statuses": statuses,
        "deliberate_429_503": sum(n for (_, s), n in record.statuses.items() if _code(s) in DELIBERATE),
        "unexpected_5xx": record.unexpected_5xx,
        "transport_failures": {f"{a}: {e}": n for (a, e), n in record.failures.items()},
        "latency": latency,
        "rss_mib": {
            "start": round(rss.samples[0][1] / MiB, 1),
            "after_warm_up": round(warm / MiB, 1),
            "middle": round(middle / MiB, 1),
            "peak": round(rss.peak / MiB, 1),
            "end": round(end / MiB, 1),
            "cache_bound": round(cache_bound / MiB, 1),
            "growth_second_half": round((end - middle) / MiB, 1),
        },
    }
    summary["passed"] = (
        summary["unexpected_5xx"] == 0
        and not record.failures
        and end - middle <= rss_slack
        and rss.peak - warm <= cache_bound
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=4, help="concurrent client loops (default 4)")
    parser.add_argument("--url", help="soak this running server instead of starting one (needs --pid for RSS)")
    parser.add_argument("--pid", type=int, help="the server's process id, with --url")
    parser.add_argument("--key", default=WRITE_KEY, help="its write key, with --url")
    parser.add_argument("--weights", type=Path, help="weights for the started server (default: untrained)")
    parser.add_argument("--rss-slack", type=float, default=32.0, help="MiB the RSS may grow in the second half")
    parser.add_argument(
        "--cache-bound", type=float, help="MiB the caches may take (default: those of the server it starts)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    if args.url and not args.pid:
        parser.error("--url needs --pid (the server's process, for its RSS)")
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        process = None
        if args.url:
            url, pid = args.url, args.pid
        else:
            process, url = start_server(Path(scratch), args.weights)
            pid = process.pid
        try:
            record, rss = asyncio.run(soak(url, args.key, pid, args.minutes, args.workers, args.seed))
        finally:
            if process is not None:
                process.terminate()
                process.wait(60)
        log = (Path(scratch) / "server.log").read_text(errors="replace") if process is not None else ""
    if args.out and log:
        args.out.with_suffix(".server.log").write_text(log)
    cache_bound = int(args.cache_bound * MiB) if args.cache_bound else PICTURE_CACHE + DECODER_SLOTS * DECODER_ALLOWANCE
    summary = summarize(record, rss, args.minutes, cache_bound, int(args.rss_slack * MiB))
    summary["server_tracebacks"] = log.count("Traceback")
    summary["passed"] = summary["passed"] and summary["server_tracebacks"] == 0
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
