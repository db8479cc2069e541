"""The benchmarks run end to end on a tiny configuration and write reports with every section.

Benchmarks are not tests: nothing here looks at how fast anything was, only that each command
measured every configuration and wrote its figures where bench/README.md says it does.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench import browser as browser_bench
from bench import cluster as cluster_bench
from bench import codec as codec_bench
from bench import codec_measure, codec_report, report, transforms_measure
from bench import effort as effort_bench
from bench import iiif as iiif_bench
from bench import service as service_bench
from bench import transforms as transforms_bench
from codec.imageio import read_image
from tests.harness import make_image

FIGURE = r"\d+(\.\d+)? m?s"  # a duration as report.seconds writes it


@pytest.fixture
def tiny_images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        (folder / f"picture{index}.png").write_bytes(make_image(64, 48, seed=index))
    return folder


def section(text: str, heading: str) -> str:
    """The text under `heading`, up to the next heading."""
    start = text.index(heading) + len(heading)
    following = text.find("\n#", start)
    return text[start : following if following != -1 else len(text)]


def rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of every table row whose first cell is `first_cell`."""
    found = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            found.append(cells)
    return found


def test_codec_benchmark_measures_every_codec_and_writes_its_sections(
    tmp_path: Path, tiny_images: Path, weights_path: Path
) -> None:
    results, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nkept by hand\n")
    codec_bench.main(
        [
            "--images", str(tiny_images), "--count", "1", "--repeats", "1", "--threads", "1",
            "--sizes", "64x64", "--bmshj-qualities", "1", "--no-profile", "--weights", str(weights_path),
            "--results", str(results), "--readme", str(readme),
        ]
    )  # fmt: skip
    text = results.read_text()
    for heading in (
        "## Codec: encode and progressive decode",
        "### At 64x64",
        "### Per layer at 64x64",
        "### Cost against image size (ours)",
        "### Memory against image size",
        "### Decoding at once, and a region alone",
        "### Where the time goes",
    ):
        assert heading in text
    assert "failed" not in text
    assert "training run (`python -m codec train`)" in text
    (ours,) = rows(text, codec_report.ours_name())
    (jpeg2000,) = rows(text, "JPEG 2000, 6 quality layers")
    (bmshj,) = rows(text, row_name(text, "bmshj2018-hyperprior q1"))
    for row in (ours, jpeg2000, bmshj):
        assert re.fullmatch(FIGURE, row[2]), row  # encode
        assert re.fullmatch(FIGURE, row[3]), row  # first layer
    assert re.fullmatch(r"\d+\.\d\d×", jpeg2000[7]) and re.fullmatch(r"\d+\.\d\d×", bmshj[7])
    per_layer = section(text, "### Per layer at 64x64")
    for layer in range(1, 7):
        (row,) = rows(per_layer, str(layer))
        assert re.fullmatch(FIGURE, row[2]), row
    (scaling,) = rows(section(text, "### Cost against image size (ours)"), "64x64")
    assert re.fullmatch(FIGURE, scaling[5]), scaling
    (memory,) = rows(section(text, "### Memory against image size"), "64x64")
    assert re.fullmatch(r"\d+ MiB", memory[2]) and re.fullmatch(r"\d+ MiB", memory[4]), memory
    (region,) = rows(section(text, "### Decoding at once, and a region alone"), "64x64")
    assert region[5] == "32x32", region
    assert all(re.fullmatch(FIGURE, cell) for cell in (region[2], region[6], region[7])), region
    headline = readme.read_text()
    assert headline.startswith("# Benchmarks\n\nkept by hand\n")
    assert "<!-- bench.codec:start -->" in headline
    assert re.search(rf"\| encode, all layers \| {FIGURE} \|", headline)


def row_name(text: str, prefix: str) -> str:
    """The first cell of the row that starts with `prefix` (names carry details after it)."""
    match = re.search(rf"^\| ({re.escape(prefix)}[^|]*?) \|", text, re.MULTILINE)
    assert match, f"no row {prefix!r}"
    return match.group(1)


