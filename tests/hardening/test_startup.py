"""A missing or wrong model file, or an unusable device or data directory: `python -m server` stops
before serving with exit status 2 and one line that says why (never a traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from server.__main__ import main
from tests.harness import REPO

from .mounts import read_only


def random_bytes(path: Path, _: Path) -> None:
    path.write_bytes(os.urandom(4096))


def empty_file(path: Path, _: Path) -> None:
    path.write_bytes(b"")


def truncated_weights(path: Path, good: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def another_torch_file(path: Path, _: Path) -> None:
    torch.save(torch.nn.Linear(3, 3).state_dict(), path)


def another_architecture(path: Path, good: Path) -> None:
    payload = torch.load(good, weights_only=False)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = torch.zeros(1, 2, 3)
    torch.save(payload, path)


def a_directory(path: Path, _: Path) -> None:
    path.mkdir()


WRONG_WEIGHTS: list[tuple[Callable[[Path, Path], None], str]] = [
    (random_bytes, "cannot read weights"),
    (empty_file, "cannot read weights"),
    (truncated_weights, "cannot read weights"),
    (another_torch_file, "is not a weights file of this codec"),
    (another_architecture, "does not match this codec's architecture"),
    (a_directory, "no weights at"),
]


@pytest.mark.parametrize(("write", "reason"), WRONG_WEIGHTS, ids=[write.__name__ for write, _ in WRONG_WEIGHTS])
def test_wrong_weights_stop_the_start_with_one_line(
    write: Callable[[Path, Path], None], reason: str, weights_path: Path, tmp_path: Path, capsys
) -> None:
    weights = tmp_path / "codec.pt"
    write(weights, weights_path)
    assert main(["--weights", str(weights), "--data-dir", str(tmp_path / "data")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and reason in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_cuda_without_a_gpu_stops_the_start_with_one_line(
    weights_path: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--device", "cuda", "--weights", str(weights_path), "--data-dir", str(tmp_path / "data")]) == 2
    error = capsys.readouterr().err
    assert error == "error: device cuda was requested but torch sees no GPU\n"


def test_a_read_only_data_directory_stops_the_start_with_one_line(weights_path: Path, tmp_path: Path, capsys) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "blobs").mkdir(parents=True)
    with read_only(data_dir):
        assert main(["--weights", str(weights_path), "--data-dir", str(data_dir)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: cannot open the index") and error.count("\n") == 1


def test_the_real_process_exits_2_without_a_traceback(tmp_path: Path) -> None:
    weights = tmp_path / "codec.pt"
    random_bytes(weights, weights)
    result = subprocess.run(
        [sys.executable, "-m", "server", "--weights", str(weights), "--data-dir", str(tmp_path / "data")],
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},  # torch's deprecation notices are not ours
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot read weights") and result.stderr.count("\n") == 1, result.stderr
