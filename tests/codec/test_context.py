"""The frequency context: two passes in one rANS stream, still exact, and off by default."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from codec.api import DEFAULT_WEIGHTS, Decoder, _prepare, encode, fresh_model, load_model
from codec.model import FIRST_PASS_CHROMA, FIRST_PASS_LUMA, CodecConfig, ScalableCodec, first_pass_mask
from codec.quality import psnr

from .conftest import natural_image


def with_context(base: ScalableCodec, seed: int, mean_corrections: bool = True) -> ScalableCodec:
    """`base` plus a context whose output is random (a fresh one outputs zero and changes nothing)."""
    model = ScalableCodec(CodecConfig.from_dict({**base.config.to_dict(), "context_channels": 8}))
    model.load_state_dict(base.state_dict(), strict=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.context.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
        if not mean_corrections:  # the second half of the output channels are the mean corrections
            model.context.params.weight[model.config.latent_channels :] = 0
            model.context.params.bias[model.config.latent_channels :] = 0
    model.update(force=True)
    return _prepare(model.float(), trained=False, info={})


@pytest.fixture(scope="module")
def base() -> ScalableCodec:
    return fresh_model(seed=3)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return natural_image(96, 160, seed=4)


def test_the_first_pass_is_every_blocks_lowest_frequencies() -> None:
    config = CodecConfig()
    mask = first_pass_mask(config, torch.zeros(1))
    assert mask.shape == (1, config.latent_channels, 1, 1)
    assert mask.sum() == FIRST_PASS_LUMA + 2 * FIRST_PASS_CHROMA
    chroma = config.luma_coefficients
    assert mask[0, 0] and mask[0, FIRST_PASS_LUMA - 1] and not mask[0, FIRST_PASS_LUMA]
    assert mask[0, chroma] and not mask[0, chroma + FIRST_PASS_CHROMA] and not mask[0, -1]


def test_a_scale_only_context_codes_the_same_symbols_in_other_bytes(base: ScalableCodec, image: np.ndarray) -> None:
    """Scales change the bytes, never the quantized values: the pictures are those of the plain model."""
    scales_only = with_context(base, seed=1, mean_corrections=False)
    plain_data, context_data = encode(image, base), encode(image, scales_only)
    assert plain_data != context_data
    plain, context = Decoder(plain_data, base), Decoder(context_data, scales_only)
    for n in range(1, base.config.layers + 1):
        assert np.array_equal(plain.decode(n), context.decode(n))
        assert plain.symbol_checksum(n) == context.symbol_checksum(n)


@pytest.mark.parametrize("writer_dtype", [torch.float32, torch.float64])
def test_a_context_model_round_trips_and_its_symbols_do_not_depend_on_precision(
    image: np.ndarray, writer_dtype: torch.dtype
) -> None:
    float32 = with_context(fresh_model(seed=3), seed=2)
    float64 = with_context(fresh_model(seed=3), seed=2).double()
    data = encode(image, float32 if writer_dtype == torch.float32 else float64)
    readers = [Decoder(data, float32), Decoder(data, float64)]
    for n in range(1, float32.config.layers + 1):
        pictures = [reader.decode(n) for reader in readers]
        assert readers[0].symbol_checksum(n) == readers[1].symbol_checksum(n)
        assert np.abs(pictures[0].astype(int) - pictures[1].astype(int)).max() <= 1
        assert psnr(image, pictures[0]) > 10  # decodes to the picture, not to noise


def test_a_model_without_context_keeps_its_id(base: ScalableCodec) -> None:
    """Weights from before the option existed must keep the id their files carry: the one the model card
    recorded for the shipped weights when they were exported."""
    card = (DEFAULT_WEIGHTS.parent / "MODEL_CARD.md").read_text()
    recorded = re.search(r"\*\*Model id\*\*: `([0-9a-f]{32})`", card).group(1)
    shipped = load_model()
    assert shipped.config.context_channels == 0 and shipped.model_id.hex() == recorded
    assert with_context(base, seed=1).model_id != base.model_id
