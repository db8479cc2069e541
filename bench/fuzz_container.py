"""Long fuzz run of the container parser and the incremental Decoder (outside CI; figures in docs/hardening.md).

    python -m bench.fuzz_container --examples 200000 --decoder-examples 5000 --seconds 600

Hypothesis drives four targets, in batches until the example counts or the time budget run out:

* parser-random:  arbitrary bytes (often behind the magic) through `parse_header` and `tile_payload`;
* parser-mutated: flips, truncations, insertions, deletions and splices of valid containers;
* layer-flip:     one byte flipped inside a layer of a valid container: `ChecksumError` for exactly that
                  layer, every time, and the layers before it still read;
* decoder:        mutated real bitstreams of tiny images, and containers whose layers pass their CRC but
                  hold damaged or random payloads, through `codec.api.Decoder` with an untrained model.

Every target may only ever raise the codec's own errors (`CodecError`); the decoder may also return a
picture, which must have the header's size. Anything else stops the run with the shrunk example.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec import container
from codec.errors import ChecksumError, CodecError

MODEL_ID = bytes(range(16))
BATCH = 2000


@dataclass
class Tally:
    """What one target saw: examples run, and outcomes by kind (`ok` or the error's class name)."""

    examples: int = 0
    outcomes: Counter = field(default_factory=Counter)

    def record(self, outcome: str) -> None:
        self.examples += 1
        self.outcomes[outcome] += 1


def read_everything(data: bytes) -> str:
    """Parse the header and check every complete layer; the outcome's name."""
    try:
        header = container.parse_header(data)
        for index in range(1, header.layers_within(len(data)) + 1):
            for tile in header.tiles:
                container.tile_payload(header, data, index, tile.index)
    except CodecError as error:
        return type(error).__name__
    return "ok"


def tiled_layers(draw: st.DrawFn, tiles: int, nonempty: bool = False) -> list[list[bytes]]:
    """1..12 layers of `tiles` random tile payloads each."""
    layer = st.lists(st.binary(max_size=120), min_size=tiles, max_size=tiles)
    return draw(st.lists(layer.filter(any) if nonempty else layer, min_size=1, max_size=12))


@st.composite
def valid_containers(draw: st.DrawFn) -> bytes:
    """Any picture size; the tile size keeps the grid within 64 tiles."""
    width = draw(st.integers(1, container.MAX_DIMENSION))
    height = draw(st.integers(1, container.MAX_DIMENSION))
    tile_size = -(-max(width, height) // 8 // container.TILE_ALIGNMENT) * container.TILE_ALIGNMENT
    tiles = container.tile_count(width, height, tile_size)
    return container.serialize(MODEL_ID, width, height, tile_size, tiled_layers(draw, tiles))


@st.composite
def mutated(draw: st.DrawFn, originals: st.SearchStrategy[bytes]) -> bytes:
    """A valid file with a few random edits: byte flips, insertions, deletions, a splice, a cut."""
    data = bytearray(draw(originals))
    for _ in range(draw(st.integers(1, 6))):
        edit = draw(st.sampled_from(["flip", "insert", "delete", "splice"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if edit == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif edit == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        else:
            data[position : position + draw(st.integers(0, 32))] = draw(st.binary(max_size=32))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


Target = tuple[st.SearchStrategy, Callable[[Any], str]]  # what to draw, and the check that names the outcome


def target_parser_random() -> Target:
    """Random bytes, often behind the magic (and version) so that the parser gets past its first check."""
    prefixes = st.sampled_from([b"", container.MAGIC, container.MAGIC + bytes([container.FORMAT_VERSION])])
    return st.tuples(prefixes, st.binary(max_size=600)).map(b"".join), read_everything


def target_parser_mutated() -> Target:
    return mutated(valid_containers()), read_everything


def target_layer_flip() -> Target:
    def run(draw: st.DataObject) -> str:
        layers = tiled_layers(draw.draw, container.tile_count(130, 70, 64))
        data = bytearray(container.serialize(MODEL_ID, 130, 70, 64, layers))
        header = container.parse_header(bytes(data))
        layer = draw.draw(st.sampled_from(header.layers))
        data[draw.draw(st.integers(layer.offset, layer.end - 1))] ^= draw.draw(st.integers(1, 255))
        for entry in header.layers[: layer.index - 1]:
            for tile in header.tiles:
                assert (
                    container.tile_payload(header, bytes(data), entry.index, tile.index)
                    == layers[entry.index - 1][tile.index]
                )
        try:
            for tile in header.tiles:
                container.tile_payload(header, bytes(data), layer.index, tile.index)
        except ChecksumError:
            return "ChecksumError"
        raise AssertionError(f"a flip in layer {layer.index} went unnoticed")

    return st.data(), run


def target_decoder() -> Target:
    import numpy as np
    import torch

    from codec.api import Decoder, encode, fresh_model

    torch.set_num_threads(1)
    model = fresh_model()
    sizes = [(16, 16), (8, 40), (33, 17), (70, 20)]
    rng = np.random.default_rng(0)
    bitstreams = [encode(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), model, tile_size=64) for w, h in sizes]

    @st.composite
    def crc_valid_garbage(draw: st.DrawFn) -> bytes:
        """The layers of a real file, some replaced by random bytes or damaged, with CRCs that match."""
        data = draw(st.sampled_from(bitstreams))
        header = container.parse_header(data)
        payloads = [
            [container.tile_payload(header, data, entry.index, tile.index) for tile in header.tiles]
            for entry in header.layers
        ]
        for _ in range(draw(st.integers(1, 3))):
            layer = draw(st.sampled_from(payloads))
            tile = draw(st.integers(0, len(layer) - 1))
            if draw(st.booleans()) or not layer[tile]:
                layer[tile] = draw(st.binary(max_size=2 * len(layer[tile]) + 8))
            else:
                damaged = bytearray(layer[tile])
                damaged[draw(st.integers(0, len(damaged) - 1))] ^= draw(st.integers(1, 255))
                layer[tile] = bytes(damaged)
        return container.serialize(model.model_id, header.width, header.height, header.tile_size, payloads)

    def run(data: bytes) -> str:
        try:
            decoder = Decoder(data, model)
            header = decoder.header
            for layers in range(1, decoder.layers_available + 1):
                picture = decoder.decode(layers)
                assert picture.shape == (header.height, header.width, 3) and picture.dtype == np.uint8
        except CodecError as error:
            return type(error).__name__
        return "ok"

    return st.one_of(mutated(st.sampled_from(bitstreams)), crc_valid_garbage()), run


TARGETS: dict[str, Callable[[], Target]] = {
    "parser-random": target_parser_random,
    "parser-mutated": target_parser_mutated,
    "layer-flip": target_layer_flip,
    "decoder": target_decoder,
}
TIME_SHARES = {"parser-random": 0.2, "parser-mutated": 0.3, "layer-flip": 0.1, "decoder": 0.4}


def fuzz(name: str, examples: int, deadline: float) -> Tally:
    """Run batches of fresh random examples until `examples` ran or the deadline passed."""
    tally = Tally()
    strategy, check = TARGETS[name]()

    def record(value: Any) -> None:
        tally.record(check(value))

    while tally.examples < examples and time.monotonic() < deadline:
        batch = settings(
            max_examples=min(BATCH, examples - tally.examples),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        batch(given(strategy)(record))()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_container", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200_000, help="per parser target (default 200000)")
    parser.add_argument("--decoder-examples", type=int, default=5_000, help="through the Decoder (default 5000)")
    parser.add_argument("--seconds", type=float, default=3600.0, help="time budget for the whole run")
    parser.add_argument("--out", help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    summary: dict[str, dict] = {}
    share_so_far = 0.0
    for name, share in TIME_SHARES.items():
        share_so_far += share  # a target's unused time passes to the next ones
        target_started = time.monotonic()
        count = args.decoder_examples if name == "decoder" else args.examples
        tally = fuzz(name, count, started + share_so_far * args.seconds)
        seconds = time.monotonic() - target_started
        summary[name] = {"examples": tally.examples, "seconds": round(seconds, 1), "outcomes": dict(tally.outcomes)}
        print(f"{name:15} {tally.examples:8d} examples in {seconds:7.1f} s  {dict(tally.outcomes.most_common())}")
        sys.stdout.flush()
    total = sum(item["examples"] for item in summary.values())
    print(f"total          {total:8d} examples in {time.monotonic() - started:7.1f} s: only codec errors raised")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"total_examples": total, "targets": summary}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
