"""Codec benchmark: our encode and progressive decode beside JPEG 2000 and bmshj2018-hyperprior.

    python -m bench.codec [--images ../shared/data/kodak] [--count 3] [--repeats 3] [--threads 1 2]
                          [--sizes 256x256 512x512 768x512 1024x1024 2048x2048] [--weights PATH]

Every configuration (codec, image size, torch threads) runs in a fresh process
(`python -m bench.codec measure ...`), so its peak RSS is its own; the alternatives
run in the same command, on the same pictures, so their ratios to ours survive a
busy machine. Pictures of each size are cut from Kodak images (centre crop to the
aspect, then a Lanczos resize). Times are medians over `count` images x `repeats`.
Sizes above `--once-above` megapixels are measured once, on one image.

Our decode is timed as the client and the server run it: layer 1 from scratch
(a new `Decoder`), then each further layer incrementally (one RNN step).
JPEG 2000 (Pillow/OpenJPEG) gets one file with a quality layer at each of our
layers' mean rates, and decodes the first n of them from scratch.
CompressAI's bmshj2018-hyperprior runs with random weights: its times are real,
its rates are not. Writes its section of bench/RESULTS.md and the headline of
bench/README.md, and profiles one Kodak encode and decode with py-spy.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import linecache
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench import report
from codec.container import DEFAULT_TILE_SIZE

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "kodak"
DEFAULT_SIZES = ("256x256", "512x512", "768x512", "1024x1024", "2048x2048")
KODAK_SIZE = (768, 512)
WARM_UP_SIDE = 128
JPEG2000_BITS_PER_PIXEL = 24.0  # Pillow's "rates" are compression ratios of 24-bit RGB
BMSHJ_ARCHITECTURES = {q: "N=128, M=192" if q <= 5 else "N=192, M=320" for q in range(1, 9)}
PROFILE_RATE = 100  # py-spy samples per second
PROFILE_TOP = 8


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Size:
        width, _, height = text.lower().partition("x")
        return cls(int(width), int(height))

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


# -- pictures and memory, in the measuring process --------------------------------------------------


def test_pictures(directory: Path, count: int, size: Size) -> list[np.ndarray]:
    """The first `count` Kodak images, turned to the size's orientation, centre-cropped to its aspect, resized."""
    from codec.data import list_images
    from codec.imageio import read_image

    pictures = []
    for path in list_images(directory)[:count]:
        pixels = read_image(path)
        height, width, _ = pixels.shape
        if size.width != size.height and (height > width) != (size.height > size.width):
            pixels = np.ascontiguousarray(np.rot90(pixels))
            height, width = width, height
        aspect = size.width / size.height
        crop_width, crop_height = min(width, round(height * aspect)), min(height, round(width / aspect))
        left, top = (width - crop_width) // 2, (height - crop_height) // 2
        image = Image.fromarray(pixels[top : top + crop_height, left : left + crop_width])
        if image.size != (size.width, size.height):
            image = image.resize((size.width, size.height), Image.Resampling.LANCZOS)
        pictures.append(np.asarray(image))
    if not pictures:
        raise SystemExit(f"no images in {directory}")
    return pictures


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


def start_phase() -> int:
    """Reset the kernel's peak-RSS mark (Linux clear_refs) and return the RSS the phase starts from."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def phase_peak() -> int:
    """Peak RSS since the last `start_phase`."""
    return _status_bytes("VmHWM")


@dataclass
class Timings:
    """One configuration's raw figures, as the measuring process prints them (JSON)."""

    codec: str
    width: int
    height: int
    threads: int
    encode: list[float]  # seconds, one per run
    decode: list[list[float]]  # per run: seconds per layer (ours: layer 1 from scratch, then incremental)
    bpp: list[float]  # mean cumulative bits per pixel at each layer
    baseline_rss: int
    encode_peak_rss: int
    decode_peak_rss: int


def _median_bpp(sizes: list[list[int]], pixels: int) -> list[float]:
    return [statistics.mean(run[i] for run in sizes) * 8 / pixels for i in range(len(sizes[0]))]


