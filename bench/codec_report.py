"""The codec benchmark's Markdown: its section of bench/RESULTS.md and its headline rows.

Reads only what bench/codec_measure.py measured, so a report can be rendered again, or
differently, without measuring again.
"""

from __future__ import annotations

import linecache
import statistics
from collections.abc import Callable

from bench import report
from bench.codec_measure import KODAK_SIZE, PROFILE_RATE, TORCH_LABEL, Outcome, Plan, Profile, Size, Timings, Weights
from bench.processes import REPO
from codec.api import DEFAULT_PICTURE_BUDGET, DEFAULT_STATE_BUDGET
from codec.container import DEFAULT_TILE_SIZE

BMSHJ_ARCHITECTURES = {q: "N=128, M=192" if q <= 5 else "N=192, M=320" for q in range(1, 9)}


# -- figures ---------------------------------------------------------------------------------------------


def median_encode(t: Timings) -> float:
    return statistics.median(t.encode)


def median_layer(t: Timings, index: int) -> float:
    return statistics.median(run[index] for run in t.decode)


def median_further_layer(t: Timings) -> float | None:
    """Ours: the median over layers 2..L of each layer's median incremental decode time."""
    layers = len(t.decode[0])
    return statistics.median(median_layer(t, i) for i in range(1, layers)) if layers > 1 else None


def median_all_layers(t: Timings) -> float:
    """Ours: sum of the per-layer medians; the others: decoding every layer at once."""
    if t.codec in ("ours", "ours-torch"):
        return sum(median_layer(t, i) for i in range(len(t.decode[0])))
    return median_layer(t, len(t.decode[0]) - 1)


def working_memory(t: Timings) -> tuple[int, int]:
    """Encode and decode peak RSS above the process's RSS before the work (model and pictures loaded)."""
    return t.encode_peak_rss - t.baseline_rss, t.decode_peak_rss - t.baseline_rss


def whole_decode_memory(t: Timings) -> int:
    """Ours: the peak RSS of decoding every layer at once above the RSS before the work."""
    return (t.whole_decode_peak_rss or t.baseline_rss) - t.baseline_rss


def find(outcomes: list[Outcome], label: str, size: Size, threads: int) -> Timings | None:
    for outcome in outcomes:
        if outcome.label == label and outcome.size == size and outcome.threads == threads:
            return outcome.timings
    return None


def _cell(t: Timings | None, value: Callable[[Timings], float]) -> str:
    return report.seconds(value(t)) if t is not None else "failed"


def _ratio(ours: Timings, other: Timings, value: Callable[[Timings], float]) -> str:
    return report.ratio(value(ours), value(other))


def _first_layer(t: Timings) -> float:
    return median_layer(t, 0)


def _kodak(plan: Plan) -> Size:
    """The Kodak size when it was measured, else the last size."""
    return Size(*KODAK_SIZE) if Size(*KODAK_SIZE) in plan.sizes else plan.sizes[-1]


def _dtype() -> str:
    from codec.api import INFERENCE_DTYPE

    return str(INFERENCE_DTYPE).removeprefix("torch.")


def ours_name() -> str:
    """Our row's name: the codec, the float type its networks run in and the runtime that runs them."""
    return f"ours ({_dtype()}, ONNX Runtime)"


def _codec_name(label: str, t: Timings | None) -> str:
    if label == "ours":
        return ours_name()
    if label == TORCH_LABEL:
        return f"ours ({_dtype()}, torch: the runtime not chosen)"
    if label == "jpeg2000":
        layers = len(t.decode[0]) if t else "?"
        return f"JPEG 2000, {layers} quality layers"
    quality = int(label.split("q")[1])
    return f"bmshj2018-hyperprior q{quality} ({BMSHJ_ARCHITECTURES[quality]}), random weights"


# -- tables ----------------------------------------------------------------------------------------------