def test_service_benchmark_measures_every_phase_and_writes_its_sections(
    tmp_path: Path, tiny_images: Path, weights_path: Path
) -> None:
    results, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    service_bench.main(
        [
            "--images", str(tiny_images), "--count", "2", "--duration", "0.3", "--upload-duration", "0.5",
            "--concurrency", "2", "--uncached-concurrency", "1", "--streams", "2", "--uploads", "2",
            "--burst", "3", "--workers", "1", "--queue-size", "1", "--weights", str(weights_path),
            "--results", str(results), "--readme", str(readme),
        ]
    )  # fmt: skip
    text = results.read_text()
    for heading in (
        "## Service: HTTP and WebSocket on loopback",
        "### Progressive delivery of one stored Kodak image (64×48)",
        "### HTTP requests",
        "### Concurrent WebSocket streams",
        "### Uploads: encode throughput",
        "### Saturation: the 429 answer",
    ):
        assert heading in text
    servers = ["ours", "Starlette StaticFiles"] + (["nginx"] if shutil.which("nginx") else [])
    for request in ("picture, cached (`?layers=6`)", "bitstream `Range` (header + layer 1)"):
        found = {row[1]: row for row in rows(text, request)}
        assert sorted(found) == sorted(servers)
        for row in found.values():
            assert float(row[3]) > 0 and row[7] == "0", row  # req/s, and no errors
    for layers in (1, 6):
        (uncached,) = rows(text, f"picture, uncached (`?layers={layers}`, no decoder kept)")
        assert re.fullmatch(FIGURE, uncached[4]), uncached
    (streams,) = rows(section(text, "### Concurrent WebSocket streams"), "2")
    assert streams[4] == "0", streams  # WebSocket errors
    (saturation,) = rows(section(text, "### Saturation: the 429 answer"), "3")
    assert int(saturation[2]) + int(saturation[3]) == 3 and int(saturation[2]) >= 1, saturation
    assert re.search(rf"\| WebSocket open → first layer's bytes \| {FIGURE} \|", readme.read_text())


