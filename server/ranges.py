"""RFC 9110 byte ranges and validators, as pure functions (no I/O, no framework).

Decisions, documented in docs/server.md:

* A Range header whose unit is not `bytes`, or whose range set does not parse
  (garbage, an inverted `5-2`, signs, spaces inside numbers), is ignored: 200
  with the whole body (RFC 9110 14.2: a server MAY ignore Range).
* More than `max_ranges` range specs: 416 (15.5.17: excessive ranges may be rejected).
* Valid syntax but no range satisfiable (every first-pos >= length, or `-0`): 416
  with `Content-Range: bytes */length`.
* Overlapping or adjacent ranges are coalesced and sorted (14.2 allows it); one
  range left gives a single-part 206, several give `multipart/byteranges`.
* `If-Range` matches only a strong, identical entity tag; a weak tag or a date
  never matches, so the whole body is sent with 200.
* `If-None-Match` uses the weak comparison and answers 304 for GET and HEAD;
  `If-Match` uses the strong comparison and answers 412 when nothing matches.
* Range applies to GET only; HEAD answers as the 200 GET would.
* Bounded work: an entity-tag list longer than `MAX_CONDITION_CHARS` or with
  more than `MAX_ENTITY_TAGS` tags does not parse (If-None-Match: no 304;
  If-Match: 412; If-Range: the whole body), and a Range set of more than
  `ELEMENTS_PER_RANGE` list elements (empty ones included) per allowed range is
  too many ranges (416), counted before it is split. Every other step is linear
  (a long number is clamped, not converted). The server also bounds every
  request head (`max_header_bytes`), so no header is longer than that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A number with more digits than this is larger than any blob; it is clamped
# instead of being parsed (int() of a huge digit string costs time and can raise).
_MAX_DIGITS = 18
_HUGE = 1 << 62
_DIGITS = re.compile(r"[0-9]+")
_ENTITY_TAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
_UNIT = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
MAX_CONDITION_CHARS = 8192  # an If-None-Match / If-Match / If-Range value
MAX_ENTITY_TAGS = 64  # tags in one list
ELEMENTS_PER_RANGE = 4  # list elements of a Range set, empty ones included, per allowed range


@dataclass(frozen=True)
class ByteRange:
    """Bytes `start` to `end`, both inclusive, as in a Content-Range."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


@dataclass(frozen=True)
class RangeRequest:
    """A parsed Range header: `kind` is "ignore", "satisfiable", "unsatisfiable" or "too_many"."""

    kind: str
    ranges: tuple[ByteRange, ...] = ()


def _number(text: str) -> int | None:
    if not _DIGITS.fullmatch(text):
        return None
    return _HUGE if len(text) > _MAX_DIGITS else int(text)


def parse_range(value: str, size: int, max_ranges: int) -> RangeRequest:
    """Interpret a Range header value against a representation of `size` bytes."""
    unit, sep, range_set = value.strip().partition("=")
    if not sep or not _UNIT.fullmatch(unit) or unit.lower() != "bytes":
        return RangeRequest("ignore")
    if range_set.count(",") >= max_ranges * ELEMENTS_PER_RANGE:
        return RangeRequest("too_many")  # not split into a list of (up to thousands of) strings
    specs = [part.strip(" \t") for part in range_set.split(",")]
    specs = [spec for spec in specs if spec]  # RFC 9110 5.6.1.2: empty list elements are ignored
    if not specs:
        return RangeRequest("ignore")
    if len(specs) > max_ranges:
        return RangeRequest("too_many")
    resolved: list[ByteRange] = []
    for spec in specs:
        first_text, dash, last_text = spec.partition("-")
        if not dash:
            return RangeRequest("ignore")
        if first_text == "":  # suffix-range: the last N bytes
            suffix = _number(last_text)
            if suffix is None:
                return RangeRequest("ignore")
            if suffix > 0 and size > 0:
                resolved.append(ByteRange(max(0, size - suffix), size - 1))
            continue
        first = _number(first_text)
        last = _number(last_text) if last_text else None
        if first is None or (last_text and last is None):
            return RangeRequest("ignore")
        if last is not None and last < first:
            return RangeRequest("ignore")  # invalid int-range: the whole header is ignored
        if first < size:
            resolved.append(ByteRange(first, size - 1 if last is None else min(last, size - 1)))
    if not resolved:
        return RangeRequest("unsatisfiable")
    return RangeRequest("satisfiable", coalesce(resolved))


