"""A short run of every target of bench/fuzz_container.py (the long run is outside CI): mutated and
random containers only ever raise the codec's own errors, a flipped byte in any layer is always a
ChecksumError, and the Decoder turns CRC-valid garbage into a CodecError or a picture of the right size.
(tests/codec/test_container.py holds the parser's own property tests.)"""

from __future__ import annotations

import math

import pytest

from bench.fuzz_container import TARGETS, fuzz

EXAMPLES = {"parser-random": 300, "parser-mutated": 300, "layer-flip": 200, "decoder": 60}


@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzz_target(name: str) -> None:
    tally = fuzz(name, EXAMPLES[name], deadline=math.inf)
    assert tally.examples == EXAMPLES[name]
    if name == "layer-flip":
        assert tally.outcomes == {"ChecksumError": EXAMPLES[name]}
    if name == "decoder":  # some garbage passes every check and reaches the entropy decoder and the RNN
        assert tally.outcomes["ok"] > 0
