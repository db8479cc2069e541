"""The shipped weights: present, small enough, documented, and improving with every layer."""

from __future__ import annotations

from pathlib import Path

from codec.api import DEFAULT_WEIGHTS, Decoder, encode, load_model
from codec.imageio import read_image
from codec.quality import psnr

REPO = Path(__file__).resolve().parents[2]
PARROTS = REPO / "tests" / "data" / "kodim23-384x256.png"  # the centre of kodim23 (tests/data/README.md)


def test_shipped_weights_load_and_are_documented() -> None:
    assert DEFAULT_WEIGHTS.stat().st_size <= 20 * 1024 * 1024
    model = load_model()
    assert model.trained
    card = (REPO / "weights" / "MODEL_CARD.md").read_text()
    assert model.model_id.hex() in card, "the model card must name the shipped model id"
    assert f"{model.training_info['steps']:,}" in card, "the model card must state the training steps"


def test_quality_rises_with_every_layer_on_a_kodak_image() -> None:
    model = load_model()
    image = read_image(PARROTS)  # 256 x 384, the parrots' heads
    decoder = Decoder(encode(image, model), model)
    qualities = [psnr(image, decoder.decode(n)) for n in range(1, decoder.layers_available + 1)]
    assert len(qualities) == model.config.layers >= 6
    assert all(later > earlier for earlier, later in zip(qualities, qualities[1:])), qualities
    assert qualities[0] > 24.0, "the first layer must already be a recognisable picture"