def measure_ours(pictures: list[np.ndarray], repeats: int, weights: str | None) -> dict:
    from codec.api import Decoder, encode, load_model
    from codec.container import parse_header

    model = load_model(weights)
    warm = encode(pictures[0][:WARM_UP_SIDE, :WARM_UP_SIDE], model)
    Decoder(warm, model).decode()
    baseline = start_phase()
    encode_seconds, bitstreams = [], []
    for pixels in pictures:
        for _ in range(repeats):
            started = time.perf_counter()
            data = encode(pixels, model)
            encode_seconds.append(time.perf_counter() - started)
        bitstreams.append(data)
    encode_peak = phase_peak()
    start_phase()
    decode_seconds, layer_ends = [], []
    for data in bitstreams:
        header = parse_header(data)
        layer_ends.append([header.end_of_layer(n) for n in range(1, header.layer_count + 1)])
        for _ in range(repeats):
            per_layer = []
            started = time.perf_counter()
            decoder = Decoder(data, model)
            for n in range(1, header.layer_count + 1):
                decoder.decode(n)
                per_layer.append(time.perf_counter() - started)
                started = time.perf_counter()
            decode_seconds.append(per_layer)
            del decoder
    height, width, _ = pictures[0].shape
    return {
        "encode": encode_seconds,
        "decode": decode_seconds,
        "bpp": _median_bpp(layer_ends, width * height),
        "baseline_rss": baseline,
        "encode_peak_rss": encode_peak,
        "decode_peak_rss": phase_peak(),
    }


def measure_jpeg2000(pictures: list[np.ndarray], repeats: int, rates: list[float]) -> dict:
    """One file with a quality layer at each rate (9/7 wavelet, colour transform); decode n layers from scratch."""
    ratios = [max(1.0, JPEG2000_BITS_PER_PIXEL / rate) for rate in rates]
    options = {"quality_mode": "rates", "quality_layers": ratios, "irreversible": True, "mct": 1}
    baseline = start_phase()
    encode_seconds, files = [], []
    for pixels in pictures:
        for _ in range(repeats):
            buffer = io.BytesIO()
            started = time.perf_counter()
            Image.fromarray(pixels).save(buffer, format="JPEG2000", **options)
            encode_seconds.append(time.perf_counter() - started)
        files.append(buffer.getvalue())
    encode_peak = phase_peak()
    start_phase()
    decode_seconds = []
    for data in files:
        for _ in range(repeats):
            per_layer = []
            for n in range(1, len(ratios) + 1):
                started = time.perf_counter()
                with Image.open(io.BytesIO(data)) as image:
                    image.layers = n
                    image.load()
                per_layer.append(time.perf_counter() - started)
            decode_seconds.append(per_layer)
    height, width, _ = pictures[0].shape
    return {
        "encode": encode_seconds,
        "decode": decode_seconds,
        "bpp": [statistics.mean(len(data) for data in files) * 8 / (width * height)],
        "baseline_rss": baseline,
        "encode_peak_rss": encode_peak,
        "decode_peak_rss": phase_peak(),
    }


