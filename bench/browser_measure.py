"""The browser benchmark's measurements: the viewer in headless Chromium decoding a stored picture itself,
beside the same page showing the server's previews, and the decoder's worker pool alone, as `Figures`.

Page loads: a first visit in a fresh browser profile (nothing cached: the page and the model's files travel
over loopback), to a copy of the picture the server has not decoded yet, once the browser has settled after
its start (`SETTLE_S`), then a reload in the same profile (the browser's HTTP cache, on disk as a returning
visitor's, and the server's caches of what it decoded); and first visits made as the browser starts. The
times come from the page's own clock: `performance.now()` at each `layershown` arrival, counted from the
start of the navigation. The decoder alone: `WorkerDecoder` fed the stored file layer by layer in the
page, with 1 and 2 workers; the time of each layer is the decoder's own (its slowest worker's entropy
path and synthesis, then the composition of the tiles).
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image
from playwright.sync_api import Browser, Playwright, sync_playwright

from bench import chromium, processes
from bench.codec_measure import Size, test_pictures
from bench.processes import Running
from bench.service_measure import WRITE_KEY

# A first visit comes this long after its browser started: Chromium loads its own pages at start-up (the
# omnibox popup's WebUI kept a core busy for about 1.5 s), and a visitor's browser is running already. The
# visits made as the browser starts are measured too.
SETTLE_S = 3.0

# Records, from before the page's own scripts run, when each layer was painted on arrival and how long
# the browser took to decode it (the canvas's data-decode-ms, set just before the paint).
RECORD_PAINTS = """
window.paints = [];
document.addEventListener("layershown", (event) => {
  if (event.detail.cause !== "arrival") return;
  const decodeMs = event.target.dataset.decodeMs;
  const decoded = decodeMs ? Number(decodeMs) : null;
  window.paints.push({ layer: event.detail.layer, ms: performance.now(), decodeMs: decoded });
}, true);
"""
FINISHED = "() => ['done', 'error'].includes(document.body.dataset.state)"

# Decodes the stored file layer by layer with `workers` workers; the decoder's times of each layer.
DECODE = """async ({ bitstream, workers }) => {
  const { WorkerDecoder } = await import("/static/decoder/client.js");
  const bytes = await (await fetch(bitstream)).arrayBuffer();
  const info = await (await fetch(bitstream.replace(/bitstream$/, "info"))).json();
  const decoder = new WorkerDecoder(new URL("/decoder/models/", location.href), workers);
  const layers = [];
  decoder.open((layer) => layers.push({
    layer: layer.layer, totalMs: layer.totalMs, entropyMs: layer.entropyMs, synthesisMs: layer.synthesisMs,
    backend: layer.backend,
  }));
  await decoder.feed(bytes.slice(0, info.header_bytes));
  for (const layer of info.layers) await decoder.feed(bytes.slice(layer.offset, layer.end));
  decoder.terminate();
  return layers;
}"""


@dataclass(frozen=True)
class Plan:
    """What one `python -m bench.browser` run measures (its options, less where it writes)."""

    weights: str | None
    images: Path
    size: Size
    repeats: int
    workers: tuple[int, ...]
    torch_threads: int


@dataclass
class PageLoad:
    """One page load: milliseconds from the navigation's start to each layer painted, and the browser's
    decode time of each layer (None with the server's previews)."""

    painted_ms: list[float]
    decode_ms: list[float | None]


@dataclass
class Delivery:
    """The page loads of one way of showing the picture."""

    name: str
    loads: list[PageLoad] = field(default_factory=list)

    def first_layer_ms(self) -> float:
        return statistics.median(load.painted_ms[0] for load in self.loads)

    def last_layer_ms(self) -> float:
        return statistics.median(load.painted_ms[-1] for load in self.loads)

    def further_layer_ms(self) -> float:
        """The median time between consecutive layers painted."""
        steps = [b - a for load in self.loads for a, b in zip(load.painted_ms, load.painted_ms[1:])]
        return statistics.median(steps) if steps else float("nan")


@dataclass
class LayerTimes:
    total_ms: float
    entropy_ms: float
    synthesis_ms: float


@dataclass
class Pool:
    """The decoder alone with `workers` workers: per layer, the median over the repeats."""

    workers: int
    backend: str
    layers: list[LayerTimes]

    def further_layer_ms(self) -> float:
        return statistics.median(layer.total_ms for layer in self.layers[1:])


@dataclass
class Figures:
    size: Size
    image_bytes: int
    layers: int
    chromium: str
    deliveries: list[Delivery]
    pools: list[Pool]
    python_ms: list[float]  # the Python decoder in this process, per layer (median over the repeats)
    model_files_bytes: int


def start_server(root: Path, plan: Plan) -> Running:
    env = processes.server_environment(
        {"CODEC_SERVER_WRITE_KEY": WRITE_KEY, "CODEC_SERVER_TORCH_THREADS": str(plan.torch_threads)}
    )
    weights = Path(plan.weights) if plan.weights else None
    command = lambda port: processes.server_command(port, root / "data", weights)  # noqa: E731
    return processes.start("browser", command, root, "/ready", env)


def upload_copies(server: Running, plan: Plan) -> list[dict]:
    """2 x `repeats` copies of the picture, one pixel apart, so that each first visit meets a picture the
    server has never decoded (nothing of it in the server's caches)."""
    (pixels,) = test_pictures(plan.images, 1, plan.size)
    stored = []
    for copy in range(2 * plan.repeats):
        variant = pixels.copy()
        variant[0, 0, 0] ^= copy
        buffer = io.BytesIO()
        Image.fromarray(variant).save(buffer, "PNG")
        answer = httpx.post(
            f"{server.url}/encode?wait=true", files={"file": ("picture.png", buffer.getvalue(), "image/png")},
            headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=1800,
        )  # fmt: skip
        answer.raise_for_status()
        stored.append(answer.json())
    return stored


def page_loads(
    playwright: Playwright, urls: list[str], settle_s: float, reload: bool = True
) -> tuple[list[PageLoad], list[PageLoad]]:
    """A first visit to each of `urls`, each in a fresh browser profile `settle_s` after its browser started,
    and (with `reload`) a reload after each."""
    cold, warm = [], []
    for url in urls:
        profile = tempfile.TemporaryDirectory(prefix="bench-browser-")
        page = chromium.profile_page(playwright, Path(profile.name))
        page.add_init_script(RECORD_PAINTS)
        page.wait_for_timeout(settle_s * 1000)
        try:
            for loads in (cold, warm) if reload else (cold,):
                page.goto(url) if loads is cold else page.reload()
                page.wait_for_function(FINISHED, timeout=600_000)
                if page.evaluate("document.body.dataset.state") != "done":
                    raise RuntimeError(f"the viewer failed at {url}: {page.inner_text('#error')}")
                paints = page.evaluate("window.paints")
                loads.append(PageLoad([p["ms"] for p in paints], [p["decodeMs"] for p in paints]))
        finally:
            page.context.close()
            profile.cleanup()
    return cold, warm


def decoder_pool(browser: Browser, server: Running, image_id: str, workers: int, repeats: int) -> Pool:
    page = chromium.new_page(browser)
    try:
        page.goto(f"{server.url}/")  # the viewer, with no image: the decoder modules load from its origin
        runs = [
            page.evaluate(DECODE, {"bitstream": f"{server.url}/image/{image_id}/bitstream", "workers": workers})
            for _ in range(repeats + 1)
        ][1:]  # the first run fetches and compiles the runtime and the model: the page loads time that
    finally:
        page.context.close()
    layers = [
        LayerTimes(*(statistics.median(run[n][key] for run in runs) for key in ("totalMs", "entropyMs", "synthesisMs")))
        for n in range(len(runs[0]))
    ]
    return Pool(workers, runs[0][0]["backend"], layers)


def python_decode_ms(bitstream: bytes, plan: Plan) -> list[float]:
    """Each layer decoded by the Python `Decoder` (ONNX Runtime, `torch_threads` threads) in this process."""
    import torch

    from codec.api import Decoder, load_model

    torch.set_num_threads(plan.torch_threads)
    model = load_model(plan.weights)
    runs = []
    for _ in range(plan.repeats):
        decoder = Decoder(bitstream, model)
        times = []
        for n in range(1, decoder.header.layer_count + 1):
            started = time.perf_counter()
            decoder.decode(n)
            times.append((time.perf_counter() - started) * 1000)
        runs.append(times)
    return [statistics.median(run[n] for run in runs) for n in range(len(runs[0]))]


def measure(plan: Plan, root: Path) -> Figures:
    server = start_server(root, plan)
    try:
        print(f"bench.browser: uploading {2 * plan.repeats} copies of a {plan.size} picture", file=sys.stderr)
        copies = upload_copies(server, plan)
        info = copies[0]
        model_id = info["model"]
        files = [httpx.get(f"{server.url}/decoder/models/{model_id}/{name}", timeout=300) for name in
                 ("entropy-path.json", "synthesis-weights.bin")]  # fmt: skip
        for answer in files:
            answer.raise_for_status()
        bitstream = httpx.get(f"{server.url}/image/{info['id']}/bitstream", timeout=60).content
        with sync_playwright() as playwright:
            browser = chromium.launch(playwright)
            try:
                deliveries = []
                for name, query in (("browser", ""), ("server previews", "&decoder=server")):
                    print(f"bench.browser: {plan.repeats} page loads, {name}", file=sys.stderr)
                    urls = [f"{server.url}/?id={copy['id']}{query}" for copy in copies]
                    cold, warm = page_loads(playwright, urls[: plan.repeats], SETTLE_S)
                    started, _ = page_loads(playwright, urls[plan.repeats :], 0, reload=False)
                    deliveries += [
                        Delivery(f"{name}, first visit", cold), Delivery(f"{name}, reload", warm),
                        Delivery(f"{name}, first visit as the browser starts", started),
                    ]  # fmt: skip
                pools = []
                for workers in plan.workers:
                    print(f"bench.browser: the decoder alone, {workers} worker(s)", file=sys.stderr)
                    pools.append(decoder_pool(browser, server, info["id"], workers, plan.repeats))
                version = browser.version
            finally:
                browser.close()
    finally:
        server.stop()
    print("bench.browser: the Python decoder in this process", file=sys.stderr)
    return Figures(
        plan.size, info["bytes"], len(info["layers"]), version, deliveries, pools,
        python_decode_ms(bitstream, plan), sum(len(answer.content) for answer in files),
    )  # fmt: skip
