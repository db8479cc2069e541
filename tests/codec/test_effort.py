"""Encoder effort levels: the search lowers the real rate-distortion cost, and any decoder reads its files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.api import Decoder, encode, load_model
from codec.container import parse_header
from codec.effort import EFFORTS, check_effort
from codec.imageio import read_image
from codec.model import ScalableCodec
from codec.search import search_loss, search_offsets

PARROTS = Path(__file__).resolve().parents[1] / "data" / "kodim23-384x256.png"


def real_cost(model: ScalableCodec, pixels: np.ndarray, data: bytes, distortion_weight: float) -> float:
    """The search's loss on real bytes and the decoded (shown) pixels: Σ_k (bpp up to k + w·λ_k·MSE_k) / K."""
    header, decoder = parse_header(data), Decoder(data, model)
    cost = 0.0
    for n, lam in enumerate(model.config.lambdas, start=1):
        mse = float(np.mean((decoder.decode(n).astype(np.float64) - pixels) ** 2))
        cost += header.bpp(n) + distortion_weight * lam * mse
    return cost / model.config.layers


def test_effort_2_costs_less_than_effort_1_on_real_bytes_with_the_shipped_weights() -> None:
    torch.set_num_threads(1)
    shipped = load_model()
    pixels = read_image(PARROTS)[:192, 96:288]  # one tile
    plain, searched = encode(pixels, shipped, effort=1), encode(pixels, shipped, effort=2)
    assert plain != searched
    weight = EFFORTS[2].distortion_weight
    assert real_cost(shipped, pixels, searched, weight) < real_cost(shipped, pixels, plain, weight)


def test_a_searched_file_decodes_at_every_layer_and_every_prefix(model: ScalableCodec, small_image) -> None:
    data = encode(small_image, model, effort=2)
    header = parse_header(data)
    full = Decoder(data, model)
    for n in range(1, header.layer_count + 1):
        prefix = Decoder(data[: header.end_of_layer(n)], model)
        assert prefix.layers_available == n
        assert np.array_equal(prefix.decode(n), full.decode(n))


def test_the_search_never_raises_its_own_loss(model: ScalableCodec, small_image) -> None:
    image = torch.from_numpy(np.ascontiguousarray(small_image[:64, :64])).permute(2, 0, 1)[None].float() / 255
    weight = EFFORTS[2].distortion_weight
    with torch.no_grad():
        before = search_loss(model, model(image, rounded_rates=True), image, weight)
        offsets = search_offsets(model, image, effort=2)
        assert offsets is not None and len(offsets) == model.config.layers
        after = search_loss(model, model(image, latent_offsets=offsets, rounded_rates=True), image, weight)
    assert after.item() <= before.item()
    assert search_offsets(model, image, effort=1) is None


@pytest.mark.parametrize("effort", [0, max(EFFORTS) + 1])
def test_unknown_efforts_are_refused(model: ScalableCodec, small_image, effort: int) -> None:
    with pytest.raises(ValueError, match="effort must be within"):
        check_effort(effort)
    with pytest.raises(ValueError, match="effort must be within"):
        encode(small_image, model, effort=effort)


def test_the_cli_takes_an_effort_and_refuses_an_unknown_one(weights_path: Path, tmp_path: Path, small_image) -> None:
    from codec.imageio import write_image

    source, output = tmp_path / "in.png", tmp_path / "out.rnnc"
    write_image(small_image, source)
    command = [sys.executable, "-m", "codec", "compress", str(source), str(output), "--weights", str(weights_path)]
    done = subprocess.run([*command, "--effort", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert parse_header(output.read_bytes()).layer_count == 6
    refused = subprocess.run([*command, "--effort", "9"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "effort" in refused.stderr
