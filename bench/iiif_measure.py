"""The IIIF benchmark's measurements: deep-zoom tiles of one large picture from our server, and the same
tiles cut from JPEG 2000 the way Cantaloupe's OpenJpegProcessor cuts them, as `Figures`.

Ours: `GET /iiif/3/{id}/{x},{y},{w},{h}/256,/0/default.jpg`, one request at a time, each level from a
server started for it (no cache holds the picture). The reference: the same picture saved once by Pillow as
a tiled (256²), 6-resolution, multi-layer JPEG 2000; each tile is one `opj_decompress` process (OpenJPEG's
own tool, as Cantaloupe runs it) decoding only that region at the reduction of the level (`-d`, `-r`),
then resized if needed and written as JPEG by Pillow.
"""

from __future__ import annotations

import io
import math
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench import processes
from bench.codec_measure import Size, test_pictures
from bench.processes import Running
from bench.service_measure import WRITE_KEY

TILE = 256
JPEG_QUALITY = 90  # what the IIIF endpoint writes (server/routers/iiif.py render)
JPEG2000_RATIOS = [192, 96, 48, 24, 12, 6]  # compression ratios of the quality layers (≈ 0.125 … 4 bpp)


@dataclass(frozen=True)
class Plan:
    """What one `python -m bench.iiif` run measures (its options, less where it writes)."""

    weights: str | None
    images: Path
    size: Size
    tiles: int
    torch_threads: int


@dataclass
class Level:
    """One zoom level: its scale factor and the tiles asked for, in viewer order (row by row)."""

    scale: int
    regions: list[tuple[int, int, int, int]]


@dataclass
class Timings:
    """Seconds of each tile request of one level, the first one cold."""

    scale: int
    seconds: list[float] = field(default_factory=list)

    @property
    def tiles_per_second(self) -> float:
        return len(self.seconds) / sum(self.seconds) if self.seconds else math.nan


@dataclass
class Figures:
    size: Size
    upload_seconds: float
    layers: int
    jpeg2000_bytes: int
    ours_bytes: int
    openjpeg_version: str
    ours: list[Timings] = field(default_factory=list)
    jpeg2000: list[Timings] = field(default_factory=list)


def levels(width: int, height: int, tiles: int) -> list[Level]:
    """The zoomed-out level whose tiles cover the picture in about 2 × 2, and full resolution: at most
    `tiles` tiles of each, from the picture's centre outwards, as a viewer opening there asks."""
    zoomed_out = 1 << max(0, math.ceil(math.log2(max(width, height) / (2 * TILE))))
    chosen = []
    for scale in (zoomed_out, 1):
        span = TILE * scale
        grid = [
            (x, y, min(span, width - x), min(span, height - y))
            for y in range(0, height, span)
            for x in range(0, width, span)
        ]
        centre = (width / 2, height / 2)
        grid.sort(key=lambda r: (r[0] + r[2] / 2 - centre[0]) ** 2 + (r[1] + r[3] / 2 - centre[1]) ** 2)
        chosen.append(Level(scale, grid[:tiles]))
    return chosen


def output_width(region: tuple[int, int, int, int], scale: int) -> int:
    return math.ceil(region[2] / scale)


def opj_decompress() -> str:
    found = shutil.which("opj_decompress")
    if found is None:
        raise SystemExit("opj_decompress is not installed: run scripts/ensure-system-packages (libopenjp2-tools)")
    return found


def openjpeg_version() -> str:
    """The openjp2 library opj_decompress was built against ("... compiled against openjp2 library v2.5.0.")."""
    answer = subprocess.run([opj_decompress(), "-h"], capture_output=True, text=True, timeout=30)
    found = re.search(r"openjp2 library v(\d[\w.]*\d)", answer.stdout + answer.stderr)
    return found[1] if found else "unknown"


