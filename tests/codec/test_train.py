"""Training: the paper's loss, exact resumption, SIGTERM checkpoints, export."""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.api import Decoder, encode, load_model
from codec.model import CodecConfig, LayerOutput
from codec.train import (
    Trainer,
    TrainSettings,
    as_tiles,
    export_weights,
    from_tiles,
    post_filter_loss,
    rate_distortion_loss,
)

from .conftest import natural_image

TINY = CodecConfig(
    layers=2,
    luma_coefficients=12,
    chroma_coefficients=6,
    rnn_channels=8,
    hyper_channels=8,
    history_channels=4,
    side_channels=4,
    lambdas=(0.01, 0.04),
)


@pytest.fixture()
def crop_bank(tmp_path: Path) -> Path:
    bank = np.stack([natural_image(96, 96, seed=s) for s in range(6)])
    path = tmp_path / "crops.npy"
    np.save(path, bank)
    return path


def settings_for(tmp_path: Path, crop_bank: Path, steps: int, name: str = "run") -> TrainSettings:
    return TrainSettings(
        crops=crop_bank,
        checkpoint=tmp_path / f"{name}.pt",
        log=tmp_path / f"{name}.csv",
        steps=steps,
        batch=2,
        crop_size=64,
        validate_every=2,
        validation_dir=None,
        config=TINY,
    )


def test_loss_charges_each_layer_rate_to_every_later_layer() -> None:
    image = torch.zeros(1, 3, 4, 4)
    # likelihood 1/2 everywhere: one bit per latent element
    one_bit = torch.full((1, 1, 2, 2), 0.5)
    certain = torch.ones(1, 1, 1, 1)
    outputs = [
        LayerOutput(torch.full_like(image, 2 / 255), one_bit, certain),  # 4 bits, MSE 4
        LayerOutput(torch.full_like(image, 1 / 255), one_bit, certain),  # 4 bits, MSE 1
    ]
    loss, rates, distortions = rate_distortion_loss(outputs, image, (0.5, 2.0), "mse")
    assert [r.item() for r in rates] == pytest.approx([0.25, 0.25])
    assert [d.item() for d in distortions] == pytest.approx([4.0, 1.0])
    # layer 1: R1 + 0.5*4 ; layer 2: (R1 + R2) + 2*1 ; averaged over the 2 layers
    assert loss.item() == pytest.approx(((0.25 + 2.0) + (0.5 + 2.0)) / 2)


def _parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_resume_continues_exactly(tmp_path: Path, crop_bank: Path) -> None:
    torch.set_num_threads(1)
    straight = Trainer(settings_for(tmp_path, crop_bank, steps=4, name="straight"))
    straight.run()
    first = Trainer(settings_for(tmp_path, crop_bank, steps=2, name="split"))
    first.run()
    resumed = Trainer(settings_for(tmp_path, crop_bank, steps=4, name="split"))
    assert resumed.step == 2
    resumed.run()
    assert resumed.step == 4
    expected, actual = _parameters(straight), _parameters(resumed)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_sigterm_stops_with_a_checkpoint(tmp_path: Path, crop_bank: Path) -> None:
    trainer = Trainer(settings_for(tmp_path, crop_bank, steps=10_000))

    def terminate_after_two_steps() -> None:
        while trainer.step < 2:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_after_two_steps)
    killer.start()
    trainer.run()
    killer.join()
    assert 2 <= trainer.step < 10_000
    saved = torch.load(tmp_path / "run.pt", weights_only=False)
    assert saved["step"] == trainer.step
    assert signal.getsignal(signal.SIGTERM) is not trainer.request_stop


def test_validation_log_has_rate_and_quality_per_layer(tmp_path: Path, crop_bank: Path) -> None:
    settings = settings_for(tmp_path, crop_bank, steps=2)
    trainer = Trainer(settings)
    trainer.validation = torch.from_numpy(natural_image(64, 64)).permute(2, 0, 1)[None].float() / 255
    trainer.run()
    rows = list(csv.DictReader(settings.log.open()))
    assert [row["step"] for row in rows] == ["2"]
    assert {"seconds", "loss", "bpp1", "psnr1", "bpp2", "psnr2"} <= rows[0].keys()
    assert float(rows[0]["bpp2"]) > float(rows[0]["bpp1"]) > 0


def test_exported_weights_load_and_code(tmp_path: Path, crop_bank: Path) -> None:
    settings = settings_for(tmp_path, crop_bank, steps=1)
    Trainer(settings).run()
    weights = export_weights(settings.checkpoint, tmp_path / "weights.pt")
    model = load_model(weights)
    assert model.trained and model.training_info["steps"] == 1
    assert model.config == TINY
    assert len(encode(natural_image(20, 30), model)) > 0


