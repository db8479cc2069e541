"""One stored bitstream of the shipped weights decodes to pixels within ±1 at every layer: from the server
before and after a restart (a fresh process, with another torch thread count), and locally with 1, 2 and 4
threads. (tests/codec/test_codec.py checks the symbols themselves, which are identical, with a control.)"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from codec.api import DEFAULT_WEIGHTS, Decoder, load_model
from tests.harness import WRITE_KEY, ServerFactory, upload

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
PARROTS = Path(__file__).resolve().parents[1] / "data" / "kodim23-384x256.png"


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def served_layers(http: httpx.Client, document: dict) -> list[np.ndarray]:
    url = document["urls"]["image"]
    return [pixels(http.get(url, params={"layers": n}).content) for n in range(1, len(document["layers"]) + 1)]


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_pixels_agree_within_one_across_restarts_and_thread_counts(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    shipped = ("--weights", str(DEFAULT_WEIGHTS))
    first = server_factory.start(
        {"CODEC_SERVER_WRITE_KEY": WRITE_KEY, "CODEC_SERVER_TORCH_THREADS": "1"}, data_dir, args=shipped
    )
    with httpx.Client(base_url=first.url, timeout=120, headers=AUTH) as http:
        document = upload(http, PARROTS.read_bytes()).json()
        bitstream = http.get(document["urls"]["bitstream"]).content
        before = served_layers(http, document)
    first.stop()

    second = server_factory.start({"CODEC_SERVER_TORCH_THREADS": "4"}, data_dir, args=shipped)
    with httpx.Client(base_url=second.url, timeout=120) as http:
        after = served_layers(http, document)
    second.stop()

    layers = len(document["layers"])
    assert len(before) == len(after) == layers
    for n in range(layers):
        assert within_one(before[n], after[n]), f"layer {n + 1} differs after the restart"
    assert not within_one(before[0], before[-1])  # the layers are really different pictures
    model = load_model()
    for threads in (1, 2, 4):
        with torch_threads(threads):
            decoder = Decoder(bitstream, model)
            local = [decoder.decode(n) for n in range(1, layers + 1)]
        for n in range(layers):
            assert within_one(local[n], before[n]), f"layer {n + 1} differs with {threads} local threads"


def within_one(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1