def kodak_table(outcomes: list[Outcome], plan: Plan, size: Size) -> str:
    rows = []
    labels = ["ours", TORCH_LABEL, "jpeg2000"] + [f"bmshj q{q}" for q in plan.bmshj_qualities]
    for label in labels:
        for threads in [1] if label == "jpeg2000" else plan.threads:
            t = find(outcomes, label, size, threads)
            ours = find(outcomes, "ours", size, threads)
            if t is None and not any(o.label == label and o.size == size for o in outcomes):
                continue
            ours_like = label in ("ours", TORCH_LABEL)
            further = median_further_layer(t) if t is not None and ours_like else None
            compared = label != "ours" and t is not None and ours is not None
            rows.append(
                [
                    _codec_name(label, t),
                    str(threads),
                    _cell(t, median_encode),
                    _cell(t, _first_layer),
                    report.seconds(further) if ours_like else "—",
                    _cell(t, median_all_layers),
                    report.mebibytes(max(t.encode_peak_rss, t.decode_peak_rss)) if t else "failed",
                    _ratio(ours, t, median_encode) if compared else "—",
                    _ratio(ours, t, _first_layer) if compared else "—",
                    _ratio(ours, t, median_all_layers) if compared else "—",
                ]
            )
    headers = [
        "codec", "threads", "encode", "decode: first layer", "decode: each further layer", "decode: all layers",
        "peak RSS", "ours ÷ this: encode", "ours ÷ this: first layer", "ours ÷ this: all layers",
    ]  # fmt: skip
    return report.table(headers, rows, right=range(1, 10))


def per_layer_table(outcomes: list[Outcome], plan: Plan, size: Size) -> str:
    ours = {threads: find(outcomes, "ours", size, threads) for threads in plan.threads}
    jpeg2000 = find(outcomes, "jpeg2000", size, 1)
    reference = next((t for t in ours.values() if t is not None), None)
    if reference is None:
        return "Our codec failed at this size.\n"
    rows = []
    for i, bpp in enumerate(reference.bpp):
        row = [str(i + 1), f"{bpp:.3f}"]
        row += [report.seconds(median_layer(t, i)) if t else "failed" for t in ours.values()]
        if jpeg2000 is not None:
            j2k = median_layer(jpeg2000, i)
            row += [report.seconds(j2k), report.ratio(median_layer(reference, i), j2k)]
        rows.append(row)
    headers = ["layer", "cumulative bpp"]
    headers += [f"ours: this layer, {threads} thread(s)" for threads in ours]
    if jpeg2000 is not None:
        headers += ["JPEG 2000: layers 1..n from scratch", "ours ÷ JPEG 2000"]
    return report.table(headers, rows, right=range(len(headers)))


def _first_bmshj(plan: Plan) -> str:
    """The column name of the first bmshj quality, `-` when none ran."""
    return str(plan.bmshj_qualities[0]) if plan.bmshj_qualities else "-"


def scaling_table(outcomes: list[Outcome], plan: Plan) -> str:
    rows = []
    for size in plan.sizes:
        jpeg2000 = find(outcomes, "jpeg2000", size, 1)
        for threads in plan.threads:
            t = find(outcomes, "ours", size, threads)
            if t is None:
                error = next((o.error for o in outcomes if o.label == "ours" and o.size == size), "not run")
                rows.append([str(size), f"{size.megapixels:.2f}", str(threads), f"failed: {error}"] + [""] * 7)
                continue
            bmshj = find(outcomes, f"bmshj q{plan.bmshj_qualities[0]}", size, threads) if plan.bmshj_qualities else None
            runs = len(t.encode)
            rows.append(
                [
                    str(size),
                    f"{size.megapixels:.2f}",
                    str(threads),
                    f"{runs}",
                    f"{t.bpp[-1]:.3f}",
                    report.seconds(median_encode(t)),
                    report.seconds(median_encode(t) / size.megapixels),
                    report.seconds(median_layer(t, 0)),
                    report.seconds(median_further_layer(t)),
                    report.seconds(median_all_layers(t) / size.megapixels),
                    (
                        f"{_ratio(t, jpeg2000, median_encode)} / {_ratio(t, jpeg2000, median_all_layers)}"
                        if jpeg2000 and threads == 1
                        else "—"
                    ),
                    f"{_ratio(t, bmshj, median_encode)} / {_ratio(t, bmshj, _first_layer)}" if bmshj else "—",
                ]
            )
    headers = [
        "size", "MP", "threads", "runs", "bpp (all layers)", "encode", "encode per MP", "first layer",
        "each further layer", "decode all layers per MP", "÷ JPEG 2000: encode / all layers",
        f"÷ bmshj q{_first_bmshj(plan)}: encode / first layer",
    ]  # fmt: skip
    return report.table(headers, rows, right=range(1, 12))


