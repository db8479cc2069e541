"""The wavelet transform: perfect reconstruction, the coefficient order, and a wavelet codec end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.api import Decoder, encode, fresh_model, load_model, save_weights
from codec.model import CodecConfig, first_pass_mask
from codec.quality import psnr
from codec.symbol_tables import same_channel_neighbours
from codec.wavelet import WaveletAnalysis, WaveletSynthesis, significant_neighbours
from codec.web_export import export_entropy_path, synthesis_weights

from .conftest import natural_image

WAVELET = CodecConfig(
    transform="wavelet",
    layers=2,
    luma_coefficients=64,
    chroma_coefficients=16,
    rnn_channels=8,
    hyper_channels=8,
    history_channels=4,
    side_channels=4,
    lambdas=(0.01, 0.04),
)


def test_all_coefficients_reconstruct_the_picture_and_keep_its_energy() -> None:
    images = torch.rand(2, 3, 64, 96, dtype=torch.float64)
    coefficients = WaveletAnalysis(256, 256)(images)
    assert coefficients.shape == (2, 768, 4, 6)
    assert torch.allclose(WaveletSynthesis(256, 256)(coefficients), images, atol=1e-12)
    # close to orthonormal, so one quantization step suits every band
    assert 0.97 < (coefficients.square().sum() / images.square().sum()).item() < 1.05


def test_coefficients_run_coarse_to_fine_and_a_flat_picture_is_its_lowest_band_alone() -> None:
    flat = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64)[None, :, None, None].expand(1, 3, 32, 32)
    coefficients = WaveletAnalysis(256, 256)(flat)
    lowest = [0, 256, 512]
    assert coefficients[:, lowest].abs().min() > 0.1
    others = torch.ones(768, dtype=torch.bool)
    others[lowest] = False
    assert coefficients[:, others].abs().max() < 1e-9
    # a smooth picture: levels 4 and 3 (the first 16 of an axis) hold most of what is not the mean
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    smooth = torch.sin(x / 9 + y / 13).expand(1, 3, 64, 64).double()
    luma = WaveletAnalysis(256, 256)(smooth)[:, 1:256].square().sum(dim=(0, 2, 3))
    assert luma[:15].sum() > 0.9 * luma.sum()


def test_kept_coefficients_must_end_whole_levels() -> None:
    with pytest.raises(ValueError, match="whole levels"):
        CodecConfig(transform="wavelet", luma_coefficients=160, chroma_coefficients=48)
    with pytest.raises(ValueError, match="transform must be one of"):
        CodecConfig(transform="curvelet")


def test_a_wavelet_codec_codes_alike_through_torch_and_onnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEC_ONNX_CACHE", str(tmp_path / "onnx"))
    path = tmp_path / "wavelet.pt"
    save_weights(fresh_model(WAVELET, seed=4), path)
    onnx, plain = load_model(path), load_model(path, runtime="torch")
    assert onnx.model_id != load_model(runtime="torch").model_id
    image = natural_image(80, 112)
    data = encode(image, plain)
    readers = [Decoder(data, reader) for reader in (onnx, plain)]
    for n in range(1, WAVELET.layers + 1):
        pictures = [reader.decode(n) for reader in readers]
        assert readers[0].symbol_checksum(n) == readers[1].symbol_checksum(n)
        assert np.abs(pictures[0].astype(int) - pictures[1].astype(int)).max() <= 1
        assert psnr(image, pictures[0]) > 10  # decodes to the picture, not to noise


def test_the_browser_decoder_export_carries_the_wavelets_constants_and_no_bases() -> None:
    model = fresh_model(WAVELET)
    synthesis = export_entropy_path(model)["synthesis"]
    assert synthesis["transform"] == "wavelet" and synthesis["wavelet"]["levels"] == 4
    names = [tensor["name"] for tensor in synthesis["tensors"]]
    assert names and all(name.startswith("refiner.") for name in names)
    assert len(synthesis_weights(model)) == 4 * sum(p.numel() for p in model.decoder.refiner.parameters())
    lapped = export_entropy_path(fresh_model())["synthesis"]
    assert lapped["transform"] == "lapped" and lapped["wavelet"] is None
    assert "synthesis.weight" in [tensor["name"] for tensor in lapped["tensors"]]


def test_train_starts_a_fresh_wavelet_run_without_validation_images_and_keeps_it_on_resume(tmp_path: Path) -> None:
    bank = tmp_path / "crops.npy"
    np.save(bank, np.stack([natural_image(96, 96, seed=s) for s in range(4)]))
    common = ["--crops", str(bank), "--checkpoint", str(tmp_path / "run.pt"), "--log", str(tmp_path / "run.csv")]
    common += ["--batch", "2", "--crop-size", "64", "--threads", "1", "--validation", str(tmp_path / "none")]
    run = [sys.executable, "-m", "codec", "train", *common, "--steps", "1", "--transform", "wavelet"]
    subprocess.run(run, check=True, capture_output=True, timeout=300)
    saved = torch.load(tmp_path / "run.pt", map_location="cpu", weights_only=False)
    assert saved["config"]["transform"] == "wavelet"
    assert (saved["config"]["luma_coefficients"], saved["config"]["chroma_coefficients"]) == (256, 64)
    again = subprocess.run([*run, "--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "keeps its own transform" in again.stderr


def test_a_two_pass_context_on_the_wavelet_decodes_a_checkerboard_of_every_band_first() -> None:
    """In every band's own grid, the first pass is where row + column is even."""
    full = CodecConfig(transform="wavelet", luma_coefficients=256, chroma_coefficients=64)
    first = first_pass_mask(full, torch.zeros(1, 384, 3, 5))
    assert first.shape == (1, 384, 3, 5)
    for start, factor in ((0, 1), (4, 2), (16, 4), (64, 8)):  # the first band (LL4, HL3, HL2, HL1) of each level
        cells = first[:, start : start + factor * factor].float()
        band = torch.nn.functional.pixel_shuffle(cells, factor)[0, 0] if factor > 1 else cells[0, 0]
        rows, columns = torch.meshgrid(torch.arange(band.shape[0]), torch.arange(band.shape[1]), indexing="ij")
        assert torch.equal(band.bool(), (rows + columns) % 2 == 0), factor
    codec = fresh_model(CodecConfig.from_dict({**WAVELET.to_dict(), "context_channels": 8}), seed=5)
    with torch.no_grad():
        for parameter in codec.context.parameters():
            parameter.normal_(0, 0.05)
    image = natural_image(80, 112)
    decoder = Decoder(encode(image, codec), codec)
    assert psnr(image, decoder.decode()) > 10


