"""The codec CLI's region and tile options, and its one-line errors with exit status 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec.__main__ import main
from codec.container import parse_header

from .conftest import natural_image


@pytest.fixture(scope="module")
def tiled_file(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli")
    picture = folder / "in.png"
    Image.fromarray(natural_image(100, 150, seed=2)).save(picture)
    bitstream = folder / "in.sric"
    assert (
        main(
            [
                "compress",
                str(picture),
                str(bitstream),
                "--layers",
                "2",
                "--tile-size",
                "64",
                "--weights",
                str(weights_path),
            ]
        )
        == 0
    )
    return bitstream, folder


def test_compress_writes_the_tile_size_asked_for(tiled_file: tuple[Path, Path]) -> None:
    header = parse_header(tiled_file[0].read_bytes())
    assert (header.tile_size, len(header.tiles), header.layer_count) == (64, 6, 2)


def test_decompress_a_region_is_the_crop_of_the_whole(tiled_file: tuple[Path, Path], weights_path: Path) -> None:
    bitstream, folder = tiled_file
    whole, crop = folder / "whole.png", folder / "crop.png"
    assert main(["decompress", str(bitstream), str(whole), "--weights", str(weights_path)]) == 0
    assert (
        main(["decompress", str(bitstream), str(crop), "--region", "60,30,70,50", "--weights", str(weights_path)]) == 0
    )
    assert np.array_equal(np.asarray(Image.open(crop)), np.asarray(Image.open(whole))[30:80, 60:130])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--region", "0,0,151,10"], "reaches outside the 150x100 picture"),
        (["--region", "0,0,0,10"], "at least 1"),
        (["--layers", "3"], "layers must be within 1..2"),
    ],
)
def test_impossible_requests_are_one_line_and_exit_2(
    tiled_file: tuple[Path, Path],
    weights_path: Path,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    bitstream, folder = tiled_file
    with pytest.raises(SystemExit) as exit_info:
        main(["decompress", str(bitstream), str(folder / "out.png"), *arguments, "--weights", str(weights_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1


@pytest.mark.parametrize("region", ["1,2,3", "a,b,c,d", "1,2,3,4,5"])
def test_malformed_regions_are_usage_errors(
    tiled_file: tuple[Path, Path], capsys: pytest.CaptureFixture[str], region: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["decompress", str(tiled_file[0]), "out.png", "--region", region])
    assert exit_info.value.code == 2
    assert "is not X,Y,W,H" in capsys.readouterr().err


def test_a_tile_size_that_is_not_a_multiple_of_64_is_refused(
    tiled_file: tuple[Path, Path], weights_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tiled_file[1] / "in.png"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "compress",
                str(picture),
                str(tiled_file[1] / "x.sric"),
                "--tile-size",
                "100",
                "--weights",
                str(weights_path),
            ]
        )
    assert exit_info.value.code == 2
    assert "multiple of 64" in capsys.readouterr().err


def _one_line_exit_2(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; it must answer exit status 2 and exactly one line on stderr, with no traceback."""
    try:
        status = main(arguments)
    except SystemExit as exit_info:
        status = exit_info.code
    assert status == 2, arguments
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and error.startswith("error: "), error
    assert "Traceback" not in error
    return error


@pytest.mark.parametrize("command", ["compress", "decompress", "info"])
def test_a_missing_input_is_one_line_and_exit_2(
    tmp_path: Path, weights_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    missing = tmp_path / "absent.file"
    arguments = [command, str(missing)]
    if command != "info":
        arguments += [str(tmp_path / "out.bin"), "--weights", str(weights_path)]
    error = _one_line_exit_2(arguments, capsys)
    assert "No such file" in error
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30])
def test_compressing_a_non_image_is_one_line_and_exit_2(
    tmp_path: Path, weights_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    source = tmp_path / "fake.png"
    source.write_bytes(content)
    _one_line_exit_2(["compress", str(source), str(tmp_path / "out.sric"), "--weights", str(weights_path)], capsys)
    assert not (tmp_path / "out.sric").exists()


@pytest.mark.parametrize(
    ("command", "damage"),
    [("decompress", damage) for damage in ("empty", "bad magic", "header cut short", "no complete layer")]
    + [("decompress", "flipped byte in a layer")]
    # info reads the header only: layers that are cut short or damaged are not its to judge
    + [("info", damage) for damage in ("empty", "bad magic", "header cut short")],
)
def test_a_corrupt_or_truncated_bitstream_is_one_line_and_exit_2(
    tiled_file: tuple[Path, Path],
    weights_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    damage: str,
) -> None:
    data = tiled_file[0].read_bytes()
    header = parse_header(data)
    broken = {
        "empty": b"",
        "bad magic": b"JUNK" + data[4:],
        "header cut short": data[:20],
        "no complete layer": data[: header.header_bytes + 3],
        "flipped byte in a layer": data[: header.layers[0].offset + 3]
        + bytes([data[header.layers[0].offset + 3] ^ 0x20])
        + data[header.layers[0].offset + 4 :],
    }[damage]
    source = tmp_path / "broken.sric"
    source.write_bytes(broken)
    arguments = [command, str(source)]
    if command == "decompress":
        arguments += [str(tmp_path / "out.png"), "--weights", str(weights_path)]
    _one_line_exit_2(arguments, capsys)
    assert not (tmp_path / "out.png").exists()