def jpeg2000_tile(path: Path, region: tuple[int, int, int, int], scale: int, work: Path) -> bytes:
    """One tile as Cantaloupe's OpenJpegProcessor serves it: opj_decompress of the region, then JPEG."""
    x, y, w, h = region
    out = work / "tile.ppm"
    command = [opj_decompress(), "-i", str(path), "-o", str(out), "-d", f"{x},{y},{x + w},{y + h}"]
    command += ["-r", str(int(math.log2(scale))), "-quiet"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    with Image.open(out) as picture:
        size = (output_width(region, scale), math.ceil(h / scale))
        if picture.size != size:
            picture = picture.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def measure_jpeg2000(pixels: np.ndarray, chosen: list[Level], work: Path) -> tuple[int, list[Timings]]:
    path = work / "picture.jp2"
    Image.fromarray(pixels).save(
        path, "JPEG2000", tile_size=(TILE, TILE), num_resolutions=6, irreversible=True, mct=1,
        quality_mode="rates", quality_layers=JPEG2000_RATIOS, progression="RPCL",
    )  # fmt: skip
    timings = []
    for level in chosen:
        timing = Timings(level.scale)
        for region in level.regions:
            started = time.perf_counter()
            jpeg2000_tile(path, region, level.scale, work)
            timing.seconds.append(time.perf_counter() - started)
        timings.append(timing)
    return path.stat().st_size, timings


def start_server(root: Path, data_dir: Path, plan: Plan, name: str) -> Running:
    env = processes.server_environment(
        {"CODEC_SERVER_WRITE_KEY": WRITE_KEY, "CODEC_SERVER_TORCH_THREADS": str(plan.torch_threads)}
    )
    weights = Path(plan.weights) if plan.weights else None
    return processes.start(name, lambda port: processes.server_command(port, data_dir, weights), root, "/ready", env)


def measure_ours(root: Path, plan: Plan, pixels: np.ndarray, chosen: list[Level]) -> tuple[float, dict, list[Timings]]:
    data_dir = root / "data"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    server = start_server(root, data_dir, plan, "upload")
    try:
        print(f"bench.iiif: uploading {plan.size} ({len(buffer.getvalue()):,} bytes of JPEG)", file=sys.stderr)
        started = time.perf_counter()
        answer = httpx.post(
            f"{server.url}/encode?wait=true", files={"file": ("big.jpg", buffer.getvalue(), "image/jpeg")},
            headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=1800,
        )  # fmt: skip
        upload_seconds = time.perf_counter() - started
        answer.raise_for_status()
        info = answer.json()
    finally:
        server.stop()
    timings = []
    for level in chosen:  # each level from a fresh process: nothing of the picture cached
        server = start_server(root, data_dir, plan, f"tiles-{level.scale}")
        try:
            with httpx.Client(base_url=f"{server.url}/iiif/3/{info['id']}", timeout=600) as client:
                print(f"bench.iiif: {len(level.regions)} tiles at scale {level.scale}", file=sys.stderr)
                timing = Timings(level.scale)
                for region in level.regions:
                    path = f"/{','.join(map(str, region))}/{output_width(region, level.scale)},/0/default.jpg"
                    started = time.perf_counter()
                    client.get(path).raise_for_status()
                    timing.seconds.append(time.perf_counter() - started)
                timings.append(timing)
        finally:
            server.stop()
    return upload_seconds, info, timings


def measure(plan: Plan, root: Path) -> Figures:
    (pixels,) = test_pictures(plan.images, 1, plan.size)
    chosen = levels(plan.size.width, plan.size.height, plan.tiles)
    upload_seconds, info, ours = measure_ours(root, plan, pixels, chosen)
    print("bench.iiif: the same tiles from JPEG 2000 (opj_decompress)", file=sys.stderr)
    jpeg2000_bytes, jpeg2000 = measure_jpeg2000(pixels, chosen, root)
    return Figures(
        plan.size, upload_seconds, len(info["layers"]), jpeg2000_bytes, info["bytes"], openjpeg_version(),
        ours, jpeg2000,
    )  # fmt: skip
