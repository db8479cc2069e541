"""server/ranges.py: RFC 9110 Range, If-Range, If-None-Match and multipart/byteranges, as pure functions."""

from __future__ import annotations

import email.parser
import email.policy

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from server.ranges import (
    ByteRange,
    entity_tags,
    if_match,
    if_none_match,
    if_range,
    multipart_body,
    parse_range,
    select,
    unsatisfied_range,
)

SIZE = 1000
ETAG = '"0123456789abcdef0123456789abcdef"'


def ranges_of(value: str, size: int = SIZE, max_ranges: int = 16) -> tuple[str, tuple[tuple[int, int], ...]]:
    request = parse_range(value, size, max_ranges)
    return request.kind, tuple((r.start, r.end) for r in request.ranges)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ((0, 99),)),
        ("bytes=0-0", ((0, 0),)),
        ("bytes=990-", ((990, 999),)),
        ("bytes=990-5000", ((990, 999),)),  # last-pos past the end is clamped
        ("bytes=-10", ((990, 999),)),
        ("bytes=-5000", ((0, 999),)),  # suffix longer than the representation: all of it
        ("BYTES=0-1", ((0, 1),)),  # the unit is case-insensitive
        ("bytes=0-1, 5-6", ((0, 1), (5, 6))),
        ("bytes=5-6,0-1", ((0, 1), (5, 6))),  # sorted
        ("bytes=0-10,5-20", ((0, 20),)),  # overlapping: coalesced
        ("bytes=0-10,11-20", ((0, 20),)),  # adjacent: coalesced
        ("bytes=0-1,,5-6", ((0, 1), (5, 6))),  # empty list elements are ignored
        ("bytes=0-1,2000-3000", ((0, 1),)),  # unsatisfiable parts are dropped
        ("bytes=0-99999999999999999999999999", ((0, 999),)),  # huge numbers are clamped, not parsed
    ],
)
def test_satisfiable(header: str, expected: tuple) -> None:
    assert ranges_of(header) == ("satisfiable", expected)


@pytest.mark.parametrize(
    "header",
    [
        "items=0-1",  # unknown unit
        "bytes",
        "bytes=",
        "bytes=,",
        "bytes=abc",
        "bytes=5-2",  # inverted
        "bytes=0-1,5-2",  # one invalid spec spoils the header
        "bytes=-",
        "bytes=+1-2",
        "bytes=1 -2",
        "bytes=0x10-20",
        "bytes = 0-1",
        "bytes=1-2-3",
        "bytes=--1",
        "bytes=٣-٤",  # non-ASCII digits
    ],
)
def test_ignored(header: str) -> None:
    assert ranges_of(header)[0] == "ignore"


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0", "bytes=1000-1000,2000-"])
def test_unsatisfiable(header: str) -> None:
    assert ranges_of(header)[0] == "unsatisfiable"


def test_too_many_ranges() -> None:
    header = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(17))
    assert ranges_of(header, max_ranges=16)[0] == "too_many"
    assert ranges_of(header, max_ranges=17)[0] == "satisfiable"
    many = "bytes=" + ",".join("0-1" for _ in range(1000))
    assert ranges_of(many)[0] == "too_many"


def test_entity_tags() -> None:
    assert entity_tags('"a", W/"b" ,"c,d"') == [(False, '"a"'), (True, '"b"'), (False, '"c,d"')]
    assert entity_tags("abc") is None
    assert entity_tags('"a" "b"') is None
    assert entity_tags("") is None