def test_compressed_crop_bank_round_trips(tmp_path: Path) -> None:
    from codec.data import load_crop_bank, save_crop_bank

    bank = np.stack([natural_image(32, 32, seed=s) for s in range(3)])
    save_crop_bank(bank, tmp_path / "bank.npz")
    save_crop_bank(bank, tmp_path / "bank.npy")
    assert np.array_equal(load_crop_bank(tmp_path / "bank.npz"), bank)
    assert np.array_equal(load_crop_bank(tmp_path / "bank.npy"), bank)
    assert (tmp_path / "bank.npz").stat().st_size < (tmp_path / "bank.npy").stat().st_size


def test_first_layer_rate_weight_adds_to_the_first_layer_rate_only() -> None:
    image = torch.zeros(1, 3, 4, 4)
    one_bit, certain = torch.full((1, 1, 2, 2), 0.5), torch.ones(1, 1, 1, 1)
    outputs = [LayerOutput(torch.full_like(image, 2 / 255), one_bit, certain) for _ in range(2)]
    plain, rates, _ = rate_distortion_loss(outputs, image, (0.5, 2.0), "mse")
    weighted, _, _ = rate_distortion_loss(outputs, image, (0.5, 2.0), "mse", first_layer_rate_weight=3.0)
    assert weighted.item() == pytest.approx(plain.item() + 3.0 * rates[0].item())


def test_a_post_filter_trains_alone_on_the_frozen_codec(tmp_path: Path, crop_bank: Path) -> None:
    """Only the filter's weights move, the model id stays (files keep decoding), and the shown picture improves."""
    torch.set_num_threads(1)
    Trainer(settings_for(tmp_path, crop_bank, steps=1, name="codec")).run()
    codec_weights = export_weights(tmp_path / "codec.pt", tmp_path / "codec-weights.pt")
    settings = settings_for(tmp_path, crop_bank, steps=30, name="filter")
    settings.config, settings.init_weights, settings.post_filter_channels = None, codec_weights, 8
    settings.learning_rate = 3e-3
    trainer = Trainer(settings)
    before = _parameters(trainer)
    image = trainer.sampler.batch(4)
    with torch.no_grad():
        outputs = trainer.model.eval()(image)
        loss_before = post_filter_loss(trainer.model, [o.reconstruction for o in outputs], image).item()
    trainer.run()
    after = _parameters(trainer)
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved and all(name.startswith("post_filter.") for name in moved), moved
    with torch.no_grad():
        reconstructions = [o.reconstruction for o in trainer.model.eval()(image)]
        assert post_filter_loss(trainer.model, reconstructions, image).item() < loss_before
    filtered = load_model(export_weights(settings.checkpoint, tmp_path / "filtered.pt"))
    plain = load_model(codec_weights)
    assert filtered.post_filter is not None and plain.post_filter is None
    assert filtered.model_id == plain.model_id
    data = encode(natural_image(40, 56), plain)
    assert Decoder(data, filtered).decode(2).shape == (40, 56, 3)


def test_a_deepened_post_filter_starts_as_the_trained_one(tmp_path: Path, crop_bank: Path) -> None:
    """`post_filter_depth` beyond a trained filter's adds convolutions that pass their input through, so the
    run starts from that filter's pictures, and then trains them; the model id stays."""
    torch.set_num_threads(1)
    settings = settings_for(tmp_path, crop_bank, steps=1, name="filtered")
    settings.config = CodecConfig.from_dict({**TINY.to_dict(), "post_filter_channels": 8})
    trained = Trainer(settings)
    for parameter in trained.model.post_filter.parameters():
        torch.nn.init.normal_(parameter, std=0.1)  # a filter that does something
    trained.save()
    weights = export_weights(settings.checkpoint, tmp_path / "filtered.pt")
    settings = settings_for(tmp_path, crop_bank, steps=2, name="deeper")
    settings.config, settings.init_weights = None, weights
    settings.post_filter_channels, settings.post_filter_depth = 8, 5
    deeper = Trainer(settings)
    assert len(deeper.model.post_filter.body) == 4 and deeper.model.config.post_filter_depth == 5
    picture = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        for layer in range(TINY.layers):
            shown = trained.model.post_filter(picture, layer)
            assert not torch.equal(shown, picture)
            assert torch.allclose(deeper.model.post_filter(picture, layer), shown, atol=1e-6)
    before = _parameters(deeper)
    deeper.run()
    after = _parameters(deeper)
    assert not torch.equal(before["post_filter.body.3.weight"], after["post_filter.body.3.weight"])
    deeper_model = load_model(export_weights(settings.checkpoint, tmp_path / "deeper.pt"))
    assert deeper_model.config.post_filter_depth == 5
    assert deeper_model.model_id == load_model(weights).model_id  # files keep decoding


