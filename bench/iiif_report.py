"""The IIIF benchmark's Markdown: its bench/RESULTS.md section and the headline rows of bench/README.md."""

from __future__ import annotations

import statistics

from bench import report
from bench.iiif_measure import JPEG2000_RATIOS, TILE, Figures, Plan, Timings


def _level_name(timing: Timings) -> str:
    return "full resolution" if timing.scale == 1 else f"zoomed out (scale factor {timing.scale})"


def rows(figures: Figures) -> list[list[str]]:
    found = []
    for ours, reference in zip(figures.ours, figures.jpeg2000, strict=True):
        found.append(
            [
                _level_name(ours),
                str(len(ours.seconds)),
                report.seconds(ours.seconds[0]),
                report.seconds(reference.seconds[0]),
                report.ratio(ours.seconds[0], reference.seconds[0]),
                report.seconds(statistics.median(ours.seconds)),
                report.seconds(statistics.median(reference.seconds)),
                f"{ours.tiles_per_second:.2f}",
                f"{reference.tiles_per_second:.2f}",
                report.ratio(reference.tiles_per_second, ours.tiles_per_second),
            ]
        )
    return found


def render(figures: Figures, plan: Plan, machine: str, argv: list[str], seconds: float) -> str:
    command = " ".join(["python -m bench.iiif", *argv])
    headers = [
        "level", "tiles", "first tile, ours", "first tile, JPEG 2000", "ours ÷ JPEG 2000", "median tile, ours",
        "median tile, JPEG 2000", "tiles/s, ours", "tiles/s, JPEG 2000", "JPEG 2000 ÷ ours",
    ]  # fmt: skip
    pixels = figures.size.width * figures.size.height
    return f"""## IIIF deep-zoom tiles

`{command}`, {seconds / 60:.1f} min. One Kodak picture resized to {figures.size} ({figures.size.megapixels:.1f} MP),
uploaded once (encode, verify, store: {report.seconds(figures.upload_seconds)}; {figures.layers} layers,
{figures.ours_bytes:,} bytes, {figures.ours_bytes * 8 / pixels:.2f} bpp). Then, for each level, a fresh
`python -m server` ({plan.torch_threads} torch thread(s)), so that no cache holds the picture, answers {TILE}²
IIIF tiles (`/iiif/3/{{id}}/x,y,w,h/{TILE},/0/default.jpg`) one request at a time, from the centre outwards: the
first is the cold "time to first tile". The reference, in the same run: the same picture saved by Pillow
as JPEG 2000 (OpenJPEG, {TILE}² tiles, 6 resolutions, RPCL, quality layers at compression ratios
{", ".join(map(str, JPEG2000_RATIOS))}; {figures.jpeg2000_bytes:,} bytes), each tile cut as Cantaloupe's
OpenJpegProcessor cuts it: one `opj_decompress` process (openjp2 {figures.openjpeg_version}) decoding only the
region at the level's reduction (`-d`, `-r`), then Pillow's resize and JPEG at the same quality as ours.

{machine}
{report.table(headers, rows(figures), right=tuple(range(1, 10)))}
Ours decodes every layer the layer rule of docs/iiif.md asks for at that scale, in the 192² codec
tiles the region touches; a zoomed-out tile touches many codec tiles, since the codec has no
resolution levels (its coarse levels are downscaled reconstructions), while JPEG 2000 reads the
wavelet's lower resolutions only.
"""


def headline(figures: Figures, date: str) -> str:
    table = report.table(
        ["", "ours", "JPEG 2000 (opj_decompress)"],
        [
            [f"{_level_name(ours)}: first tile", report.seconds(ours.seconds[0]), report.seconds(ref.seconds[0])]
            for ours, ref in zip(figures.ours, figures.jpeg2000, strict=True)
        ]
        + [
            [f"{_level_name(ours)}: tiles/s", f"{ours.tiles_per_second:.2f}", f"{ref.tiles_per_second:.2f}"]
            for ours, ref in zip(figures.ours, figures.jpeg2000, strict=True)
        ],
        right=(1, 2),
    )
    title = f"IIIF {TILE}² tiles of a {figures.size.megapixels:.1f} MP picture, {date} (full tables in RESULTS.md)"
    return f"{title}:\n\n{table}"
