"""The codec benchmark's measurements: one configuration per process, its figures as `Timings`.

Kept apart from the Markdown (bench/codec_report.py) so that what was measured is plain data: the
measuring process prints its `Timings` as JSON, the driver reads them back into `Outcome`s.
"""

from __future__ import annotations

import ctypes
import gc
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench.processes import REPO

KODAK_SIZE = (768, 512)
WARM_UP_SIDE = 128
JPEG2000_BITS_PER_PIXEL = 24.0  # Pillow's "rates" are compression ratios of 24-bit RGB
PROFILE_RATE = 100  # py-spy samples per second
PROFILE_TOP = 8
REGION_SIDE = 1024  # the region decoded alone: at most this, and at most half the picture's side


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


@dataclass(frozen=True)
class Plan:
    """What one `python -m bench.codec` run measures (its options, less where it writes)."""

    images: Path
    count: int
    repeats: int
    threads: list[int]
    sizes: list[Size]
    once_above: float
    bmshj_qualities: list[int]
    weights: str | None
    profile: bool


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
    """Reset the kernel's peak-RSS mark (Linux clear_refs) and return the RSS the phase starts from.

    Memory the last phase freed goes back to the system first (glibc's malloc_trim): otherwise a phase's
    peak would carry what the allocator kept of the phase before it."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
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
    # ours only: every layer of the first picture decoded at once, as `python -m codec decompress` does
    # (no states or pictures kept), and a centre region decoded alone from scratch at each layer count
    whole_decode: float | None = None
    whole_decode_peak_rss: int | None = None
    region: tuple[int, int] | None = None  # its width and height
    region_decode: list[float] = field(default_factory=list)  # seconds, at layers 1..L


def _median_bpp(sizes: list[list[int]], pixels: int) -> list[float]:
    return [statistics.mean(run[i] for run in sizes) * 8 / pixels for i in range(len(sizes[0]))]


def measure_ours(pictures: list[np.ndarray], repeats: int, weights: str | None, runtime: str = "onnx") -> dict:
    from codec.api import Decoder, encode, load_model
    from codec.container import parse_header

    model = load_model(weights, runtime=runtime)
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
    decode_peak = phase_peak()
    start_phase()
    started = time.perf_counter()
    Decoder(bitstreams[0], model, state_budget=0, picture_budget=0).decode()
    whole_decode = time.perf_counter() - started
    whole_peak = phase_peak()
    height, width, _ = pictures[0].shape
    region_width, region_height = min(REGION_SIDE, width // 2), min(REGION_SIDE, height // 2)
    region = ((width - region_width) // 2, (height - region_height) // 2, region_width, region_height)
    region_seconds = []
    for n in range(1, len(layer_ends[0]) + 1):
        started = time.perf_counter()
        Decoder(bitstreams[0], model).decode(n, region=region)
        region_seconds.append(time.perf_counter() - started)
    return {
        "encode": encode_seconds,
        "decode": decode_seconds,
        "bpp": _median_bpp(layer_ends, width * height),
        "baseline_rss": baseline,
        "encode_peak_rss": encode_peak,
        "decode_peak_rss": decode_peak,
        "whole_decode": whole_decode,
        "whole_decode_peak_rss": whole_peak,
        "region": (region_width, region_height),
        "region_decode": region_seconds,
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


def measure(
    codec: str,
    size: Size,
    threads: int,
    images: Path,
    count: int,
    repeats: int,
    weights: str | None,
    rates: list[float] | None,
    quality: int,
) -> Timings:
    """One configuration in this process (the `measure` command)."""
    import torch

    torch.set_num_threads(threads)
    pictures = test_pictures(images, count, size)
    if codec == "ours":
        figures = measure_ours(pictures, repeats, weights)
    elif codec == "ours-torch":
        figures = measure_ours(pictures, repeats, weights, runtime="torch")
    elif codec == "jpeg2000":
        figures = measure_jpeg2000(pictures, repeats, rates)
    else:
        figures = measure_bmshj(pictures, repeats, quality)
    return Timings(codec, size.width, size.height, threads, **figures)


# -- the driver: one process per configuration --------------------------------------------------------


@dataclass
class Outcome:
    """A configuration's Timings, or why its process failed."""

    label: str
    size: Size
    threads: int
    timings: Timings | None
    error: str | None = None


def measure_command(
    codec: str, size: Size, threads: int, count: int, repeats: int, plan: Plan, extra: list[str]
) -> list[str]:
    """`python -m bench.codec measure ...` for one configuration."""
    command = [
        sys.executable, "-m", "bench.codec", "measure", "--codec", codec,
        "--width", str(size.width), "--height", str(size.height), "--threads", str(threads),
        "--count", str(count), "--repeats", str(repeats), "--images", str(plan.images), *extra,
    ]  # fmt: skip
    return command + (["--weights", str(plan.weights)] if plan.weights else [])


