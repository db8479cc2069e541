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