def coalesce(ranges: list[ByteRange]) -> tuple[ByteRange, ...]:
    """Sort and merge ranges that overlap or touch."""
    merged: list[ByteRange] = []
    for item in sorted(ranges, key=lambda r: (r.start, r.end)):
        if merged and item.start <= merged[-1].end + 1:
            last = merged[-1]
            merged[-1] = ByteRange(last.start, max(last.end, item.end))
        else:
            merged.append(item)
    return tuple(merged)


def entity_tags(value: str) -> list[tuple[bool, str]] | None:
    """`(weak, opaque-tag)` pairs of an entity-tag list, or None when it does not parse."""
    if len(value) > MAX_CONDITION_CHARS:
        return None
    tags: list[tuple[bool, str]] = []
    position = 0
    text = value.strip()
    while position < len(text):
        match = _ENTITY_TAG.match(text, position)
        if match is None or match.end() == position or len(tags) == MAX_ENTITY_TAGS:
            return None
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    return tags or None


def if_none_match(value: str, etag: str) -> bool:
    """True when the condition matches the current tag (weak comparison): answer 304."""
    if len(value) <= MAX_CONDITION_CHARS and value.strip() == "*":
        return True
    tags = entity_tags(value)
    return bool(tags) and any(tag == etag for _, tag in tags)


def if_match(value: str, etag: str) -> bool:
    """True when the condition holds (strong comparison)."""
    if len(value) <= MAX_CONDITION_CHARS and value.strip() == "*":
        return True
    tags = entity_tags(value)
    return bool(tags) and any(not weak and tag == etag for weak, tag in tags)


def if_range(value: str, etag: str) -> bool:
    """True when the Range may be honoured: only an identical strong tag matches."""
    tags = entity_tags(value)
    if tags is None or len(tags) != 1:
        return False  # an HTTP-date, a list or garbage: send the whole representation
    weak, tag = tags[0]
    return not weak and tag == etag


@dataclass(frozen=True)
class Selection:
    """What to answer: 200 (whole body), 206 (`ranges`), 304, 412 or 416 (`too_many` tells why)."""

    status: int
    ranges: tuple[ByteRange, ...] = ()
    too_many: bool = False


def select(
    method: str,
    size: int,
    etag: str,
    *,
    range_header: str | None = None,
    if_range_header: str | None = None,
    if_none_match_header: str | None = None,
    if_match_header: str | None = None,
    max_ranges: int = 16,
) -> Selection:
    """Evaluate the preconditions and Range of a GET or HEAD in RFC 9110 13.2.2 order."""
    if if_match_header is not None and not if_match(if_match_header, etag):
        return Selection(412)
    if if_none_match_header is not None and if_none_match(if_none_match_header, etag):
        return Selection(304)
    if method != "GET" or range_header is None:
        return Selection(200)
    if if_range_header is not None and not if_range(if_range_header, etag):
        return Selection(200)
    request = parse_range(range_header, size, max_ranges)
    if request.kind in ("unsatisfiable", "too_many"):
        return Selection(416, too_many=request.kind == "too_many")
    if request.kind == "ignore":
        return Selection(200)
    return Selection(206, request.ranges)


def unsatisfied_range(size: int) -> str:
    """The Content-Range of a 416."""
    return f"bytes */{size}"


@dataclass(frozen=True)
class MultipartPart:
    head: bytes
    range: ByteRange


@dataclass(frozen=True)
class MultipartBody:
    """The layout of a `multipart/byteranges` body: each part's head, then its bytes; then `tail`."""

    boundary: str
    parts: tuple[MultipartPart, ...]
    tail: bytes

    @property
    def content_type(self) -> str:
        return f"multipart/byteranges; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return sum(len(part.head) + part.range.length for part in self.parts) + len(self.tail)


def multipart_body(ranges: tuple[ByteRange, ...], size: int, content_type: str, boundary: str) -> MultipartBody:
    """RFC 9110 14.6: every part carries its Content-Type and Content-Range.

    The CRLF before each delimiter belongs to the delimiter (RFC 2046 5.1.1).
    """
    if not re.fullmatch(r"[0-9A-Za-z'()+_,./:=?-]{1,70}", boundary):
        raise ValueError("invalid multipart boundary")
    parts = []
    for number, item in enumerate(ranges):
        lead = b"" if number == 0 else b"\r\n"
        head = (
            f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {item.content_range(size)}\r\n\r\n"
        ).encode("ascii")
        parts.append(MultipartPart(lead + head, item))
    return MultipartBody(boundary, tuple(parts), f"\r\n--{boundary}--\r\n".encode("ascii"))
