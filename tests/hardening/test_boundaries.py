"""Every number a client sends at its boundary values, against the shared real server (issue 18, defect
8): the largest integer SQLite stores (2**63 - 1), one past it, 20-digit numbers, negatives, 0. Each
answers its exact status, never a 5xx, and the server logs no traceback."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import RunningServer

from .answers import error_code

SQLITE_MAX = 2**63 - 1
HUGE = [str(SQLITE_MAX), str(SQLITE_MAX + 1), str(-SQLITE_MAX - 1), str(-SQLITE_MAX - 2), "9" * 20, "1" + "0" * 19,
        "-" + "9" * 20, "9" * 40]  # fmt: skip
NOT_INTEGERS = ["1e3", "0x10", "1.5", "", "٣"]  # "1.0" is 1 to pydantic: an integral float is accepted

# (parameter, value, status, code); `{layers}` is the stored image's layer count
CASES = [
    *[("layers", value, 422, "layers_out_of_range") for value in ("0", "-1", "7", *HUGE)],
    ("layers", "1", 200, None),
    ("layers", "6", 200, None),
    ("layers", "1.0", 200, None),
    *[("layers", value, 422, "validation_error") for value in NOT_INTEGERS],
    *[("limit", value, 422, "validation_error") for value in ("0", "-1", "501", *HUGE, *NOT_INTEGERS)],
    ("limit", "1", 200, None),
    ("limit", "500", 200, None),
    *[("cursor", value, 200, None) for value in ("0", "1", str(SQLITE_MAX), "0" * 20)],
    *[("cursor", value, 422, "invalid_cursor") for value in (str(SQLITE_MAX + 1), "9" * 20, "1" + "0" * 19)],
    *[("cursor", value, 422, "invalid_cursor") for value in ("-1", str(-SQLITE_MAX - 1), "1e3", "٣", "")],
    ("cursor", "9" * 21, 422, "validation_error"),  # longer than any cursor (max_length 20)
    *[
        (("region", region, 400, "bad_region") if len(region) <= 64 else ("region", region, 422, "validation_error"))
        for value in HUGE
        for region in (f"{value},0,8,8", f"0,0,{value},{value}")
    ],  # more than 64 characters: 422
    ("region", "-1,0,8,8", 400, "bad_region"),
    ("region", "9999999,9999999,9999999,9999999", 422, "region_out_of_bounds"),
    ("region", "0,0,0,0", 422, "region_out_of_bounds"),
    ("region", "0,0,48,40", 200, None),
    ("region", "47,39,1,1", 200, None),
    ("region", "48,0,1,1", 422, "region_out_of_bounds"),
]


@pytest.fixture(scope="module")
def log_start(server: RunningServer) -> int:
    return len(server.log())


@pytest.mark.parametrize(("parameter", "value", "status", "code"), CASES)
def test_query_numbers_at_their_boundaries(
    client: httpx.Client, uploaded: dict, log_start: int, parameter: str, value: str, status: int, code: str | None
) -> None:
    assert uploaded["layers"][-1]["index"] == 6 and (uploaded["width"], uploaded["height"]) == (48, 40)
    path = "/images" if parameter in ("limit", "cursor") else uploaded["urls"]["image"]
    response = client.get(path, params={parameter: value})
    assert response.status_code == status, (parameter, value, response.status_code, response.text)
    if code is not None:
        assert error_code(response) == code


def test_no_traceback_after_the_boundaries(client: httpx.Client, server: RunningServer, log_start: int) -> None:
    """Runs after the table (same module, declared later): the shared server logged no traceback meanwhile."""
    assert client.get("/health").status_code == 200
    assert "Traceback" not in server.log()[log_start:]