def memory_table(outcomes: list[Outcome], plan: Plan) -> str:
    rows = []
    for size in plan.sizes:
        t = find(outcomes, "ours", size, plan.threads[0])
        jpeg2000 = find(outcomes, "jpeg2000", size, 1)
        bmshj = (
            find(outcomes, f"bmshj q{plan.bmshj_qualities[0]}", size, plan.threads[0]) if plan.bmshj_qualities else None
        )
        if t is None:
            rows.append([str(size), f"{size.megapixels:.2f}", "failed", "", "", "", "", "", ""])
            continue
        encode_work, decode_work = working_memory(t)
        per_mp = (encode_work, decode_work, whole_decode_memory(t))
        rows.append(
            [
                str(size),
                f"{size.megapixels:.2f}",
                report.mebibytes(t.encode_peak_rss),
                report.mebibytes(t.decode_peak_rss),
                report.mebibytes(t.whole_decode_peak_rss or 0),
                " / ".join(report.mebibytes(work / size.megapixels) for work in per_mp),
                report.mebibytes(max(jpeg2000.encode_peak_rss, jpeg2000.decode_peak_rss)) if jpeg2000 else "—",
                report.mebibytes(max(bmshj.encode_peak_rss, bmshj.decode_peak_rss)) if bmshj else "—",
                report.mebibytes(t.baseline_rss),
            ]
        )
    headers = [
        "size", "MP", "ours: encode peak RSS", "ours: progressive decode peak RSS", "ours: decode at once peak RSS",
        "ours: working memory per MP (encode / progressive / at once)", "JPEG 2000 peak RSS",
        f"bmshj q{_first_bmshj(plan)} peak RSS", "ours: RSS before the work (model loaded)",
    ]  # fmt: skip
    return report.table(headers, rows, right=range(1, 9))


def region_table(outcomes: list[Outcome], plan: Plan) -> str:
    """Every layer decoded at once, and a centre region decoded alone, beside the progressive decode."""
    rows = []
    for size in plan.sizes:
        jpeg2000 = find(outcomes, "jpeg2000", size, 1)
        for threads in plan.threads:
            t = find(outcomes, "ours", size, threads)
            if t is None or t.whole_decode is None:
                continue
            region_width, region_height = t.region
            rows.append(
                [
                    str(size),
                    str(threads),
                    report.seconds(t.whole_decode),
                    report.seconds(median_all_layers(t)),
                    report.seconds(median_all_layers(jpeg2000)) if jpeg2000 else "—",
                    f"{region_width}x{region_height}",
                    report.seconds(t.region_decode[0]),
                    report.seconds(max(t.region_decode)),
                    report.ratio(max(t.region_decode), t.whole_decode),
                ]
            )
    headers = [
        "size", "threads", "ours: all layers at once", "ours: all layers, progressively", "JPEG 2000: all layers",
        "region at the centre", "ours: region at layer 1", "ours: region at its slowest layer count",
        "region ÷ whole picture",
    ]  # fmt: skip
    return report.table(headers, rows, right=range(1, 9))


def memory_note(outcomes: list[Outcome]) -> str:
    """Where whole-image coding runs out of memory, projected from the largest size measured."""
    import psutil

    measured = [o for o in outcomes if o.label == "ours" and o.timings is not None]
    failed = [o for o in outcomes if o.label == "ours" and o.timings is None]
    lines = []
    if measured:
        largest = max(measured, key=lambda o: o.size.megapixels)
        encode_work, _ = working_memory(largest.timings)
        per_mp = max(encode_work, whole_decode_memory(largest.timings)) / largest.size.megapixels
        ram = psutil.virtual_memory().total
        lines.append(
            f"The codec codes {DEFAULT_TILE_SIZE}² tiles in batches of at most 1 MP, so encoding and decoding at "
            f"once work in memory that follows the batch, not the picture: at {largest.size} "
            f"({ours_name()}) {report.mebibytes(max(per_mp, 0))} per megapixel above the loaded model, and "
            "less per megapixel the larger the picture. The progressive `Decoder` also keeps every tile's "
            f"recurrent state (so the next layer costs one step) and the pictures shown, within budgets of "
            f"{DEFAULT_STATE_BUDGET / 2**30:.0f} GiB and {DEFAULT_PICTURE_BUDGET / 2**20:.0f} MiB; past them it "
            f"decodes the oldest tiles again from the first layer. This machine has {ram / 2**30:.1f} GiB, and "
            "concurrent workers divide that."
        )
    for outcome in failed:
        lines.append(f"At {outcome.size} ({outcome.threads} thread(s)) the run failed: {outcome.error}.")
    return "\n\n".join(lines) + "\n"


