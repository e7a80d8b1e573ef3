"""Review (review-sinks): the upsert key checks' fast path must judge every page as the
record-by-record loop did (e21da6b claims the same verdicts)."""

from __future__ import annotations

import decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from streampage.sinks import SQLite


@pytest.mark.parametrize(
    "page",
    [
        [{"id": decimal.Decimal("NaN")}],  # msgspec encodes it as the string "NaN"
        [{"id": decimal.Decimal("1")}, {"id": float("nan")}],
        [{"id": decimal.Decimal("1")}, {"id": decimal.Decimal("sNaN")}],
    ],
)
def test_int64_fast_path_accepts_what_the_loop_accepted(tmp_path: Path, page: list[Any]) -> None:
    """Before e21da6b, _within_int64 looked only at keys whose type is int: these pages were
    staged. The fast path's min()/max() compares Decimals, and a Decimal NaN compared by
    order raises decimal.InvalidOperation (an ArithmeticError, not the TypeError/ValueError
    the fast path catches), so stage() now fails with it."""
    sink = SQLite(tmp_path / "x.db", primary_key="id")
    assert sink.stage(page) == msgspec.json.Encoder().encode_lines(page)