def test_a_wavelet_latents_neighbours_are_in_its_bands_grid_and_its_parent() -> None:
    """The history context's neighbours (codec.symbol_tables): for a level-1 coefficient, the cells beside it in
    its band (other channels of its block, or the next block's across the border) and its level-2 parent."""
    luma, chroma = 256, 64
    significance = torch.zeros(1, luma + 2 * chroma, 2, 2)
    hl1 = 64  # level 1's HL band: 8x8 a block, row-major
    significance[0, hl1 + 7, 0, 0] = 1  # block (0, 0), cell (0, 7): its right border
    near = significant_neighbours(significance, luma, chroma)
    assert near[0, hl1 + 6, 0, 0] and near[0, hl1 + 8 + 7, 0, 0] and near[0, hl1 + 7, 0, 0]
    assert near[0, hl1 + 0, 0, 1] and near[0, hl1 + 8, 0, 1], "across the block border, in the next block"
    assert not near[0, hl1 + 5, 0, 0] and not near[0, hl1 + 7, 1, 1]
    assert not near[0, hl1 + 64 + 6, 0, 0], "the LH band is another band"
    assert int(near.sum()) == 6
    parent = torch.zeros_like(significance)
    hl2 = 16  # level 2's HL band: 4x4 a block
    parent[0, hl2 + 5, 1, 0] = 1  # cell (1, 1): the parent of level 1's cells (2..3, 2..3)
    children = significant_neighbours(parent, luma, chroma)[0, hl1 : hl1 + 64, 1, 0].reshape(8, 8)
    assert children[2:4, 2:4].all() and int(children.sum()) == 4
    assert same_channel_neighbours(significance)[0, hl1 + 7].all(), "the lapped transform's: the same channel"