def test_conditions_and_ranges_are_bounded() -> None:
    """An entity-tag list or a Range header far longer than any real one is not parsed element by element
    (an 8 MiB If-None-Match used to take 2 s of the event loop): it does not match, or is too many ranges."""
    many_tags = ", ".join(f'"{i:032x}"' for i in range(200)) + ", " + ETAG  # the right tag, 201st
    assert entity_tags(many_tags) is None
    assert not if_none_match(many_tags, ETAG) and not if_match(many_tags, ETAG)
    assert entity_tags('"' + "a" * 20_000 + '"') is None
    assert not if_none_match(" " * 20_000 + ETAG, ETAG)
    assert select("GET", SIZE, ETAG, if_none_match_header=many_tags).status == 200  # the whole answer, no 304
    assert select("GET", SIZE, ETAG, if_match_header=many_tags).status == 412
    padded = "bytes=0-1," + " ," * 20_000  # one range and 20,000 empty list elements
    assert ranges_of(padded)[0] == "too_many"
    assert ranges_of("bytes=0-1" + "," * 63)[0] == "satisfiable"  # up to 4 elements per allowed range (16)
    assert ranges_of("bytes=10-" + "9" * 20_000) == ("satisfiable", ((10, SIZE - 1),))  # clamped, not parsed
    assert ranges_of(" bytes=0-1 ,  2-3 ")[0] == "satisfiable"  # ordinary headers are untouched
    assert ranges_of("bytes=" + ",".join(f"{i * 10**18}-{i * 10**18 + 1}" for i in range(16)))[0] == "satisfiable"
    few = ", ".join(f'"{i:032x}"' for i in range(20)) + ", " + ETAG
    assert if_none_match(few, ETAG)


def test_conditions() -> None:
    assert if_none_match("*", ETAG)
    assert if_none_match(ETAG, ETAG)
    assert if_none_match(f'"x", W/{ETAG}', ETAG)  # weak comparison
    assert not if_none_match('"x"', ETAG)
    assert not if_none_match("garbage", ETAG)
    assert if_match(ETAG, ETAG) and if_match("*", ETAG)
    assert not if_match(f"W/{ETAG}", ETAG)  # strong comparison
    assert if_range(ETAG, ETAG)
    assert not if_range(f"W/{ETAG}", ETAG)  # a weak tag never matches
    assert not if_range('"other"', ETAG)
    assert not if_range("Wed, 21 Oct 2015 07:28:00 GMT", ETAG)  # dates are not supported: no match


def test_select_order() -> None:
    def sel(method: str = "GET", **headers: str):
        return select(method, SIZE, ETAG, max_ranges=4, **headers)

    assert sel().status == 200
    assert sel(range_header="bytes=0-9").ranges == (ByteRange(0, 9),)
    assert sel(range_header="bytes=0-9").status == 206
    assert sel("HEAD", range_header="bytes=0-9").status == 200  # Range is for GET only
    assert sel(range_header="bytes=0-9", if_range_header=ETAG).status == 206
    assert sel(range_header="bytes=0-9", if_range_header=f"W/{ETAG}").status == 200
    assert sel(range_header="bytes=0-9", if_range_header='"stale"').status == 200
    assert sel(range_header="bytes=0-9", if_none_match_header=ETAG).status == 304  # before Range
    assert sel("HEAD", if_none_match_header=ETAG).status == 304
    assert sel(if_match_header='"stale"').status == 412
    assert sel(range_header="bytes=5000-").status == 416
    too_many = sel(range_header="bytes=0-1,3-4,6-7,9-10,12-13")
    assert too_many.status == 416 and too_many.too_many
    assert sel(range_header="bytes=9-1").status == 200
    assert unsatisfied_range(SIZE) == "bytes */1000"


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert message.is_multipart()
    return [
        (part["Content-Type"], part["Content-Range"], part.get_payload(decode=True)) for part in message.iter_parts()
    ]


def render(ranges: tuple[ByteRange, ...], data: bytes) -> tuple[str, bytes, int]:
    plan = multipart_body(ranges, len(data), "application/octet-stream", "b0undary")
    body = b"".join(part.head + data[part.range.start : part.range.end + 1] for part in plan.parts) + plan.tail
    return plan.content_type, body, plan.content_length


def test_multipart_layout() -> None:
    data = bytes(range(256)) * 4
    content_type, body, length = render((ByteRange(0, 3), ByteRange(100, 109)), data)
    assert content_type == "multipart/byteranges; boundary=b0undary"
    assert len(body) == length
    assert body.startswith(b"--b0undary\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-3/1024")
    assert body.endswith(b"\r\n--b0undary--\r\n")
    parts = parse_multipart(content_type, body)
    assert parts == [
        ("application/octet-stream", "bytes 0-3/1024", data[0:4]),
        ("application/octet-stream", "bytes 100-109/1024", data[100:110]),
    ]


