"""Rate-distortion evaluation with real file sizes, beside classic codecs.

For every image and every layer n the rate is the size of the container
prefix that decodes n layers (header included), so the figures are what a
client downloading byte ranges pays. JPEG, WebP, JPEG 2000 and AVIF are
encoded by Pillow and JPEG XL by libjxl (through imagecodecs) in the same run
on the same images, each decoded by the library that encoded it; published
points come from ../shared/anchors. BD-rates use the Bjøntegaard method with PCHIP
interpolation over the overlapping quality range.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import imagecodecs
import numpy as np
import torch
from PIL import Image, features
from pytorch_msssim import ms_ssim
from tqdm import tqdm

from codec.api import Decoder, encode
from codec.container import parse_header
from codec.data import list_images
from codec.effort import DEFAULT_EFFORT
from codec.imageio import read_image
from codec.model import ScalableCodec
from codec.quality import psnr

OURS = "ours"
JPEG_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
JPEG2000_RATES_BPP = (0.05, 0.08, 0.12, 0.18, 0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0)
# JPEG XL: libjxl's Butteraugli distance (cjxl -d; 1 is "visually lossless", 25 the coarsest it allows) at
# effort 7, cjxl's default: effort 9 took five times as long here for no PSNR gain, effort 5 lost about 0.2 dB.
# On Kodak the sweep spans about 0.1 to 1.6 bpp.
JPEGXL_DISTANCES = (25.0, 16.0, 11.0, 8.0, 6.0, 4.5, 3.5, 2.7, 2.1, 1.6, 1.2)
JPEGXL_EFFORT = 7
# AVIF: libavif's quality (0..100, mapped onto the AV1 quantizer), aom at speed 6 with 4:4:4 chroma: what
# avifenc does by default (Pillow's own default is 4:2:0). Speed 4 costs six times the encode time for about
# 0.2 dB. Quality 0 is the coarsest AVIF there is (about 0.06 bpp on Kodak), 80 about 1.6 bpp.
# Each setting costs ~0.35 s of encoding per Kodak image on one core, JPEG XL's the same; the MS-SSIM
# that follows every round trip costs four times that.
AVIF_QUALITIES = (0, 10, 20, 30, 40, 50, 60, 70, 80)
AVIF_SPEED = 6
# Pillow's defaults code RGB without the colour transform, with the
# reversible 5/3 wavelet; the tuned row uses the 9/7 wavelet and the ICT, as
# JPEG 2000 is normally run for lossy coding. Both are reported.
JPEG2000_TUNED = "jpeg2000 (9/7, ICT)"
JPEG2000_DEFAULT = "jpeg2000 (Pillow defaults)"
PUBLISHED = {
    "jpeg2000 (published, OpenJPEG)": ("jpeg2000", "-"),
    "bmshj2018-hyperprior (published)": ("bmshj2018-hyperprior", "mse"),
    "seed RNN hyperprior (published)": ("seed-rnn-hyperprior", "mse"),
}


@dataclass
class Point:
    bpp: float
    psnr: float
    ms_ssim: float


@dataclass
class Curve:
    """Mean RD points of one codec over the image set, low rate first."""

    name: str
    points: list[Point] = field(default_factory=list)

    def rates(self) -> np.ndarray:
        return np.array([p.bpp for p in self.points])

    def psnrs(self) -> np.ndarray:
        return np.array([p.psnr for p in self.points])

    def ms_ssim_db(self) -> np.ndarray:
        return np.array([ms_ssim_to_db(p.ms_ssim) for p in self.points if not math.isnan(p.ms_ssim)])


def ms_ssim_to_db(value: float) -> float:
    return -10.0 * math.log10(max(1.0 - value, 1e-12))


def msssim(reference: np.ndarray, test: np.ndarray) -> float:
    a = torch.from_numpy(reference).permute(2, 0, 1)[None].double()
    b = torch.from_numpy(test).permute(2, 0, 1)[None].double()
    return float(ms_ssim(a, b, data_range=255.0))


def encode_baseline(pixels: np.ndarray, options: dict) -> bytes:
    """The file a classic codec writes for `pixels` with one entry of `baseline_settings()`."""
    format = options["format"]
    encoder_options = {k: v for k, v in options.items() if k != "format"}
    if format == "JXL":
        return bytes(imagecodecs.jpegxl_encode(pixels, **encoder_options))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format, **encoder_options)
    return buffer.getvalue()


def decode_baseline(data: bytes, format: str) -> np.ndarray:
    """Decode with the library that encoded: RGB, uint8."""
    if format == "JXL":
        return np.asarray(imagecodecs.jpegxl_decode(data, numthreads=1))
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def setting_label(options: dict) -> str:
    if "distance" in options:
        return f"distance {options['distance']:g}"
    return str(options.get("quality", options.get("quality_layers")))


def baseline_versions() -> str:
    avif = f"libavif {features.version('avif')}"
    try:  # which AV1 encoder libavif was built with (Pillow's wheels: aom)
        from PIL import _avif

        avif += f" ({_avif.codec_versions()})"
    except (ImportError, AttributeError):
        pass
    return (
        f"libjpeg-turbo {features.version('libjpeg_turbo')}, libwebp {features.version('webp')}, "
        f"OpenJPEG {features.version('jpg_2000')}, {avif} (all Pillow {Image.__version__}); "
        f"{imagecodecs.jpegxl_version()} (imagecodecs {imagecodecs.__version__})"
    )


def baseline_settings() -> dict[str, list[dict]]:
    return {
        "jpeg": [{"format": "JPEG", "quality": q} for q in JPEG_QUALITIES],
        "webp": [{"format": "WEBP", "quality": q, "method": 6} for q in WEBP_QUALITIES],
        JPEG2000_TUNED: [
            {
                "format": "JPEG2000",
                "quality_mode": "rates",
                "quality_layers": [24.0 / r],
                "irreversible": True,
                "mct": 1,
            }
            for r in JPEG2000_RATES_BPP
        ],
        JPEG2000_DEFAULT: [
            {"format": "JPEG2000", "quality_mode": "rates", "quality_layers": [24.0 / r]} for r in JPEG2000_RATES_BPP
        ],
        # one thread each: the baselines have one core beside our codec
        "jpeg xl": [
            {"format": "JXL", "distance": d, "effort": JPEGXL_EFFORT, "numthreads": 1} for d in JPEGXL_DISTANCES
        ],
        "avif": [
            {"format": "AVIF", "quality": q, "speed": AVIF_SPEED, "subsampling": "4:4:4", "max_threads": 1}
            for q in AVIF_QUALITIES
        ],
    }


@dataclass
class ImageResult:
    name: str
    width: int
    height: int
    layers: list[Point]
    encode_seconds: float
    decode_seconds: list[float]


def evaluate_image(model: ScalableCodec, path: Path, effort: int = DEFAULT_EFFORT) -> ImageResult:
    """Encode once (at `effort`), then decode every prefix layer by layer (incrementally)."""
    pixels = read_image(path)
    height, width, _ = pixels.shape
    started = time.perf_counter()
    data = encode(pixels, model, effort=effort)
    encode_seconds = time.perf_counter() - started
    header = parse_header(data)
    decoder = Decoder(data, model)
    points, decode_seconds = [], []
    for n in range(1, header.layer_count + 1):
        started = time.perf_counter()
        decoded = decoder.decode(n)
        decode_seconds.append(time.perf_counter() - started)
        points.append(Point(header.bpp(n), psnr(pixels, decoded), msssim(pixels, decoded)))
    return ImageResult(path.name, width, height, points, encode_seconds, decode_seconds)


def evaluate_baselines(
    paths: list[Path], codecs: tuple[str, ...] | None = None
) -> tuple[dict[str, list[list[Point]]], dict[str, float]]:
    """Per codec, per setting, per image: the measured point; and per codec the seconds it took."""
    if not features.check("avif"):
        raise RuntimeError("this Pillow has no AVIF codec (Pillow >= 11.3 wheels carry libavif)")
    results: dict[str, list[list[Point]]] = {}
    seconds: dict[str, float] = {}
    images = [read_image(p) for p in paths]
    for codec, settings in baseline_settings().items():
        if codecs is not None and codec not in codecs:
            continue
        started = time.perf_counter()
        per_setting = []
        for options in tqdm(settings, desc=codec, unit="setting", leave=False):
            row = []
            for pixels in images:
                data = encode_baseline(pixels, options)
                decoded = decode_baseline(data, options["format"])
                row.append(
                    Point(
                        len(data) * 8 / (pixels.shape[0] * pixels.shape[1]),
                        psnr(pixels, decoded),
                        msssim(pixels, decoded),
                    )
                )
            per_setting.append(row)
        results[codec] = per_setting
        seconds[codec] = time.perf_counter() - started
    return results, seconds


def mean_point(points: list[Point]) -> Point:
    return Point(
        float(np.mean([p.bpp for p in points])),
        float(np.mean([p.psnr for p in points])),
        float(np.mean([p.ms_ssim for p in points])),
    )


def published_curves(anchors: Path) -> list[Curve]:
    """Published Kodak points: selected rows of kodak_rd.csv and DPICT."""
    curves: list[Curve] = []
    table = anchors / "kodak_rd.csv"
    if table.exists():
        rows = list(csv.DictReader(table.open()))
        for name, (codec, optimized) in PUBLISHED.items():
            points = [
                Point(float(r["bpp"]), float(r["psnr_db"]), float(r["ms_ssim"]) if r["ms_ssim"] else math.nan)
                for r in rows
                if r["codec"] == codec and r["optimized_for"] == optimized
            ]
            if points:
                curves.append(Curve(name, sorted(points, key=lambda p: p.bpp)))
    dpict = anchors / "dpict_kodak.csv"
    if dpict.exists():
        lines = [line for line in dpict.read_text(encoding="utf-8-sig").splitlines() if not line.startswith("#")]
        rows = list(csv.DictReader(lines))
        points = sorted(
            (
                Point(float(r["bpp"].lstrip("\ufeff")), float(r["value"]), math.nan)
                for r in rows
                if r["metric"] == "psnr_db"
            ),
            key=lambda p: p.bpp,
        )
        # the file is a dense curve; keep a readable subset for BD and plots
        if points:
            step = max(1, len(points) // 12)
            curves.append(Curve("DPICT (published)", points[::step]))
    return curves


def bd_rate(
    anchor_rates: np.ndarray, anchor_quality: np.ndarray, test_rates: np.ndarray, test_quality: np.ndarray
) -> float:
    """BD-rate in percent (negative: the test codec saves bits); NaN without overlap."""
    import bjontegaard

    if len(anchor_rates) < 4 or len(test_rates) < 4:
        return math.nan
    low = max(anchor_quality.min(), test_quality.min())
    high = min(anchor_quality.max(), test_quality.max())
    if high <= low:
        return math.nan
    try:
        return float(
            bjontegaard.bd_rate(
                anchor_rates, anchor_quality, test_rates, test_quality, method="pchip", require_matching_points=False
            )
        )
    except (ValueError, AssertionError):
        return math.nan


def _format(value: float, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}{suffix}"


def evaluate_directory(
    model: ScalableCodec, directory: Path, out: Path, limit: int | None = None, anchors: Path | None = None
) -> dict:
    """Run the whole evaluation and write CSV, markdown and the RD plot to `out`."""
    paths = list_images(directory)[:limit]
    out.mkdir(parents=True, exist_ok=True)
    # The baselines (66 round trips and MS-SSIMs per image) run in a second process meanwhile: on two
    # cores that halves the wall time. Spawned, not forked, because torch's thread pool may be live.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        pending_baselines = pool.submit(evaluate_baselines, paths)
        ours = [evaluate_image(model, p) for p in tqdm(paths, desc="our codec", unit="img")]
        baselines, baseline_seconds = pending_baselines.result()

    with (out / "per_image.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["codec", "setting", "image", "bpp", "psnr_db", "ms_ssim"])
        for result in ours:
            for n, p in enumerate(result.layers, start=1):
                writer.writerow([OURS, f"layer {n}", result.name, f"{p.bpp:.5f}", f"{p.psnr:.4f}", f"{p.ms_ssim:.6f}"])
        for codec, per_setting in baselines.items():
            for options, row in zip(baseline_settings()[codec], per_setting):
                setting = setting_label(options)
                for path, p in zip(paths, row):
                    writer.writerow([codec, setting, path.name, f"{p.bpp:.5f}", f"{p.psnr:.4f}", f"{p.ms_ssim:.6f}"])

    layer_count = len(ours[0].layers)
    our_curve = Curve(OURS, [mean_point([r.layers[n] for r in ours]) for n in range(layer_count)])
    measured = [
        Curve(c, sorted((mean_point(row) for row in rows), key=lambda p: p.bpp)) for c, rows in baselines.items()
    ]
    published = published_curves(anchors) if anchors else []

    bd_rows = []
    for curve in measured + published:
        psnr_bd = bd_rate(curve.rates(), curve.psnrs(), our_curve.rates(), our_curve.psnrs())
        has_ssim = len(curve.ms_ssim_db()) == len(curve.points)
        ssim_bd = (
            bd_rate(curve.rates(), curve.ms_ssim_db(), our_curve.rates(), our_curve.ms_ssim_db())
            if has_ssim
            else math.nan
        )
        bd_rows.append((curve.name, psnr_bd, ssim_bd, curve in measured))

    with (out / "rd_points.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["codec", "source", "bpp", "psnr_db", "ms_ssim"])
        for curve in [our_curve, *measured]:
            for p in curve.points:
                writer.writerow([curve.name, "measured", f"{p.bpp:.5f}", f"{p.psnr:.4f}", f"{p.ms_ssim:.6f}"])
        for curve in published:
            for p in curve.points:
                writer.writerow([curve.name, "published", f"{p.bpp:.5f}", f"{p.psnr:.4f}", f"{p.ms_ssim:.6f}"])

    summary = _markdown(directory, ours, our_curve, bd_rows, baseline_seconds)
    (out / "summary.md").write_text(summary)
    _plot(out / "rd.png", our_curve, measured, published, directory.name)
    print(summary)
    return {"ours": our_curve, "bd": bd_rows}


def _markdown(
    directory: Path, ours: list[ImageResult], curve: Curve, bd_rows: list, baseline_seconds: dict[str, float]
) -> str:
    lines = [
        f"Evaluated on {len(ours)} images of `{directory.name}`; rates are real container bytes (header included).",
        "",
        "| layers | bpp | PSNR-RGB (dB) | MS-SSIM | MS-SSIM (dB) | decode this layer (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, p in enumerate(curve.points, start=1):
        seconds = np.median([r.decode_seconds[n - 1] for r in ours])
        lines.append(
            f"| {n} | {p.bpp:.3f} | {p.psnr:.2f} | {p.ms_ssim:.4f} | {ms_ssim_to_db(p.ms_ssim):.2f} | {seconds:.2f} |"
        )
    lines += [
        "",
        f"Median encode time (all layers): {np.median([r.encode_seconds for r in ours]):.2f} s per image.",
        "",
        f"Baselines measured in this run: {baseline_versions()}. JPEG XL at effort {JPEGXL_EFFORT}, "
        f"AVIF at speed {AVIF_SPEED} with 4:4:4 chroma, one thread each. Seconds per image for a whole sweep "
        "(encode, decode, PSNR and MS-SSIM of every setting): "
        + ", ".join(f"{codec} {seconds / len(ours):.1f}" for codec, seconds in baseline_seconds.items())
        + ".",
        "",
        "BD-rate of our layers against each codec (negative = we need fewer bits for the same quality):",
        "",
        "| anchor | source | BD-rate (PSNR) | BD-rate (MS-SSIM dB) |",
        "|---|---|---:|---:|",
    ]
    for name, psnr_bd, ssim_bd, is_measured in bd_rows:
        source = "measured in this run" if is_measured else "published"
        lines.append(f"| {name} | {source} | {_format(psnr_bd, 1, ' %')} | {_format(ssim_bd, 1, ' %')} |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, ours: Curve, measured: list[Curve], published: list[Curve], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for axis, metric in zip(axes, ("psnr", "ms_ssim")):

        def values(curve: Curve, metric: str = metric) -> np.ndarray:
            return curve.psnrs() if metric == "psnr" else np.array([ms_ssim_to_db(p.ms_ssim) for p in curve.points])

        for curve in measured:
            axis.plot(curve.rates(), values(curve), "-", linewidth=1.2, label=f"{curve.name} (measured)")
        for curve in published:
            if metric == "ms_ssim" and any(math.isnan(p.ms_ssim) for p in curve.points):
                continue
            axis.plot(curve.rates(), values(curve), "--", linewidth=1.0, label=curve.name)
        axis.plot(ours.rates(), values(ours), "o-", color="black", linewidth=2.2, label="ours: one file, layers 1..n")
        for n, (x, y) in enumerate(zip(ours.rates(), values(ours)), start=1):
            axis.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8)
        axis.set_xlim(0, max(1.6, float(ours.rates().max()) * 1.1))
        axis.set_xlabel("bits per pixel")
        axis.set_ylabel("PSNR-RGB (dB)" if metric == "psnr" else "MS-SSIM (dB)")
        axis.grid(alpha=0.3)
    axes[0].set_title(f"{title}: rate-distortion")
    axes[1].set_title(f"{title}: MS-SSIM")
    axes[0].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