def test_bfloat16_products_train_float32_weights(tmp_path: Path, crop_bank: Path) -> None:
    """`precision="bfloat16"` runs the forward passes under autocast: the weights and the optimiser stay
    float32, the loss is that of float32 within bfloat16's rounding, and the weights move."""
    torch.set_num_threads(1)
    settings = settings_for(tmp_path, crop_bank, steps=2, name="bf16")
    settings.precision = "bfloat16"
    trainer = Trainer(settings)
    before = _parameters(trainer)
    image = trainer.sampler.batch(2)
    trainer.model.eval()
    with torch.no_grad():
        plain = rate_distortion_loss(trainer.model(image), image, TINY.lambdas, "mse")[0].item()
        with trainer._precision():
            outputs = trainer.model(image)
        narrow = rate_distortion_loss(outputs, image, TINY.lambdas, "mse")[0].item()
    assert narrow == pytest.approx(plain, rel=0.02)
    trainer.run()
    after = _parameters(trainer)
    assert all(tensor.dtype == torch.float32 for tensor in after.values() if tensor.is_floating_point())
    assert any(not torch.equal(before[name], after[name]) for name in before)


def test_crops_split_into_tiles_in_raster_order_and_assemble_again() -> None:
    images = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    tiles = as_tiles(images, 4)
    assert tiles.shape == (12, 3, 4, 4)
    assert torch.equal(tiles[1], images[0, :, 0:4, 4:8]) and torch.equal(tiles[10], images[1, :, 4:8, 4:8])
    assert torch.equal(from_tiles(tiles, 8, 12), images)


def test_a_post_filter_trained_on_tiles_sees_them_assembled(tmp_path: Path) -> None:
    """With `filter_tile_size` the codec codes each crop's tiles alone and the filter learns on the
    assembled picture; the codec stays frozen."""
    torch.set_num_threads(1)
    crop_bank = tmp_path / "large-crops.npy"
    np.save(crop_bank, np.stack([natural_image(128, 128, seed=s) for s in range(3)]))
    Trainer(settings_for(tmp_path, crop_bank, steps=1, name="codec")).run()
    codec_weights = export_weights(tmp_path / "codec.pt", tmp_path / "codec-weights.pt")
    settings = settings_for(tmp_path, crop_bank, steps=2, name="tiled")
    settings.config, settings.init_weights, settings.post_filter_channels = None, codec_weights, 8
    settings.crop_size, settings.filter_tile_size = 128, 64
    trainer = Trainer(settings)
    image = trainer.sampler.batch(2)
    outputs, reconstructions = trainer._coded(image)
    tiles = trainer.model(as_tiles(image, 64))
    assert outputs[0].reconstruction.shape == (2 * 4, 3, 64, 64) and reconstructions[0].shape == image.shape
    assert torch.allclose(reconstructions[0], from_tiles(tiles[0].reconstruction, *image.shape[2:]))
    before = _parameters(trainer)
    trainer.run()
    after = _parameters(trainer)
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved and all(name.startswith("post_filter.") for name in moved), moved


def test_a_codec_with_a_post_filter_trains_with_it_against_the_picture_shown(tmp_path: Path, crop_bank: Path) -> None:
    """Trained on (without `post_filter_channels`), a model that has a filter learns together with it: the
    loss's distortion is that of the filtered picture, and both the codec's and the filter's weights move."""
    torch.set_num_threads(1)
    settings = settings_for(tmp_path, crop_bank, steps=3, name="joint")
    settings.config = CodecConfig.from_dict({**TINY.to_dict(), "post_filter_channels": 8})
    trainer = Trainer(settings)
    torch.nn.init.normal_(trainer.model.post_filter.tail.weight, std=0.05)  # a filter that does something
    image = trainer.sampler.batch(2)
    outputs = trainer.model(image)
    shown = [trainer.model.shown_picture(o.reconstruction, k) for k, o in enumerate(outputs, start=1)]
    lambdas = trainer.model.config.lambdas
    _, _, on_shown = rate_distortion_loss(outputs, image, lambdas, "mse", pictures=shown)
    _, _, on_reconstruction = rate_distortion_loss(outputs, image, lambdas, "mse")
    assert all(a.item() != b.item() for a, b in zip(on_shown, on_reconstruction, strict=True))
    before = _parameters(trainer)
    trainer.run()
    after = _parameters(trainer)
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert any(name.startswith("post_filter.") for name in moved), moved
    assert any(name.startswith("encoder.") for name in moved) and any(name.startswith("decoder.") for name in moved)
