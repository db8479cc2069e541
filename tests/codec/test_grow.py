"""Growing the transform: the old coefficients are coded as before, the new ones start as DCT frequencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.api import load_model
from codec.fit_tables import fit_tables
from codec.grow import grow_coefficients, synthesis_floor_psnr
from codec.model import CodecConfig, ScalableCodec
from codec.quality import PSNR_CAP
from codec.transforms import LappedSynthesis, dct_basis

from .conftest import natural_image

SMALL = CodecConfig(
    layers=2,
    luma_coefficients=40,
    chroma_coefficients=12,
    rnn_channels=16,
    hyper_channels=16,
    history_channels=8,
    side_channels=8,
    lambdas=(0.01, 0.04),
)


def trained_looking(config: CodecConfig) -> ScalableCodec:
    """A model whose zero-initialised parts are random too, so that a missed widening shows."""
    torch.manual_seed(5)
    model = ScalableCodec(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "refiner.expand" in name or name in ("history_scale_weights", "scale_index_offset", "log_latent_gain"):
                parameter.copy_(torch.randn_like(parameter) * 0.05)
    return model.eval()


def images(count: int) -> torch.Tensor:
    pictures = np.stack([natural_image(64, 64, seed=s) for s in range(count)])
    return torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def grown() -> tuple[ScalableCodec, ScalableCodec, torch.Tensor]:
    old = trained_looking(SMALL)
    with torch.no_grad():
        new = grow_coefficients(old, 56, 16, images(4)).eval()
    return old, new, torch.tensor(list(range(40)) + list(range(56, 68)) + list(range(72, 84)))


def test_the_old_coefficients_are_analysed_and_modelled_as_before(grown) -> None:
    old, new, kept = grown
    picture = images(2)
    with torch.no_grad():
        old_state, new_state = old.initial_state(picture), new.initial_state(picture)
        old_latents, new_latents = old.analyse(picture, old_state), new.analyse(picture, new_state)
        torch.testing.assert_close(new_latents[:, kept], old_latents)
        old_side, new_side = old.side_information(old_latents, old_state), new.side_information(new_latents, new_state)
        torch.testing.assert_close(new_side, old_side)
        for exact_mode in (False, True):
            old_scale, old_mean = old.entropy_parameters(old_side, old.initial_state(picture), exact_mode)
            new_scale, new_mean = new.entropy_parameters(new_side, new.initial_state(picture), exact_mode)
            torch.testing.assert_close(new_scale[:, kept], old_scale)
            torch.testing.assert_close(new_mean[:, kept], old_mean)


def test_the_old_coefficients_decode_to_the_same_increment(grown) -> None:
    old, new, kept = grown
    old_latents = torch.randn(2, SMALL.latent_channels, 4, 4)
    new_latents = torch.zeros(2, new.config.latent_channels, 4, 4)
    new_latents[:, kept] = old_latents
    with torch.no_grad():
        pictures = []
        for model, latents in ((old, old_latents), (new, new_latents)):
            state = model.initial_state(torch.zeros(2, 3, 64, 64))
            state.means = torch.zeros_like(latents)
            model.synthesise(latents, state)
            pictures.append(state.reconstruction)
    torch.testing.assert_close(pictures[1], pictures[0])


def test_new_coefficients_start_as_dct_frequencies_with_their_own_scales(grown) -> None:
    old, new, kept = grown
    added = torch.tensor([c for c in range(new.config.latent_channels) if c not in set(kept.tolist())])
    basis = dct_basis(56, 16)
    torch.testing.assert_close(new.encoder.analysis.weight[added], basis[added])
    torch.testing.assert_close(new.decoder.synthesis.weight[added], basis[added])
    # the scales were set from the crops' latents, not left at the untrained offset of zero
    assert (new.scale_index_offset[:, added].abs() > 0.5).all()
    # their gains start from their own component's highest trained frequencies (12 chroma: all of them)
    old_gain = old.log_latent_gain.detach()
    torch.testing.assert_close(new.log_latent_gain[:, 40:56], old_gain[:, 24:40].mean(1, keepdim=True).expand(-1, 16))
    torch.testing.assert_close(new.log_latent_gain[:, 68:72], old_gain[:, 40:52].mean(1, keepdim=True).expand(-1, 4))


def test_the_synthesis_floor_rises_with_the_coefficients_and_vanishes_with_all_of_them() -> None:
    pictures = images(2)
    floors = [synthesis_floor_psnr(LappedSynthesis(luma, chroma), pictures) for luma, chroma in ((40, 12), (96, 24))]
    assert floors[0] < floors[1] < 60
    complete = LappedSynthesis(256, 256)  # an orthonormal basis: the picture itself
    assert synthesis_floor_psnr(complete, pictures) == PSNR_CAP


def test_growing_never_shrinks_and_stays_within_the_block(grown) -> None:
    old = grown[0]
    with pytest.raises(ValueError, match="never removes"):
        grow_coefficients(old, 32, 12, images(1))
    with pytest.raises(ValueError, match="at most 256"):
        grow_coefficients(old, 300, 12, images(1))


def test_the_grow_command_writes_weights_that_load(tmp_path: Path, weights_path: Path) -> None:
    bank = tmp_path / "crops.npy"
    np.save(bank, np.stack([natural_image(128, 128, seed=s) for s in range(4)]))
    output = tmp_path / "grown.pt"
    command = [sys.executable, "-m", "codec", "grow", str(weights_path), str(output), "--luma", "176", "--chroma", "56"]
    done = subprocess.run([*command, "--crops", str(bank)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    grown = load_model(output, runtime="torch")
    assert grown.config.latent_channels == 176 + 2 * 56
    assert grown.training_info["grown_from"] == load_model(weights_path, runtime="torch").model_id.hex()


def test_growing_leaves_fitted_tables_behind() -> None:
    """Fitted tables were counted on the old codec's symbols: the grown codec is fitted again after training."""
    old = trained_looking(SMALL)
    with torch.no_grad():
        old.latent_tables = fit_tables(old, images(2))
        assert old.latent_tables is not None
        assert grow_coefficients(old, 56, 16, images(2)).latent_tables is None
