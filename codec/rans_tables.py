"""An entropy model's CDF tables as plain JSON, for the browser's rANS decoder (static/decoder/rans.js).

The browser cannot run the entropy models that derive these tables (CompressAI's `update()` from the
learned densities), and their float arithmetic would have to match bit for bit anyway. The quantized
tables are what the coder actually reads, so they are shipped as data: the rows cut to their own
lengths (the padding is never read), with each row's length and offset. They belong to the weights
and will be served beside them, under the model id.
"""

from __future__ import annotations

from typing import TypedDict

from codec import rans

# CompressAI's coder works at 16-bit probability precision (`precision` in rans_interface.cpp).
PRECISION = 16


class RansTablesJson(TypedDict):
    """The three table arguments of `RansDecoder.decode_with_indexes`, and their precision."""

    precision: int
    cdfs: list[list[int]]
    lengths: list[int]
    offsets: list[int]


def tables_json(table: rans.CdfTables | rans.HasCdfTable) -> RansTablesJson:
    """A CDF table (or an entropy model's) as a JSON-serialisable dict (`json.dumps` it as it is)."""
    table = rans.as_tables(table)
    return {
        "precision": PRECISION,
        "cdfs": [list(row) for row in table.cdfs],
        "lengths": list(table.lengths),
        "offsets": list(table.offsets),
    }