def _source(path: str, number: int) -> str:
    text = linecache.getline(str(REPO / path), number).strip()
    return f"`{text}`" if text else ""


def profile_section(profile: Profile | None) -> str:
    """Where the time of one Kodak encode and decode goes, by call site and by leaf frame."""
    if profile is None:
        return "Not profiled in this run (`--no-profile`).\n"
    if profile.py_spy_missing:
        return "Not profiled: py-spy is not installed (`pip install py-spy`).\n"
    if profile.py_spy_error is not None:
        return f"Not profiled: py-spy failed ({profile.py_spy_error}).\n"
    parts = [
        f"py-spy ({PROFILE_RATE} samples/s, Python frames) on one encode and one decode of every layer of the "
        f"first image at {profile.size}, 1 thread. *Call site*: the line of `codec/api.py` or `codec/coding.py` "
        "under which the sample fell. *Leaf*: the innermost Python frame (where a C++ kernel was called).\n"
    ]
    for operation, stage in profile.stages.items():
        total = stage.samples or 1
        rows = [
            [f"{path}:{number} {_source(path, number)}", f"{100 * n / total:.0f} %"]
            for (path, number), n in stage.sites
        ]
        parts.append(f"**{operation}** ({stage.samples} samples), by call site:\n")
        parts.append(report.table(["call site", "share"], rows, right=[1]))
        rows = [[f"`{leaf}`", f"{100 * n / total:.0f} %"] for leaf, n in stage.leaves]
        parts.append(f"**{operation}**, hottest leaf frames:\n")
        parts.append(report.table(["leaf frame", "share"], rows, right=[1]))
    return "\n".join(parts)


# -- the section and the headline -------------------------------------------------------------------------


def weights_description(weights: Weights) -> str:
    steps = weights.steps
    trained = f"trained {steps} steps" if steps else ("trained" if weights.trained else "untrained (random)")
    return (
        f"`{weights.path}` ({trained}, model id {weights.model_id[:12]}…, {weights.layers} layers); "
        f"inference runs in {_dtype()} "
        "(`codec.api.INFERENCE_DTYPE`; the symbols are exact, pixels agree within ±1 across thread counts)"
    )


def headline_threads(plan: Plan) -> int:
    """The thread count quoted first: 2, the issue's and a 2-core server's, when it was measured."""
    return 2 if 2 in plan.threads else plan.threads[0]


def compass_note(outcomes: list[Outcome], plan: Plan, kodak: Size) -> str:
    threads = headline_threads(plan)
    t = find(outcomes, "ours", kodak, threads)
    if t is None:
        return ""
    return (
        f"Compass (a Kodak-size image served progressively in well under a second per layer): at {kodak} on "
        f"{threads} thread(s) the first layer decodes in {report.seconds(median_layer(t, 0))} and each "
        f"further layer in {report.seconds(median_further_layer(t))}; encoding all layers takes "
        f"{report.seconds(median_encode(t))}.\n"
    )