def measure_bmshj(pictures: list[np.ndarray], repeats: int, quality: int) -> dict:
    """CompressAI's hyperprior model with random weights (float32, as CompressAI runs it)."""
    import torch
    from compressai.zoo import bmshj2018_hyperprior
    from torch.nn import functional as F

    network = bmshj2018_hyperprior(quality=quality, pretrained=False).eval()
    network.update(force=True)

    def tensor(pixels: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(255.0)
        height, width = x.shape[-2:]
        return F.pad(x, (0, -width % 64, 0, -height % 64), mode="replicate")

    with torch.no_grad():
        network.decompress(**network.compress(tensor(pictures[0][:WARM_UP_SIDE, :WARM_UP_SIDE])))
        baseline = start_phase()
        encode_seconds, coded = [], []
        for pixels in pictures:
            x = tensor(pixels)
            for _ in range(repeats):
                started = time.perf_counter()
                out = network.compress(x)
                encode_seconds.append(time.perf_counter() - started)
            coded.append(out)
        encode_peak = phase_peak()
        start_phase()
        decode_seconds = []
        for out in coded:
            for _ in range(repeats):
                started = time.perf_counter()
                network.decompress(out["strings"], out["shape"])
                decode_seconds.append([time.perf_counter() - started])
    height, width, _ = pictures[0].shape
    sizes = [sum(len(s[0]) for s in out["strings"]) for out in coded]
    return {
        "encode": encode_seconds,
        "decode": decode_seconds,
        "bpp": [statistics.mean(sizes) * 8 / (width * height)],
        "baseline_rss": baseline,
        "encode_peak_rss": encode_peak,
        "decode_peak_rss": phase_peak(),
    }


def measure(args: argparse.Namespace) -> None:
    """The `measure` command: one configuration in this process; prints its Timings as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    size = Size(args.width, args.height)
    pictures = test_pictures(Path(args.images), args.count, size)
    if args.codec == "ours":
        figures = measure_ours(pictures, args.repeats, args.weights)
    elif args.codec == "jpeg2000":
        figures = measure_jpeg2000(pictures, args.repeats, args.rates)
    else:
        figures = measure_bmshj(pictures, args.repeats, args.quality)
    timings = Timings(args.codec, size.width, size.height, args.threads, **figures)
    print(json.dumps(timings.__dict__))


# -- the driver: one process per configuration --------------------------------------------------------


@dataclass
class Outcome:
    """A configuration's Timings, or why its process failed."""

    label: str
    size: Size
    threads: int
    timings: Timings | None
    error: str | None = None
    wall_seconds: float = 0.0


def run_configuration(
    label: str, codec: str, size: Size, threads: int, args: argparse.Namespace, extra: list[str]
) -> Outcome:
    count, repeats = (1, 1) if size.megapixels > args.once_above else (args.count, args.repeats)
    command = [
        sys.executable, "-m", "bench.codec", "measure", "--codec", codec,
        "--width", str(size.width), "--height", str(size.height), "--threads", str(threads),
        "--count", str(count), "--repeats", str(repeats), "--images", str(args.images), *extra,
    ]  # fmt: skip
    if args.weights:
        command += ["--weights", str(args.weights)]
    print(f"bench.codec: {label}, {size}, {threads} thread(s), {count} image(s) x {repeats}", file=sys.stderr)
    started = time.perf_counter()
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        lines = [line for line in process.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else "no message"
        if process.returncode < 0:
            reason = f"killed by signal {-process.returncode} (out of memory?)"
        return Outcome(label, size, threads, None, f"exit status {process.returncode}: {reason}", wall)
    timings = Timings(**json.loads(process.stdout.strip().splitlines()[-1]))
    return Outcome(label, size, threads, timings, None, wall)


def run_all(args: argparse.Namespace) -> list[Outcome]:
    outcomes = []
    for size in args.sizes:
        ours = [run_configuration("ours", "ours", size, t, args, []) for t in args.threads]
        outcomes += ours
        reference = next((o.timings for o in ours if o.timings), None)
        if reference is not None:
            rates = [f"{rate:.5f}" for rate in reference.bpp]
            outcomes.append(run_configuration("jpeg2000", "jpeg2000", size, 1, args, ["--rates", *rates]))
        for quality in args.bmshj_qualities:
            for threads in args.threads:
                outcomes.append(
                    run_configuration(f"bmshj q{quality}", "bmshj", size, threads, args, ["--quality", str(quality)])
                )
    return outcomes


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
    if t.codec == "ours":
        return sum(median_layer(t, i) for i in range(len(t.decode[0])))
    return median_layer(t, len(t.decode[0]) - 1)


def working_memory(t: Timings) -> tuple[int, int]:
    """Encode and decode peak RSS above the process's RSS before the work (model and pictures loaded)."""
    return t.encode_peak_rss - t.baseline_rss, t.decode_peak_rss - t.baseline_rss


def find(outcomes: list[Outcome], label: str, size: Size, threads: int) -> Timings | None:
    for outcome in outcomes:
        if outcome.label == label and outcome.size == size and outcome.threads == threads:
            return outcome.timings
    return None


def _cell(t: Timings | None, value) -> str:
    return report.seconds(value(t)) if t is not None else "failed"


def kodak_table(outcomes: list[Outcome], args: argparse.Namespace, size: Size) -> str:
    rows = []
    labels = ["ours", "jpeg2000"] + [f"bmshj q{q}" for q in args.bmshj_qualities]
    for label in labels:
        for threads in [1] if label == "jpeg2000" else args.threads:
            t = find(outcomes, label, size, threads)
            ours = find(outcomes, "ours", size, threads)
            if t is None and not any(o.label == label and o.size == size for o in outcomes):
                continue
            further = median_further_layer(t) if t is not None and label == "ours" else None
            rows.append(
                [
                    _codec_name(label, t),
                    str(threads),
                    _cell(t, median_encode),
                    _cell(t, lambda x: median_layer(x, 0)),
                    report.seconds(further) if label == "ours" else "—",
                    _cell(t, median_all_layers),
                    report.mebibytes(max(t.encode_peak_rss, t.decode_peak_rss)) if t else "failed",
                    "—" if label == "ours" or t is None or ours is None else _ratio(ours, t, median_encode),
                    "—"
                    if label == "ours" or t is None or ours is None
                    else _ratio(ours, t, lambda x: median_layer(x, 0)),
                    "—" if label == "ours" or t is None or ours is None else _ratio(ours, t, median_all_layers),
                ]
            )
    headers = [
        "codec", "threads", "encode", "decode: first layer", "decode: each further layer", "decode: all layers",
        "peak RSS", "ours ÷ this: encode", "ours ÷ this: first layer", "ours ÷ this: all layers",
    ]  # fmt: skip
    return report.table(headers, rows, right=range(1, 10))


def _ratio(ours: Timings, other: Timings, value) -> str:
    return report.ratio(value(ours), value(other))


def ours_name() -> str:
    """Our row's name: the codec and the float type its networks run in."""
    from codec.api import INFERENCE_DTYPE

    return f"ours ({str(INFERENCE_DTYPE).removeprefix('torch.')})"


def _codec_name(label: str, t: Timings | None) -> str:
    if label == "ours":
        return ours_name()
    if label == "jpeg2000":
        layers = len(t.decode[0]) if t else "?"
        return f"JPEG 2000, {layers} quality layers"
    quality = int(label.split("q")[1])
    return f"bmshj2018-hyperprior q{quality} ({BMSHJ_ARCHITECTURES[quality]}), random weights"


def per_layer_table(outcomes: list[Outcome], args: argparse.Namespace, size: Size) -> str:
    ours = {threads: find(outcomes, "ours", size, threads) for threads in args.threads}
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


def scaling_table(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    rows = []
    for size in args.sizes:
        jpeg2000 = find(outcomes, "jpeg2000", size, 1)
        for threads in args.threads:
            t = find(outcomes, "ours", size, threads)
            if t is None:
                error = next((o.error for o in outcomes if o.label == "ours" and o.size == size), "not run")
                rows.append([str(size), f"{size.megapixels:.2f}", str(threads), f"failed: {error}"] + [""] * 7)
                continue
            bmshj = find(outcomes, f"bmshj q{args.bmshj_qualities[0]}", size, threads) if args.bmshj_qualities else None
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
                    f"{_ratio(t, bmshj, median_encode)} / {_ratio(t, bmshj, lambda x: median_layer(x, 0))}"
                    if bmshj
                    else "—",
                ]
            )
    headers = [
        "size", "MP", "threads", "runs", "bpp (all layers)", "encode", "encode per MP", "first layer",
        "each further layer", "decode all layers per MP", "÷ JPEG 2000: encode / all layers",
        f"÷ bmshj q{args.bmshj_qualities[0] if args.bmshj_qualities else '-'}: encode / first layer",
    ]  # fmt: skip
    return report.table(headers, rows, right=range(1, 12))


def memory_table(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    rows = []
    for size in args.sizes:
        t = find(outcomes, "ours", size, args.threads[0])
        jpeg2000 = find(outcomes, "jpeg2000", size, 1)
        bmshj = (
            find(outcomes, f"bmshj q{args.bmshj_qualities[0]}", size, args.threads[0]) if args.bmshj_qualities else None
        )
        if t is None:
            rows.append([str(size), f"{size.megapixels:.2f}", "failed", "", "", "", "", ""])
            continue
        encode_work, decode_work = working_memory(t)
        rows.append(
            [
                str(size),
                f"{size.megapixels:.2f}",
                report.mebibytes(t.encode_peak_rss),
                report.mebibytes(t.decode_peak_rss),
                " / ".join(report.mebibytes(work / size.megapixels) for work in (encode_work, decode_work)),
                report.mebibytes(max(jpeg2000.encode_peak_rss, jpeg2000.decode_peak_rss)) if jpeg2000 else "—",
                report.mebibytes(max(bmshj.encode_peak_rss, bmshj.decode_peak_rss)) if bmshj else "—",
                report.mebibytes(t.baseline_rss),
            ]
        )
    headers = [
        "size", "MP", "ours: encode peak RSS", "ours: decode peak RSS", "ours: working memory per MP (encode / decode)",
        "JPEG 2000 peak RSS", f"bmshj q{args.bmshj_qualities[0] if args.bmshj_qualities else '-'} peak RSS",
        "ours: RSS before the work (model loaded)",
    ]  # fmt: skip
    return report.table(headers, rows, right=range(1, 8))


def memory_note(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    """Where whole-image coding runs out of memory, projected from the largest size measured."""
    import psutil

    measured = [o for o in outcomes if o.label == "ours" and o.timings is not None]
    failed = [o for o in outcomes if o.label == "ours" and o.timings is None]
    lines = []
    if measured:
        largest = max(measured, key=lambda o: o.size.megapixels)
        encode_work, decode_work = working_memory(largest.timings)
        per_mp = max(encode_work, decode_work) / largest.size.megapixels
        ram = psutil.virtual_memory().total
        if per_mp <= 0:  # small pictures fit in memory the process already held: nothing to project from
            lines.append(
                f"At {largest.size} the work fitted in memory the process already held; measure a larger size."
            )
        else:
            lines.append(
                f"The codec codes {DEFAULT_TILE_SIZE}² tiles one after another; its working memory grew by "
                f"{report.mebibytes(per_mp)} per megapixel up to {largest.size} ({ours_name()}). "
                f"Extrapolated linearly: {per_mp * 100 / 2**30:.1f} GiB at the server's default `max_pixels` "
                f"(100 MP); this machine has {ram / 2**30:.1f} GiB, and concurrent workers divide that."
            )
    for outcome in failed:
        lines.append(f"At {outcome.size} ({outcome.threads} thread(s)) the run failed: {outcome.error}.")
    return "\n\n".join(lines) + "\n"


# -- the profile ------------------------------------------------------------------------------------------


def _frame_site(frame: str) -> tuple[str, str, int] | None:
    """`name (path:line)` -> (name, path, line)."""
    name, _, location = frame.rpartition(" (")
    path, _, line = location.rstrip(")").rpartition(":")
    return (name, path, int(line)) if name and line.isdigit() else None


STAGE_FRAMES = {
    "encode": ("encode", "codec/api.py", ("encode_layer",)),
    "decode": ("Decoder.decode", "codec/api.py", ("decode_layer",)),
}


def summarise_profile(raw: str, top: int = PROFILE_TOP) -> dict[str, dict]:
    """py-spy raw (collapsed) stacks -> per operation: samples, share per call site, hottest leaf frames.

    A call site is the deepest line of `codec.api` or `codec.coding` on the stack: the statement of
    encode/decode (`model.analyse`, the latent rANS `compress`, `entropy_parameters`, ...) under which
    the sample was taken. A leaf frame is where the interpreter was (self time).
    """
    summary = {op: {"samples": 0, "sites": Counter(), "leaves": Counter()} for op in STAGE_FRAMES}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        sites = [_frame_site(frame) for frame in frames]
        for operation, (entry, entry_path, layer_functions) in STAGE_FRAMES.items():
            entries = [i for i, s in enumerate(sites) if s and s[0] == entry and s[1].endswith(entry_path)]
            if not entries:
                continue
            deepest = entries[-1]
            for i in range(deepest + 1, len(sites)):
                site = sites[i]
                if site and site[0] in layer_functions and site[1].endswith("codec/coding.py"):
                    deepest = i
            name, path, number = sites[deepest]
            summary[operation]["samples"] += int(count)
            summary[operation]["sites"][(path, number)] += int(count)
            summary[operation]["leaves"][frames[-1]] += int(count)
    for operation in summary.values():
        operation["sites"] = operation["sites"].most_common(top)
        operation["leaves"] = operation["leaves"].most_common(top)
    return summary


def _source(path: str, number: int) -> str:
    text = linecache.getline(str(REPO / path), number).strip()
    return f"`{text}`" if text else ""


def profile_section(args: argparse.Namespace) -> str:
    """py-spy on one Kodak encode and decode, 1 thread; the table of where the time goes."""
    if not args.profile:
        return "Not profiled in this run (`--no-profile`).\n"
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        return "Not profiled: py-spy is not installed (`pip install py-spy`).\n"
    size = Size(*KODAK_SIZE)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "profile.txt"
        command = [
            py_spy, "record", "--format", "raw", "--rate", str(PROFILE_RATE), "--output", str(out), "--",
            sys.executable, "-m", "bench.codec", "measure", "--codec", "ours", "--width", str(size.width),
            "--height", str(size.height), "--threads", "1", "--count", "1", "--repeats", "1",
            "--images", str(args.images),
        ]  # fmt: skip
        if args.weights:
            command += ["--weights", str(args.weights)]
        process = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if process.returncode != 0 or not out.exists():
            return f"Not profiled: py-spy failed ({process.stderr.strip().splitlines()[-1:]}).\n"
        summary = summarise_profile(out.read_text())
    parts = [
        f"py-spy ({PROFILE_RATE} samples/s, Python frames) on one encode and one decode of every layer of the "
        f"first image at {size}, 1 thread. *Call site*: the line of `codec/api.py` or `codec/coding.py` "
        "under which the sample fell. *Leaf*: the innermost Python frame (where a C++ kernel was called).\n"
    ]
    for operation, figures in summary.items():
        total = figures["samples"] or 1
        rows = [
            [f"{path}:{number} {_source(path, number)}", f"{100 * n / total:.0f} %"]
            for (path, number), n in figures["sites"]
        ]
        parts.append(f"**{operation}** ({figures['samples']} samples), by call site:\n")
        parts.append(report.table(["call site", "share"], rows, right=[1]))
        rows = [[f"`{leaf}`", f"{100 * n / total:.0f} %"] for leaf, n in figures["leaves"]]
        parts.append(f"**{operation}**, hottest leaf frames:\n")
        parts.append(report.table(["leaf frame", "share"], rows, right=[1]))
    return "\n".join(parts)


# -- the report -------------------------------------------------------------------------------------------


def weights_description(weights: str | None) -> str:
    from codec.api import INFERENCE_DTYPE, default_weights_path, load_model

    path = Path(weights) if weights else default_weights_path()
    model = load_model(path)
    steps = model.training_info.get("steps")
    trained = f"trained {steps} steps" if steps else ("trained" if model.trained else "untrained (random)")
    return (
        f"`{path}` ({trained}, model id {model.model_id.hex()[:12]}…, {model.config.layers} layers); "
        f"inference runs in {str(INFERENCE_DTYPE).removeprefix('torch.')} "
        "(`codec.api.INFERENCE_DTYPE`; the symbols are exact, pixels agree within ±1 across thread counts)"
    )


def render(outcomes: list[Outcome], args: argparse.Namespace, machine: str, weights: str, seconds: float) -> str:
    kodak = Size(*KODAK_SIZE) if Size(*KODAK_SIZE) in args.sizes else args.sizes[-1]
    sections = [
        "## Codec: encode and progressive decode\n",
        f"`python -m bench.codec {' '.join(args.argv)}` — {seconds / 60:.1f} min.\n",
        machine,
        f"* Weights: {weights}.",
        f"* Pictures: the first {args.count} images of `{Path(args.images).name}`, centre-cropped to each "
        f"size's aspect and resized with Lanczos; {args.count} images × {args.repeats} runs per configuration, "
        f"medians; sizes above {args.once_above} MP once, on one image. Upscaled pictures (1024² and up) are "
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
        kodak_table(outcomes, args, kodak),
        f"### Per layer at {kodak}\n",
        "Ours: the time of that layer alone (layer 1 from scratch, then incremental); JPEG 2000: decoding "
        "layers 1..n from scratch.\n",
        per_layer_table(outcomes, args, kodak),
        "### Cost against image size (ours)\n",
        scaling_table(outcomes, args),
        "### Memory against image size\n",
        memory_table(outcomes, args),
        memory_note(outcomes, args),
        compass_note(outcomes, args, kodak),
        "### Where the time goes\n",
        profile_section(args),
    ]
    return "\n".join(sections)


def compass_note(outcomes: list[Outcome], args: argparse.Namespace, kodak: Size) -> str:
    t = find(outcomes, "ours", kodak, args.threads[0])
    if t is None:
        return ""
    return (
        f"Compass (a Kodak-size image served progressively in well under a second per layer): at {kodak} on "
        f"{args.threads[0]} thread(s) the first layer decodes in {report.seconds(median_layer(t, 0))} and each "
        f"further layer in {report.seconds(median_further_layer(t))}; encoding all layers takes "
        f"{report.seconds(median_encode(t))}.\n"
    )


def headline(outcomes: list[Outcome], args: argparse.Namespace, date: str) -> str:
    """The rows quoted in bench/README.md."""
    kodak = Size(*KODAK_SIZE) if Size(*KODAK_SIZE) in args.sizes else args.sizes[-1]
    threads = args.threads[0]
    ours, jpeg2000 = find(outcomes, "ours", kodak, threads), find(outcomes, "jpeg2000", kodak, 1)
    quality = args.bmshj_qualities[0] if args.bmshj_qualities else None
    bmshj = find(outcomes, f"bmshj q{quality}", kodak, threads) if quality else None
    if ours is None:
        return "Our codec failed at the Kodak size; see bench/RESULTS.md.\n"
    rows = []
    for name, value in (
        ("encode, all layers", median_encode),
        ("decode, first layer", lambda x: median_layer(x, 0)),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Kodak folder")
    parser.add_argument("--count", type=int, default=3, help="images per size")
    parser.add_argument("--repeats", type=int, default=3, help="runs per image")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts")
    parser.add_argument("--sizes", type=Size.parse, nargs="+", default=[Size.parse(s) for s in DEFAULT_SIZES])
    parser.add_argument("--once-above", type=float, default=2.0, help="megapixels above which a size runs once")
    parser.add_argument("--bmshj-qualities", type=int, nargs="*", default=[3, 6], help="CompressAI qualities")
    parser.add_argument("--weights", help="weights file (default: weights/codec.pt or $CODEC_WEIGHTS)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the py-spy profile")
    parser.add_argument("--results", type=Path, default=report.RESULTS, help="the markdown report to update")
    parser.add_argument("--readme", type=Path, default=report.README, help="where the headline rows go")
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("measure", help="measure one configuration in this process; prints JSON")
    one.add_argument("--codec", choices=("ours", "jpeg2000", "bmshj"), required=True)
    one.add_argument("--width", type=int, required=True)
    one.add_argument("--height", type=int, required=True)
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--count", type=int, default=1)
    one.add_argument("--repeats", type=int, default=1)
    one.add_argument("--images", default=str(DEFAULT_IMAGES))
    one.add_argument("--weights")
    one.add_argument("--rates", type=float, nargs="+", help="jpeg2000: bits per pixel of each quality layer")
    one.add_argument("--quality", type=int, default=3, help="bmshj: CompressAI quality")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command == "measure":
        measure(args)
        return 0
    args.argv = argv
    started = time.perf_counter()
    machine = report.machine_description()
    weights = weights_description(args.weights)
    outcomes = run_all(args)
    body = render(outcomes, args, report.machine_table(machine), weights, time.perf_counter() - started)
    report.write_section("bench.codec", body, args.results)
    report.write_section("bench.codec", headline(outcomes, args, dict(machine)["date (UTC)"]), args.readme)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