def run_configuration(label: str, codec: str, size: Size, threads: int, plan: Plan, extra: list[str]) -> Outcome:
    """One configuration in a fresh process, so that its peak RSS is its own; a failure becomes the Outcome's error."""
    count, repeats = (1, 1) if size.megapixels > plan.once_above else (plan.count, plan.repeats)
    command = measure_command(codec, size, threads, count, repeats, plan, extra)
    print(f"bench.codec: {label}, {size}, {threads} thread(s), {count} image(s) x {repeats}", file=sys.stderr)
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if process.returncode != 0:
        lines = [line for line in process.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else "no message"
        if process.returncode < 0:
            reason = f"killed by signal {-process.returncode} (out of memory?)"
        return Outcome(label, size, threads, None, f"exit status {process.returncode}: {reason}")
    timings = Timings(**json.loads(process.stdout.strip().splitlines()[-1]))
    return Outcome(label, size, threads, timings)


# The runtime that lost (torch, against ONNX Runtime), measured again beside ours at Kodak size.
TORCH_LABEL = "ours, torch"


def run_all(plan: Plan) -> list[Outcome]:
    """Ours at every size and thread count (and at Kodak size with torch instead of ONNX Runtime), JPEG 2000
    at our rates, bmshj at every quality."""
    outcomes = []
    for size in plan.sizes:
        ours = [run_configuration("ours", "ours", size, t, plan, []) for t in plan.threads]
        outcomes += ours
        if (size.width, size.height) == KODAK_SIZE:
            outcomes += [run_configuration(TORCH_LABEL, "ours-torch", size, t, plan, []) for t in plan.threads]
        reference = next((o.timings for o in ours if o.timings), None)
        if reference is not None:
            rates = [f"{rate:.5f}" for rate in reference.bpp]
            outcomes.append(run_configuration("jpeg2000", "jpeg2000", size, 1, plan, ["--rates", *rates]))
        for quality in plan.bmshj_qualities:
            for threads in plan.threads:
                outcomes.append(
                    run_configuration(f"bmshj q{quality}", "bmshj", size, threads, plan, ["--quality", str(quality)])
                )
    return outcomes


# -- the weights and the profile --------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """The model the run measured."""

    path: Path
    steps: int | None
    trained: bool
    model_id: str  # hex
    layers: int


def weights(path: str | None) -> Weights:
    """The model at `path` (default: the shipped weights), loaded once to describe it."""
    from codec.api import default_weights_path, load_model

    location = Path(path) if path else default_weights_path()
    model = load_model(location)
    steps = model.training_info.get("steps")
    return Weights(location, steps, model.trained, model.model_id.hex(), model.config.layers)


@dataclass
class Stage:
    """py-spy's samples under one operation, with the most sampled call sites and leaf frames."""

    samples: int
    sites: list[tuple[tuple[str, int], int]]  # ((path, line), samples), most first
    leaves: list[tuple[str, int]]  # (frame, samples), most first


@dataclass(frozen=True)
class Profile:
    """py-spy on one encode and decode at `size`, 1 thread: `stages`, or why there are none."""

    size: Size
    stages: dict[str, Stage] = field(default_factory=dict)
    py_spy_missing: bool = False
    py_spy_error: list[str] | None = None  # the last line of py-spy's stderr, when it failed


def _frame_site(frame: str) -> tuple[str, str, int] | None:
    """`name (path:line)` -> (name, path, line)."""
    name, _, location = frame.rpartition(" (")
    path, _, line = location.rstrip(")").rpartition(":")
    return (name, path, int(line)) if name and line.isdigit() else None


STAGE_FRAMES = {
    "encode": ("encode", "codec/api.py", ("encode_layer",)),
    "decode": ("Decoder.decode", "codec/api.py", ("decode_layer",)),
}


def summarise_profile(raw: str, top: int = PROFILE_TOP) -> dict[str, Stage]:
    """py-spy raw (collapsed) stacks -> per operation: samples, share per call site, hottest leaf frames.

    A call site is the deepest line of `codec.api` or `codec.coding` on the stack: the statement of
    encode/decode (`model.analyse`, the latent rANS `compress`, `entropy_parameters`, ...) under which
    the sample was taken. A leaf frame is where the interpreter was (self time).
    """
    samples = dict.fromkeys(STAGE_FRAMES, 0)
    sites: dict[str, Counter] = {op: Counter() for op in STAGE_FRAMES}
    leaves: dict[str, Counter] = {op: Counter() for op in STAGE_FRAMES}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        frame_sites = [_frame_site(frame) for frame in frames]
        for operation, (entry, entry_path, layer_functions) in STAGE_FRAMES.items():
            entries = [i for i, s in enumerate(frame_sites) if s and s[0] == entry and s[1].endswith(entry_path)]
            if not entries:
                continue
            deepest = entries[-1]
            for i in range(deepest + 1, len(frame_sites)):
                site = frame_sites[i]
                if site and site[0] in layer_functions and site[1].endswith("codec/coding.py"):
                    deepest = i
            _, path, number = frame_sites[deepest]
            samples[operation] += int(count)
            sites[operation][(path, number)] += int(count)
            leaves[operation][frames[-1]] += int(count)
    return {op: Stage(samples[op], sites[op].most_common(top), leaves[op].most_common(top)) for op in STAGE_FRAMES}


def profile(plan: Plan) -> Profile:
    """py-spy on one Kodak-size encode and decode of the first image, 1 thread."""
    size = Size(*KODAK_SIZE)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        return Profile(size, py_spy_missing=True)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "profile.txt"
        record = [py_spy, "record", "--format", "raw", "--rate", str(PROFILE_RATE), "--output", str(out), "--"]
        process = subprocess.run(
            record + measure_command("ours", size, 1, 1, 1, plan, []), cwd=REPO, capture_output=True, text=True
        )
        if process.returncode != 0 or not out.exists():
            return Profile(size, py_spy_error=process.stderr.strip().splitlines()[-1:])
        return Profile(size, summarise_profile(out.read_text()))