def test_sections_replace_only_themselves(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    report.write_section("bench.codec", "codec figures 1", results)
    results.write_text(results.read_text() + "\nA closing note written by hand.\n")
    report.write_section("bench.service", "service figures", results)
    report.write_section("bench.codec", "codec figures 2", results)
    text = results.read_text()
    assert "codec figures 2" in text and "codec figures 1" not in text
    assert "service figures" in text and "A closing note written by hand." in text
    assert text.index("codec figures 2") < text.index("A closing note") < text.index("service figures")


def test_profile_summary_attributes_samples_to_call_sites_and_leaves() -> None:
    encode = "<module> (run.py:1);encode (codec/api.py:140);encode_layer (codec/coding.py:{line});{leaf}"
    decode = "<module> (run.py:2);Decoder.decode (codec/api.py:222);decode_layer (codec/coding.py:60);{leaf}"
    raw = "\n".join(
        [
            encode.format(line=29, leaf="conv2d (torch/nn/functional.py:10)") + " 30",
            encode.format(line=34, leaf="compress (compressai/entropy_models.py:5)") + " 10",
            decode.format(leaf="decompress (compressai/entropy_models.py:9)") + " 4",
            "<module> (run.py:3);load_model (codec/api.py:100) 50",
        ]
    )
    summary = codec_measure.summarise_profile(raw)
    assert summary["encode"].samples == 40 and summary["decode"].samples == 4
    assert summary["encode"].sites == [(("codec/coding.py", 29), 30), (("codec/coding.py", 34), 10)]
    assert summary["decode"].leaves == [("decompress (compressai/entropy_models.py:9)", 4)]


def test_cluster_benchmark_measures_both_fronts_and_both_bursts(
    tmp_path: Path, tiny_images: Path, weights_path: Path
) -> None:
    results, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    cluster_bench.main(
        [
            "--images", str(tiny_images), "--uploads", "2", "--duration", "0.3", "--concurrency", "2",
            "--workers", "1", "2", "--weights", str(weights_path), "--results", str(results), "--readme", str(readme),
        ]
    )  # fmt: skip
    text = results.read_text()
    for heading in ("## Cluster (scale-out on loopback)", "### A burst of uploads spread over the workers"):
        assert heading in text
    for request in ("picture, cached (`?layers=6`)", "bitstream `Range` (header + layer 1)"):
        (row,) = rows(text, request)
        assert all(float(rate) > 0 for rate in row[2:5]) and row[7] == "0", row  # three fronts, no errors
    bursts = section(text, "### A burst of uploads spread over the workers")
    for workers in ("1", "2"):
        (row,) = rows(bursts, workers)
        assert row[1] == "2" and row[5] == "2× 201", row
        assert sum(int(n) for n in row[4].split(" + ")) == 2, row  # every job done by some worker
    assert "nginx → 2 API servers" in readme.read_text()


def test_iiif_benchmark_times_both_levels_for_both_sources(
    tmp_path: Path, tiny_images: Path, weights_path: Path
) -> None:
    results, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    iiif_bench.main(
        [
            "--images", str(tiny_images), "--size", "640x480", "--tiles", "2", "--torch-threads", "1",
            "--weights", str(weights_path), "--results", str(results), "--readme", str(readme),
        ]
    )  # fmt: skip
    text = section(results.read_text(), "## IIIF deep-zoom tiles")
    for level in ("zoomed out (scale factor 2)", "full resolution"):
        (row,) = rows(text, level)
        assert row[1] == "2", row
        assert all(re.fullmatch(FIGURE, cell) for cell in row[2:4] + row[5:7]), row
        assert float(row[7]) > 0 and float(row[8]) > 0, row
    assert "opj_decompress" in text and "full resolution: tiles/s" in readme.read_text()


def test_effort_benchmark_reports_every_level_beside_jpeg2000(tmp_path: Path, weights_path: Path) -> None:
    results, images = tmp_path / "RESULTS.md", tmp_path / "images"
    images.mkdir()
    for index in range(2):  # MS-SSIM needs more than 160 pixels a side
        (images / f"picture{index}.png").write_bytes(make_image(192, 176, seed=index))
    effort_bench.main(
        [
            "--images", str(images), "--every", "1", "--efforts", "1", "2", "--torch-threads", "1",
            "--weights", str(weights_path), "--results", str(results),
        ]
    )  # fmt: skip
    text = section(results.read_text(), "## Encoder effort levels")
    for effort, steps in (("1", "0"), ("2", "10")):
        (row,) = [row for row in rows(text, effort) if row[1] == steps]
        assert len(row[2].split(" / ")) == 6 and len(row[3].split(" / ")) == 6, row  # every layer
        assert re.fullmatch(FIGURE, row[6]), row
    assert "2 images of images/: picture0, picture1" in text and "jpeg2000 (9/7, ICT)" in text


def test_transform_benchmark_prices_both_transforms_beside_the_codec_and_jpeg2000(
    tmp_path: Path, weights_path: Path
) -> None:
    results, images = tmp_path / "RESULTS.md", tmp_path / "images"
    images.mkdir()
    for index in range(2):
        (images / f"picture{index}.png").write_bytes(make_image(192, 176, seed=index))
    transforms_bench.main(
        ["--images", str(images), "--torch-threads", "1", "--weights", str(weights_path), "--results", str(results)]
    )
    text = section(results.read_text(), "## Fixed transforms with an ideal simple coder")
    bd = r"[+-]?\d+\.\d %|0|n/a"
    for transform in transforms_measure.transforms():
        alone, context = rows(text, transform)
        assert alone[1] == "per channel" and context[1] == "per channel, neighbour context"
        assert all(re.fullmatch(bd, cell) for cell in alone[2:4] + context[2:4]), (alone, context)
    (ours,) = rows(text, "the learned codec (shipped weights, effort 1)")
    assert len(ours) == 4 + 6, ours  # a PSNR column per layer
    assert "2 images of images/: picture0, picture1" in text


def test_a_neighbour_context_saves_bits_and_finer_steps_cost_bits_for_quality() -> None:
    pixels = read_image(make_image(192, 176, seed=3))
    for analysis, synthesis in transforms_measure.transforms().values():
        coarse = transforms_measure.code_image(pixels, analysis, synthesis, 60.0)
        fine = transforms_measure.code_image(pixels, analysis, synthesis, 15.0)
        for alone, context, _ in (coarse, fine):
            assert 0 < context < alone  # conditioning never raises the empirical entropy
        assert fine[0] > coarse[0] and fine[2] > coarse[2] + 3


def test_browser_benchmark_times_both_deliveries_and_every_layer(
    tmp_path: Path, tiny_images: Path, weights_path: Path
) -> None:
    results, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    browser_bench.main(
        [
            "--images", str(tiny_images), "--size", "64x48", "--repeats", "1", "--workers", "1", "2",
            "--torch-threads", "1", "--weights", str(weights_path), "--results", str(results), "--readme", str(readme),
        ]
    )  # fmt: skip
    text = section(results.read_text(), "### Page load to each layer painted")
    for delivery in (
        "browser, first visit",
        "browser, reload",
        "server previews, first visit",
        "server previews, reload",
    ):
        (row,) = rows(text, delivery)
        assert row[1] == "1" and all(re.fullmatch(FIGURE, cell) for cell in (row[2], row[4], row[5])), row
    text = section(results.read_text(), "### The decoder alone, per layer")
    for workers in ("1 (wasm)", "2 (wasm)"):
        layers = rows(text, workers)
        assert [row[1] for row in layers] == [str(n) for n in range(1, len(layers) + 1)] and len(layers) >= 2
        assert all(re.fullmatch(FIGURE, cell) for row in layers for cell in row[2:6]), layers
    assert "page load → first layer painted (first visit)" in readme.read_text()