def render(
    outcomes: list[Outcome],
    plan: Plan,
    weights: Weights,
    profile: Profile | None,
    machine: str,
    argv: list[str],
    seconds: float,
) -> str:
    """The section of bench/RESULTS.md."""
    kodak = _kodak(plan)
    sections = [
        "## Codec: encode and progressive decode\n",
        f"`python -m bench.codec {' '.join(argv)}` — {seconds / 60:.1f} min.\n",
        machine,
        f"* Weights: {weights_description(weights)}.",
        f"* Pictures: the first {plan.count} images of `{plan.images.name}`, centre-cropped to each "
        f"size's aspect and resized with Lanczos; {plan.count} images × {plan.repeats} runs per configuration, "
        f"medians; sizes above {plan.once_above} MP once, on one image. Upscaled pictures (1024² and up) are "
        "smoother than photos of that size, so they cost fewer bits per pixel (see the bpp column).",
        "* Ours: encode = every layer; first layer = a new `Decoder` decoding layer 1; each further layer = one "
        "incremental step (median over layers 2..L); all layers = the sum.",
        "* JPEG 2000: Pillow/OpenJPEG, 9/7 wavelet with the colour transform, one file with a quality layer at "
        "each of our layers' mean rates at that size; decoding n layers always starts from scratch. Pillow runs "
        "OpenJPEG on one thread, so it is measured once.",
        "* bmshj2018-hyperprior: CompressAI `bmshj2018_hyperprior(quality=q, pretrained=False)`, **random "
        "weights**, float32, `update()` then `compress`/`decompress` (times only: its rate, and with it the "
        "rANS work, differs from a trained model's; random latents spread wider, so if anything its entropy "
        "coding is slower here than trained).",
        "* Peak RSS: the measuring process's high-water mark during the work (reset before encode and before "
        "decode), model and pictures included; each configuration runs in its own process.",
        "* Ratios are ours ÷ the alternative, measured in the same command: above 1 means ours is slower.\n",
        f"### At {kodak} (Kodak size)\n",
        kodak_table(outcomes, plan, kodak),
        f"### Per layer at {kodak}\n",
        "Ours: the time of that layer alone (layer 1 from scratch, then incremental); JPEG 2000: decoding "
        "layers 1..n from scratch.\n",
        per_layer_table(outcomes, plan, kodak),
        "### Cost against image size (ours)\n",
        scaling_table(outcomes, plan),
        "### Memory against image size\n",
        memory_table(outcomes, plan),
        memory_note(outcomes),
        "### Decoding at once, and a region alone\n",
        "At once: every layer of the first picture in one call, keeping no states or pictures (as "
        "`python -m codec decompress` does). Region: a new `Decoder` decoding only the tiles a centre region "
        "touches (`decode(n, region=...)`), from scratch at each layer count n; its slowest n is given.\n",
        region_table(outcomes, plan),
        compass_note(outcomes, plan, kodak),
        "### Where the time goes\n",
        profile_section(profile),
    ]
    return "\n".join(sections)


def headline(outcomes: list[Outcome], plan: Plan, date: str) -> str:
    """The rows quoted in bench/README.md."""
    kodak = _kodak(plan)
    threads = headline_threads(plan)
    ours, jpeg2000 = find(outcomes, "ours", kodak, threads), find(outcomes, "jpeg2000", kodak, 1)
    quality = plan.bmshj_qualities[0] if plan.bmshj_qualities else None
    bmshj = find(outcomes, f"bmshj q{quality}", kodak, threads) if quality else None
    if ours is None:
        return "Our codec failed at the Kodak size; see bench/RESULTS.md.\n"
    rows = []
    for name, value in (
        ("encode, all layers", median_encode),
        ("decode, first layer", _first_layer),
        ("decode, all layers", median_all_layers),
    ):
        rows.append(
            [
                name,
                report.seconds(value(ours)),
                f"{report.seconds(value(jpeg2000))} ({_ratio(ours, jpeg2000, value)})" if jpeg2000 else "n/a",
                f"{report.seconds(value(bmshj))} ({_ratio(ours, bmshj, value)})" if bmshj else "n/a",
            ]
        )
    rows.append(["decode, each further layer", report.seconds(median_further_layer(ours)), "—", "—"])
    return (
        f"Codec at {kodak}, {threads} thread(s), {date} UTC (ours ÷ alternative in brackets; "
        "full tables in RESULTS.md):\n\n"
        + report.table(["", "ours", "JPEG 2000 (OpenJPEG)", f"bmshj2018-hyperprior q{quality} (random weights)"], rows)
    )
