"""The browser benchmark's Markdown: its bench/RESULTS.md section and the headline rows of bench/README.md."""

from __future__ import annotations

from bench import report
from bench.browser_measure import SETTLE_S, Figures, Plan

PER_LAYER_GOAL_S = 0.4  # issue 14: each layer decoded in the browser
FIRST_LAYER_GOAL_S = 1.0  # issue 14: page load to the first layer painted, over loopback


def _ms(value: float) -> str:
    return report.seconds(value / 1000)


def delivery_rows(figures: Figures) -> list[list[str]]:
    reference = {delivery.name.split(",")[1]: delivery for delivery in figures.deliveries if "server" in delivery.name}
    rows = []
    for delivery in figures.deliveries:
        alternative = reference[delivery.name.split(",")[1]]
        rows.append(
            [
                delivery.name,
                str(len(delivery.loads)),
                _ms(delivery.first_layer_ms()),
                report.ratio(delivery.first_layer_ms(), alternative.first_layer_ms()),
                _ms(delivery.further_layer_ms()),
                _ms(delivery.last_layer_ms()),
                report.ratio(delivery.last_layer_ms(), alternative.last_layer_ms()),
            ]
        )
    return rows


def pool_rows(figures: Figures) -> list[list[str]]:
    rows = []
    for pool in figures.pools:
        for index, layer in enumerate(pool.layers, start=1):
            python = figures.python_ms[index - 1]
            rows.append(
                [
                    f"{pool.workers} ({pool.backend})", str(index), _ms(layer.total_ms), _ms(layer.entropy_ms),
                    _ms(layer.synthesis_ms), _ms(python), report.ratio(layer.total_ms, python),
                ]
            )  # fmt: skip
    return rows


def render(figures: Figures, plan: Plan, machine: str, argv: list[str], seconds: float) -> str:
    command = " ".join(["python -m bench.browser", *argv])
    pixels = figures.size.width * figures.size.height
    best = min(figures.pools, key=lambda pool: pool.further_layer_ms())
    first_visit = figures.deliveries[0]
    return f"""## In-browser decoding

`{command}`, {seconds / 60:.1f} min. The first Kodak picture at {figures.size} ({figures.layers} layers,
{figures.image_bytes:,} bytes, {figures.image_bytes * 8 / pixels:.2f} bpp), stored on a `python -m server` on
loopback ({plan.torch_threads} torch thread(s)), shown by the viewer in headless {figures.chromium} (WASM, no GPU:
Debian's chromium under Playwright, `--disable-gpu`). The page decodes the bitstream itself
(static/decoder/: the exact entropy path and the synthesis network in WebAssembly SIMD, in a pool of Web
Workers); the alternative in the same run is the same page showing the server's PNG previews
(`?decoder=server`). Times are the page's own clock, from the start of the navigation to each layer painted
on arrival, medians of {plan.repeats} loads. A first visit is a fresh browser profile showing a copy of the
picture (one pixel apart) that the server has not decoded yet: the page and the model's
{figures.model_files_bytes / 1e6:.1f} MB of files travel. It comes {SETTLE_S:.0f} s after the browser started, as a
visitor's browser is running already: at its start Chromium loads pages of its own (the omnibox popup's WebUI
kept a core of this 2-core machine busy for about 1.5 s); the first visits "as the browser starts" navigate
at once and share the machine with that. A reload follows in the same profile: the model's
files come from the browser's HTTP cache on disk (they are immutable), and the server's previews from the
server's caches of what it decoded at the first visit.
The background training run, if any, is in the machine table.

{machine}
### Page load to each layer painted

{
        report.table(
            ["", "loads", "first layer", "÷ server previews", "each further layer", "last layer", "÷ server previews"],
            delivery_rows(figures),
            right=(1, 2, 3, 4, 5, 6),
        )
    }
Goal: the first layer painted within {FIRST_LAYER_GOAL_S:.0f} s of the page load
({_ms(first_visit.first_layer_ms())} on a first visit).

### The decoder alone, per layer

`WorkerDecoder` fed the stored file layer by layer in the page (after one warm-up run), medians of
{plan.repeats} runs; a layer's time is its slowest worker's exact entropy path and synthesis, then the
composition of the tiles. Beside it, the Python `Decoder` (ONNX Runtime, {plan.torch_threads} thread(s)) in the
benchmark's process, same file.

{
        report.table(
            ["workers", "layer", "browser", "entropy path", "synthesis", "Python", "browser ÷ Python"],
            pool_rows(figures),
            right=(1, 2, 3, 4, 5, 6),
        )
    }
Goal: each layer within {PER_LAYER_GOAL_S * 1000:.0f} ms: with {best.workers} worker(s) a further layer takes
{_ms(best.further_layer_ms())} (median of layers 2–{figures.layers}), layer 1 {_ms(best.layers[0].total_ms)}.
"""


def headline(figures: Figures, date: str) -> str:
    best = min(figures.pools, key=lambda pool: pool.further_layer_ms())
    deliveries = {delivery.name: delivery for delivery in figures.deliveries}
    ours, previews = deliveries["browser, first visit"], deliveries["server previews, first visit"]
    rows = [
        ["page load → first layer painted (first visit)", ours.first_layer_ms(), previews.first_layer_ms()],
        ["page load → last layer painted (first visit)", ours.last_layer_ms(), previews.last_layer_ms()],
    ]
    table = report.table(
        ["", "decoded in the browser", "server previews"],
        [[name, _ms(a), _ms(b)] for name, a, b in rows]
        + [[f"decode, each further layer ({best.workers} workers)", _ms(best.further_layer_ms()), "—"]],
        right=(1, 2),
    )
    title = f"In-browser decoding of a {figures.size} Kodak picture, headless Chromium (WASM), {date}"
    return f"{title} (full tables in RESULTS.md):\n\n{table}"
