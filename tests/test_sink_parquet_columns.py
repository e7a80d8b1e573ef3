"""The Parquet sink's staged path (``stage`` each page as it arrives, ``commit_staged`` a
group of batches, as ``into()`` drives it) writes what its plain path (``write`` of each
batch's records, ``commit``) does: the same schema, types, values, row order and row
groups, and the same failures, for random records. A guard for any change that makes
``stage`` do more than keep the records (staging them as columns, encoded, or in Arrow
already): its output must not differ.

Property tests (hypothesis): random batches of pages of random records (nested lists and
dicts, nulls, bools, ints big and small, floats with NaN and infinities, unicode and
timestamp-like strings, keys missing from some records, new keys in later batches, keys
in another order, and now and then values pyarrow does not take as JSON: datetimes,
bytes, Decimals, dates, msgspec Structs) go into two sinks, one each way, batch by batch,
and the two files are read back and compared.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from streampage.sinks import Parquet  # noqa: E402


class Thing(msgspec.Struct):
    a: int
    b: str = "x"


KEYS = ["a", "b", "c", "d", "é", "ts"]
STAMPS = ["2024-05-01T09:30:00Z", "2024-05-01T09:30:00+02:00", "2024-05-01", "09:30:00", ""]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-5, max_value=5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(STAMPS),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    ),
    max_leaves=6,
)
#: values pyarrow does not make JSON's columns of: the plain path sends them through
#: msgspec.to_builtins, and so must the staged one
odd_values = st.one_of(
    st.datetimes(timezones=st.just(dt.UTC)),
    st.binary(max_size=4),
    st.decimals(allow_nan=False, places=2, max_value=10**6, min_value=-(10**6)),
    st.dates(),
)


#: what each key mostly holds, so that most batches fit one schema and get written (a
#: value of another kind, now and then, makes a column wider, or the batch fail)
KINDS = {
    "a": st.one_of(st.integers(-5, 5), st.integers(-(2**63), 2**63 - 1)),
    "b": st.one_of(st.text(max_size=6), st.sampled_from(STAMPS)),
    "c": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
    "d": st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=3),
    "é": st.dictionaries(st.sampled_from(["x", "y"]), st.one_of(st.none(), st.booleans())),
    "ts": st.one_of(st.none(), st.sampled_from(STAMPS)),
}


@st.composite
def records(draw: st.DrawFn, odd: bool) -> Any:
    if odd and draw(st.integers(0, 30)) == 0:
        return Thing(draw(st.integers(-5, 5)))
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=5))
    record = {}
    for key in keys:
        pick = draw(st.integers(0, 19))
        if pick == 0:
            value = draw(st.one_of(json_values, odd_values) if odd else json_values)
        elif pick == 1:
            value = None
        else:
            value = draw(KINDS[key])
        record[key] = value
    return record


def pages(odd: bool) -> st.SearchStrategy[list[Any]]:
    # pages of the same keys in the same order, as decoded pages usually are, or of any
    return st.one_of(
        st.lists(records(odd), min_size=1, max_size=4),
        st.builds(
            lambda keys, rows: [{k: row.get(k) for k in keys} for row in rows] or [{}],
            st.lists(st.sampled_from(KEYS), unique=True, max_size=4),
            st.lists(records(odd=False), min_size=1, max_size=4),
        ),
    )


def runs(odd: bool) -> st.SearchStrategy[list[list[list[Any]]]]:
    """Commits, each of batches, each of pages."""
    return st.lists(
        st.lists(st.lists(pages(odd), min_size=1, max_size=3), min_size=1, max_size=2),
        min_size=1,
        max_size=4,
    )


async def ended(sink: Parquet, outcome: list[Any]) -> None:
    """Finish and close; a merge that fails (pyarrow cannot write a struct without fields,
    or cast a column to the type another batch gave it) is part of the outcome."""
    try:
        await sink.finish("run")
    except Exception as exc:
        outcome.append(f"{type(exc).__name__}: {exc}")
    finally:
        await sink.close()


def cp(n: int) -> bytes:
    return msgspec.json.encode({"n": n})


async def plain(path: Path, commits: list[list[list[Any]]], schema: Any) -> list[Any]:
    """The plain path: ``write`` each batch's records, ``commit``; the batch that fails."""
    sink = Parquet(path, schema=schema, row_group_rows=1)
    await sink.open("run")
    failed: list[Any] = [None]
    try:
        for i, batches in enumerate(commits):
            for j, batch in enumerate(batches):
                try:
                    await sink.write([r for page in batch for r in page])
                except Exception as exc:  # ValueError, or OverflowError for a big int
                    failed[:] = [i, j, type(exc).__name__]
                    return failed
            await sink.commit("run", cp(i))
        return failed
    finally:
        await ended(sink, failed)


async def staged(path: Path, commits: list[list[list[Any]]], schema: Any) -> list[Any]:
    """The staged path, as ``into()`` drives it: ``stage`` each page, ``commit_staged``."""
    sink = Parquet(path, schema=schema, row_group_rows=1)
    await sink.open("run")
    failed: list[Any] = [None]
    try:
        for i, batches in enumerate(commits):
            staged = [[sink.stage(page) for page in batch] for batch in batches]
            try:
                await sink.commit_staged("run", cp(i), staged)
            except Exception as exc:
                # the batch that failed: the ones before it in the call were staged
                failed[:] = [i, len(sink._pending), type(exc).__name__]
                return failed
        return failed
    finally:
        await ended(sink, failed)


def read(path: Path) -> Any:
    if not path.exists():
        return None
    with pq.ParquetFile(path) as f:
        meta = f.metadata
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        table = f.read()
    # repr: NaN equals NaN, -0.0 is not 0.0, 1 is not 1.0 nor True
    return table.schema, groups, repr(table.to_pylist())


def same_output(commits: list[list[list[Any]]], schema: Any = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "plain.parquet", Path(tmp) / "staged.parquet"
        failed_a = asyncio.run(plain(a, commits, schema))
        failed_b = asyncio.run(staged(b, commits, schema))
        assert failed_a == failed_b
        assert read(a) == read(b)


SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(runs(odd=False))
def test_json_records_staged_make_the_same_file(
    commits: list[list[list[Any]]],
) -> None:
    same_output(commits)


@SETTINGS
@given(runs(odd=True))
def test_records_of_other_types_make_the_same_file_or_the_same_failure(
    commits: list[list[list[Any]]],
) -> None:
    same_output(commits)


GIVEN = pa.schema(
    [("a", pa.int64()), ("b", pa.string()), ("c", pa.list_(pa.float64())), ("ts", pa.string())]
)


@SETTINGS
@given(runs(odd=True))
def test_with_a_given_schema_too(commits: list[list[list[Any]]]) -> None:
    same_output(commits, GIVEN)


def test_pages_that_lack_names_of_other_pages_of_their_batch() -> None:
    same_output([[[[{"a": 1, "b": "x"}], [{"a": 2}], [{"c": 2.5, "a": 3}]]]])
    same_output([[[[{"a": 1}], [{"b": "x", "a": 2}]], [[{"b": None}]]], [[[{"a": 4}]]]])