def test_multipart_rejects_bad_boundary() -> None:
    with pytest.raises(ValueError):
        multipart_body((ByteRange(0, 1),), 10, "application/octet-stream", "bad boundary\r\n")


spec = st.one_of(
    st.tuples(st.integers(0, 1500), st.integers(0, 1500)).map(lambda t: f"{min(t)}-{max(t)}"),
    st.integers(0, 1500).map(lambda a: f"{a}-"),
    st.integers(1, 1500).map(lambda n: f"-{n}"),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(spec, min_size=1, max_size=8), st.integers(1, 1200))
def test_coalesced_ranges_cover_exactly_the_requested_bytes(specs: list[str], size: int) -> None:
    request = parse_range("bytes=" + ",".join(specs), size, 16)
    wanted: set[int] = set()
    for item in specs:
        first, _, last = item.partition("-")
        if first == "":
            wanted.update(range(max(0, size - int(last)), size))
        elif int(first) < size:
            wanted.update(range(int(first), min(size - 1, int(last)) + 1 if last else size))
    if not wanted:
        assert request.kind == "unsatisfiable"
        return
    assert request.kind == "satisfiable"
    covered = [i for r in request.ranges for i in range(r.start, r.end + 1)]
    assert sorted(covered) == sorted(wanted) and len(covered) == len(wanted)  # no byte twice
    assert all(a.end + 1 < b.start for a, b in zip(request.ranges, request.ranges[1:], strict=False))


@st.composite
def disjoint_ranges(draw: st.DrawFn, size: int) -> tuple[list[tuple[int, int]], list[str]]:
    """Two to six ranges inside `size` (>= 3) bytes, in order, none touching the next, and a shuffled
    Range spec list that asks for exactly them: each written `a-b`, or (ending at the last byte) `a-`,
    `-n` or past the end, and some with a sub-range of themselves besides (which coalescing must absorb)."""
    pairs: list[tuple[int, int]] = []
    start = draw(st.integers(0, size - 3))  # room for a gap and a second range
    while True:
        end = draw(st.integers(start, size - 1 if pairs else size - 3))
        pairs.append((start, end))
        if end + 2 > size - 1 or (len(pairs) >= 2 and (len(pairs) == 6 or draw(st.booleans()))):
            break
        start = draw(st.integers(end + 2, size - 1))
    specs = []
    for start, end in pairs:
        if end == size - 1:
            past = end + draw(st.integers(1, 10**6))
            specs.append(draw(st.sampled_from([f"{start}-{end}", f"{start}-", f"-{size - start}", f"{start}-{past}"])))
        else:
            specs.append(f"{start}-{end}")
        if draw(st.booleans()):
            low, high = sorted(draw(st.tuples(st.integers(start, end), st.integers(start, end))))
            specs.append(f"{low}-{high}")
    return pairs, draw(st.permutations(specs))


def test_multipart_round_trip() -> None:
    """Several disjoint ranges of drawn data parse as exactly those ranges and render into a multipart
    body that parses back into exactly those bytes. The data is drawn first and the ranges inside it;
    `reached` counts the examples that got to the asserts (none did when the ranges were drawn apart
    from the data and an example without two parts returned early: over 400 bytes, ranges up to 1500
    mostly missed or swallowed it)."""
    reached = 0

    @settings(max_examples=50, deadline=None)
    @given(st.data(), st.binary(min_size=3, max_size=400))
    def check(draw: st.DataObject, data: bytes) -> None:
        nonlocal reached
        pairs, specs = draw.draw(disjoint_ranges(len(data)), label="ranges")
        assume(len(pairs) >= 2)  # by construction; a strategy change that breaks it fails the count below
        request = parse_range("bytes=" + ",".join(specs), len(data), 16)
        assert request.kind == "satisfiable"
        assert [(r.start, r.end) for r in request.ranges] == pairs
        content_type, body, length = render(request.ranges, data)
        assert len(body) == length
        parts = parse_multipart(content_type, body)
        assert [p[2] for p in parts] == [data[start : end + 1] for start, end in pairs]
        assert [p[1] for p in parts] == [r.content_range(len(data)) for r in request.ranges]
        reached += 1

    check()
    assert reached >= 25, f"only {reached} examples reached the asserts"
