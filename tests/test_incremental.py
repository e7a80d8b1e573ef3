"""Incremental runs (into(incremental=Incremental(field, param))): only what changed since
the last run, against a real aiohttp.web API whose records change between runs.

The API holds records ``{"id", "updated_at", "name"}``, sorted by (updated_at, id) and
paged ``?page=N&per_page=3``; with ``updated_since`` it answers the records whose
``updated_at`` is at least that value (inclusive, as such APIs usually are), or, as a server
that ignores the parameter, every record. It keeps the query of every request, so that a
test asserts what was sent and what came back. The sinks are real files and databases
(JSON Lines, SQLite): both append, so a record written twice is there twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from conftest import HANG, Flaky
from conftest import cli_fetch as fetch

import streampage
from streampage import Incremental, PageNumber
from streampage._checkpoint import Checkpoint
from streampage._incremental import BOUNDARY
from streampage.sinks import JSONLines, SQLite

PER_PAGE = 3
FIELD, PARAM = "updated_at", "updated_since"


def at(second: int) -> str:
    """An ISO 8601 timestamp, one format and one zone: they sort as the times they name."""
    return f"2024-05-01T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"


class ChangingAPI:
    """Records that change between runs; ``/items?page=N&per_page=3[&updated_since=T]``."""

    def __init__(self, count: int = 20, honours: bool = True) -> None:
        self.honours = honours
        self.records: dict[int, dict[str, Any]] = {}
        for i in range(1, count + 1):
            self.put(i, at(min(i, count - 2)))  # the last three share the highest value
        #: the query of every request, in arrival order
        self.queries: list[dict[str, str]] = []
        #: the ids of the records each answer held
        self.answered: list[int] = []
        #: page numbers whose answer waits for the event
        self.gates: dict[int, asyncio.Event] = {}
        self.url = ""

    def put(self, i: int, updated_at: Any, **fields: Any) -> None:
        self.records[i] = {"id": i, FIELD: updated_at, "name": f"item-{i}", **fields}

    def touch(self, *ids: int, second: int) -> None:
        for i in ids:
            self.put(i, at(second), name=f"item-{i}-changed-at-{second}")

    def sent(self, name: str = PARAM) -> list[str | None]:
        return [query.get(name) for query in self.queries]

    async def handle(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.queries.append(query)
        page, size = int(query.get("page", "1")), int(query.get("per_page", str(PER_PAGE)))
        gate = self.gates.get(page)
        if gate is not None:
            await gate.wait()
        since = query.get(PARAM)
        # sorted by the field (a record without it last), as incremental APIs answer
        rows = sorted(self.records.values(), key=lambda r: (str(r.get(FIELD, "~")), r["id"]))
        if since is not None and self.honours:
            rows = [r for r in rows if str(r.get(FIELD)) >= since]
        rows = rows[(page - 1) * size : page * size]
        self.answered += [r["id"] for r in rows]
        return web.json_response({"data": rows, "page": page})


@contextlib.asynccontextmanager
async def serving(api: ChangingAPI) -> AsyncIterator[ChangingAPI]:
    app = web.Application()
    app.router.add_get("/items", api.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api.url = f"http://127.0.0.1:{runner.addresses[0][1]}/items"
    try:
        yield api
    finally:
        for gate in api.gates.values():
            gate.set()
        await runner.cleanup()


@pytest.fixture
async def api() -> AsyncIterator[ChangingAPI]:
    async with serving(ChangingAPI()) as served:
        yield served


def records(api: ChangingAPI, **options: Any) -> streampage.Records:
    pages = PageNumber(size=PER_PAGE, size_param="per_page")
    return streampage.stream(api.url, pages=pages, **options).records("data")


def sink_of(kind: str, folder: Path) -> Any:
    return JSONLines(folder / "orders.jsonl") if kind == "jsonl" else SQLite(folder / "o.db")


def written(kind: str, folder: Path) -> list[dict[str, Any]]:
    """Every record the sink holds, in the order written."""
    if kind == "jsonl":
        lines = (folder / "orders.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]
    with contextlib.closing(sqlite3.connect(folder / "o.db")) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT data FROM items ORDER BY rowid")]


def versions(rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(id, updated_at) of every record held, sorted: a version twice is there twice."""
    return sorted((r["id"], r[FIELD]) for r in rows)


def stored(kind: str, folder: Path) -> dict[str, Any]:
    """The checkpoint document the sink holds."""
    if kind == "jsonl":
        journal = folder / ".orders.jsonl.streampage" / "journal"
        entries = [json.loads(line) for line in journal.read_bytes().splitlines()]
        return [e for e in entries if "checkpoint" in e][-1]["checkpoint"]  # type: ignore[no-any-return]
    with contextlib.closing(sqlite3.connect(folder / "o.db")) as db:
        (text,) = db.execute("SELECT checkpoint FROM streampage_checkpoints").fetchone()
    return json.loads(text)  # type: ignore[no-any-return]


INCREMENTAL = Incremental(FIELD, PARAM)


# ---------------------------------------------------------------------- passes


@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
async def test_the_next_run_fetches_only_what_changed(
    api: ChangingAPI, tmp_path: Path, kind: str
) -> None:
    first = await records(api).into(sink_of(kind, tmp_path), batch=4, incremental=INCREMENTAL)

    assert api.sent() and set(api.sent()) == {None}  # the first run fetches everything
    assert versions(written(kind, tmp_path)) == [(i, api.records[i][FIELD]) for i in range(1, 21)]
    assert (first.incremental_since, first.incremental_high) == (None, at(18))
    assert first.records == 20 and first.incremental_skipped == 0

    # between the runs: two records change, one is added; 18, 19 and 20 (at the highest
    # value, at(18)) do not
    api.touch(3, 7, second=30)
    api.put(21, at(31))
    api.queries.clear()
    api.answered.clear()

    second = await records(api).into(sink_of(kind, tmp_path), batch=4, incremental=INCREMENTAL)

    assert set(api.sent()) == {at(18)}  # the highest value committed, sent with every request
    assert sorted(api.answered) == [3, 7, 18, 19, 20, 21]  # the server's inclusive answer
    # the unchanged records at the boundary are left out: not one of them is written twice,
    # though the sink appends; the changed ones are there in both versions
    assert second.records == 3 and second.incremental_skipped == 3
    assert (second.incremental_since, second.incremental_high) == (at(18), at(31))
    expected = [(i, at(min(i, 18))) for i in range(1, 21)] + [(3, at(30)), (7, at(30))]
    assert versions(written(kind, tmp_path)) == sorted([*expected, (21, at(31))])
    assert written(kind, tmp_path)[20:] == [api.records[3], api.records[7], api.records[21]]
    state = stored(kind, tmp_path)["incremental"]
    assert (state["since"], state["high"], state["passes"]) == (at(18), at(31), 1)

    # nothing changes: the third run sends at(31), and writes nothing (21 is unchanged)
    api.queries.clear()
    third = await records(api).into(sink_of(kind, tmp_path), batch=4, incremental=INCREMENTAL)
    assert set(api.sent()) == {at(31)}
    assert third.records == 0 and third.incremental_skipped == 1
    assert len(written(kind, tmp_path)) == 23


async def test_a_boundary_record_that_changed_without_a_new_value_is_written_again(
    api: ChangingAPI, tmp_path: Path
) -> None:
    await records(api).into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)
    api.put(19, at(18), name="renamed, same updated_at")  # the server did not bump it

    stats = await records(api).into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)

    assert stats.records == 1 and stats.incremental_skipped == 2  # 18 and 20: unchanged
    rows = written("jsonl", tmp_path)
    assert rows[-1] == api.records[19]
    assert [r["id"] for r in rows].count(19) == 2 and len(rows) == 21


async def test_many_small_batches_grouped_in_commits_keep_the_highest_value(
    api: ChangingAPI, tmp_path: Path
) -> None:
    # batch=1 at concurrency 8: pages arrive out of order and batches commit in groups;
    # the value kept is the highest over all of them, whichever committed last
    for i in range(21, 80):
        api.put(i, at(100 - i))  # new records with values in no order of their ids
    stats = await records(api, concurrency=8).into(
        sink_of("sqlite", tmp_path), batch=1, incremental=INCREMENTAL
    )
    values = [r[FIELD] for r in written("sqlite", tmp_path)]
    assert stats.incremental_high == max(values) == at(79)
    assert stored("sqlite", tmp_path)["incremental"]["high"] == at(79)
    assert stats.committed_pages == -(-79 // PER_PAGE)


async def test_a_replace_starts_over_from_the_start_value(api: ChangingAPI, tmp_path: Path) -> None:
    await records(api).into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)
    api.touch(5, second=40)
    api.queries.clear()

    from_start = Incremental(FIELD, PARAM, start=at(10))
    stats = await records(api).into(
        sink_of("jsonl", tmp_path), incremental=from_start, mode="replace"
    )

    assert set(api.sent()) == {at(10)}  # start, not the stored high value
    assert versions(written("jsonl", tmp_path)) == sorted(
        [(i, at(min(i, 18))) for i in range(10, 21)] + [(5, at(40))]
    )
    assert (stats.incremental_since, stats.incremental_high) == (at(10), at(40))


async def test_numbers_compare_as_numbers_and_no_parameter_filters_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # an id as the field: 9 < 10 as numbers, not as text; the API takes no parameter for it
    async with serving(ChangingAPI(count=9)) as api:
        by_id = Incremental("id")
        await records(api).into(sink_of("jsonl", tmp_path), incremental=by_id)
        for i in range(10, 13):
            api.put(i, at(50))
        api.queries.clear()
        with caplog.at_level(logging.INFO, logger="streampage"):
            stats = await records(api).into(sink_of("jsonl", tmp_path), incremental=by_id)

    assert set(api.sent()) == {None}  # nothing sent: every page fetched, filtered here
    assert {"1", "2", "3", "4"} <= {q["page"] for q in api.queries}  # 12 records, 3 a page
    assert stats.incremental_client_side and stats.incremental_since == 9
    assert stats.records == 3 and stats.incremental_skipped == 9  # 1-8 older, 9 unchanged
    assert sorted(r["id"] for r in written("jsonl", tmp_path)) == list(range(1, 13))
    said = [r for r in caplog.records if getattr(r, "streampage_decision", False)]
    assert len(said) == 1 and "every page is fetched" in said[0].getMessage()
    assert "--since-param" in said[0].getMessage()


async def test_a_server_that_ignores_the_parameter_is_filtered_here_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(ChangingAPI(honours=False)) as api:
        await records(api).into(sink_of("sqlite", tmp_path), incremental=INCREMENTAL)
        api.touch(2, second=60)
        api.answered.clear()
        api.queries.clear()
        with caplog.at_level(logging.WARNING, logger="streampage"):
            stats = await records(api).into(sink_of("sqlite", tmp_path), incremental=INCREMENTAL)

    assert set(api.sent()) == {at(18)}  # sent, and ignored: every record came back
    assert len(api.answered) == 20
    assert stats.records == 1 and stats.incremental_skipped == 19
    assert stats.incremental_client_side
    warned = [r.getMessage() for r in caplog.records if "ignores the parameter" in r.getMessage()]
    assert len(warned) == 1 and repr(PARAM) in warned[0]
    rows = written("sqlite", tmp_path)
    assert len(rows) == 21 and rows[-1] == api.records[2]


async def test_more_records_at_the_boundary_than_kept_are_said_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(ChangingAPI(count=0)) as api:
        for i in range(1, BOUNDARY + 6):
            api.put(i, at(5))  # every record at one value: more than the digests kept
        big = PageNumber(size=500, size_param="per_page")
        run = streampage.stream(api.url, pages=big).records("data")
        await run.into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)
        assert stored("jsonl", tmp_path)["incremental"]["boundary_over"] is True
        with caplog.at_level(logging.WARNING, logger="streampage"):
            run = streampage.stream(api.url, pages=big).records("data")
            stats = await run.into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)

    assert stats.incremental_skipped == BOUNDARY  # those it kept digests of
    assert stats.incremental_unchecked == stats.records == 5  # the others: written again
    assert any("written again" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------- a pass cut short


async def test_a_pass_cut_short_resumes_with_the_same_since_value(
    api: ChangingAPI, tmp_path: Path
) -> None:
    await records(api).into(sink_of("sqlite", tmp_path), incremental=INCREMENTAL)
    api.touch(*range(1, 13), second=70)  # 12 changed records, on 5 pages with 18-20
    api.queries.clear()

    with pytest.raises(streampage.SinkError, match="No space left"):
        await records(api, concurrency=1).into(
            Flaky(sink_of("sqlite", tmp_path), fail_at=3), batch=PER_PAGE, incremental=INCREMENTAL
        )
    assert set(api.sent()) == {at(18)}
    state = stored("sqlite", tmp_path)
    assert not state.get("finished")
    assert state["incremental"]["since"] == at(18)
    assert state["incremental"]["high"] == at(70)  # the committed records' highest, already
    cut = len(written("sqlite", tmp_path))
    api.queries.clear()

    resumed = await records(api).into(sink_of("sqlite", tmp_path), incremental=INCREMENTAL)

    # the same pass: the same value sent again (its page numbers name the same pages), and
    # the committed pages (1 and 2 in the first commit, 3 in the second) are not fetched
    assert set(api.sent()) == {at(18)}
    assert {"1", "2", "3"}.isdisjoint(q.get("page") for q in api.queries)
    assert resumed.resumed_pages == 3 and resumed.incremental_since == at(18)
    assert len(written("sqlite", tmp_path)) == cut + resumed.records
    expected = [(i, at(min(i, 18))) for i in range(1, 21)] + [(i, at(70)) for i in range(1, 13)]
    assert versions(written("sqlite", tmp_path)) == sorted(expected)

    # the next pass goes on from the highest value of the one that was cut short
    api.touch(4, second=80)
    api.queries.clear()
    later = await records(api).into(sink_of("sqlite", tmp_path), incremental=INCREMENTAL)
    assert set(api.sent()) == {at(70)}
    assert later.records == 1
    assert versions(written("sqlite", tmp_path)) == sorted([*expected, (4, at(80))])


JOB = """
import sys
import streampage
from streampage import Incremental, PageNumber
from streampage.sinks import SQLite


class Saying:
    def __init__(self, sink):
        self.sink = sink

    def __repr__(self):
        return repr(self.sink)

    async def open(self, name):
        return await self.sink.open(name)

    async def write(self, records):
        await self.sink.write(records)

    async def commit(self, name, checkpoint):
        await self.sink.commit(name, checkpoint)
        print("commit", flush=True)

    async def close(self):
        await self.sink.close()


async def job(url, db):
    pages = PageNumber(size=3, size_param="per_page")
    stats = await streampage.stream(url, pages=pages, concurrency=1).records("data").into(
        Saying(SQLite(db)), batch=3, incremental=Incremental("updated_at", "updated_since")
    )
    print("done", stats.records, flush=True)


streampage.run(job(sys.argv[1], sys.argv[2]))
"""


async def test_a_pass_killed_by_sigkill_and_resumed_then_a_later_pass_every_record_once(
    api: ChangingAPI, tmp_path: Path
) -> None:
    if sys.platform == "win32":
        pytest.skip("SIGKILL is POSIX")
    script = tmp_path / "job.py"
    script.write_text(JOB)

    async def run(wait_for: int | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            api.url,
            str(tmp_path / "o.db"),
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        if wait_for is None:
            out, _ = await asyncio.wait_for(proc.communicate(), HANG)
            assert proc.returncode == 0
            return out.decode().splitlines()[-1]  # after a line a commit
        for _ in range(wait_for):
            line = await asyncio.wait_for(proc.stdout.readline(), HANG)
            assert line == b"commit\n"
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), HANG) == -signal.SIGKILL
        return ""

    await run()
    api.touch(*range(1, 13), second=70)
    api.queries.clear()
    # page 1 of this pass holds 18-20, unchanged: pages 1 and 2 commit together, then 3;
    # page 4 waits, and the job is killed there
    gate = api.gates[4] = asyncio.Event()
    await run(wait_for=2)
    gate.set()
    del api.gates[4]
    assert stored("sqlite", tmp_path)["incremental"]["since"] == at(18)
    api.queries.clear()

    assert (await run()).startswith("done")
    assert set(api.sent()) == {at(18)}  # the pass killed goes on with its own value
    assert {"1", "2", "3"}.isdisjoint(q.get("page") for q in api.queries)
    expected = [(i, at(min(i, 18))) for i in range(1, 21)] + [(i, at(70)) for i in range(1, 13)]
    assert versions(written("sqlite", tmp_path)) == sorted(expected)

    api.touch(20, second=90)
    api.queries.clear()
    assert (await run()).split() == ["done", "1"]
    assert set(api.sent()) == {at(70)}
    assert versions(written("sqlite", tmp_path)) == sorted([*expected, (20, at(90))])


# ---------------------------------------------------------------------- errors


async def test_a_record_without_the_field_is_an_error_naming_page_and_keys(
    api: ChangingAPI, tmp_path: Path
) -> None:
    api.records[8] = {"id": 8, "name": "secret-name-8"}  # no updated_at: last, on page 7
    with pytest.raises(streampage.DecodeError) as caught:
        await records(api, concurrency=1).into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)
    message = str(caught.value)
    assert caught.value.page == 7 and "page 7 (" in message
    assert "'updated_at'" in message and "is missing" in message and "id, name" in message
    assert "secret-name-8" not in message  # keys, never values
    assert "Nothing of page 7 is written" in message

    api.records[8] = {"id": 8, FIELD: None, "name": "x"}
    (tmp_path / "x").mkdir()
    with pytest.raises(streampage.DecodeError, match="is null"):
        await records(api, concurrency=1).into(
            sink_of("jsonl", tmp_path / "x"), incremental=INCREMENTAL
        )


async def test_a_wrong_field_name_and_a_value_of_another_kind(
    api: ChangingAPI, tmp_path: Path
) -> None:
    with pytest.raises(streampage.ConfigurationError, match="'updatedAt' of a record is missing"):
        await records(api).into(sink_of("jsonl", tmp_path), incremental=Incremental("updatedAt"))

    with pytest.raises(streampage.ConfigurationError, match="give start a value of the field"):
        await records(api).into(
            sink_of("jsonl", tmp_path), incremental=Incremental("id", None, "7")
        )

    await records(api).into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)
    api.put(21, 3_000_000_000)  # a number, where the stored values are strings
    with pytest.raises(streampage.DecodeError, match=r"holds numbers, where .* are strings"):
        await records(api).into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)


async def test_a_resume_with_another_field_or_none_is_refused(
    api: ChangingAPI, tmp_path: Path
) -> None:
    out = sink_of("jsonl", tmp_path)
    await records(api).into(out, incremental=INCREMENTAL)
    before = written("jsonl", tmp_path)

    with pytest.raises(streampage.ConfigurationError) as caught:
        await records(api).into(sink_of("jsonl", tmp_path), incremental=Incremental("id"))
    assert "incremental field was 'updated_at', now 'id'" in str(caught.value)

    with pytest.raises(streampage.ConfigurationError, match="of incremental runs on"):
        await records(api).into(sink_of("jsonl", tmp_path), mode="resume")

    with pytest.raises(streampage.ConfigurationError, match="pass mode='resume'"):
        await records(api).into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL, mode="new")
    assert written("jsonl", tmp_path) == before  # untouched


async def test_an_incremental_run_on_a_checkpoint_that_was_not_is_refused(
    api: ChangingAPI, tmp_path: Path
) -> None:
    await records(api).into(sink_of("sqlite", tmp_path))
    with pytest.raises(streampage.ConfigurationError, match="not incremental"):
        await records(api).into(sink_of("sqlite", tmp_path), incremental=INCREMENTAL)


async def test_a_pass_cut_short_resumed_with_another_parameter_is_refused(
    api: ChangingAPI, tmp_path: Path
) -> None:
    await records(api).into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)
    api.touch(*range(1, 10), second=70)
    with pytest.raises(streampage.SinkError):
        await records(api, concurrency=1).into(
            Flaky(sink_of("jsonl", tmp_path), fail_at=2), batch=PER_PAGE, incremental=INCREMENTAL
        )
    with pytest.raises(streampage.ConfigurationError, match="cut short") as caught:
        await records(api).into(sink_of("jsonl", tmp_path), incremental=Incremental(FIELD))
    assert "--since-param updated_since" in str(caught.value)


async def test_the_parameter_given_twice_is_refused(api: ChangingAPI, tmp_path: Path) -> None:
    with pytest.raises(streampage.ConfigurationError, match="give it one way"):
        await records(api, params={PARAM: "x"}).into(
            sink_of("jsonl", tmp_path), incremental=INCREMENTAL
        )
    assert api.queries == []  # refused before any request


async def test_a_source_that_sets_the_parameter_itself_is_refused(
    api: ChangingAPI, tmp_path: Path
) -> None:
    """Sources are read lazily, so this is found when its walk begins, not up front: its
    value would otherwise replace the pass's own, silently."""
    pages = PageNumber(size=PER_PAGE, size_param="per_page")
    sources = [api.url, streampage.Source(api.url, params={PARAM: "2020-01-01"}, key="b")]
    with pytest.raises(streampage.ConfigurationError, match=f"Leave '{PARAM}' out") as caught:
        await (
            streampage.stream(sources, pages=pages)
            .records("data")
            .into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)
        )
    assert "2020-01-01" not in str(caught.value)  # the error names the parameter, not a value
    assert all(query.get(PARAM) != "2020-01-01" for query in api.queries)


def test_incremental_arguments_are_checked() -> None:
    with pytest.raises(streampage.ConfigurationError, match="must name a field"):
        Incremental("")
    with pytest.raises(streampage.ConfigurationError, match="must name a query parameter"):
        Incremental("a", param="")
    with pytest.raises(streampage.ConfigurationError, match="a string or a number"):
        Incremental("a", start=True)


def test_the_incremental_state_is_part_of_the_checkpoint_document() -> None:
    checkpoint = Checkpoint(fingerprint={"url": "u"})
    assert b"incremental" not in checkpoint.to_json()  # left out when there is none
    again = Checkpoint.from_json(checkpoint.to_json())
    assert again.incremental is None
    from streampage._checkpoint import IncrementalState

    checkpoint.incremental = IncrementalState("n", "p", since=3, high=7.5, boundary=["ab"])
    again = Checkpoint.from_json(checkpoint.to_json())
    assert again.incremental == checkpoint.incremental
    assert isinstance(again.incremental.since, int)  # a number stays the number it was


# ---------------------------------------------------------------------- the command line


async def test_the_command_line_goes_on_from_its_checkpoint_and_says_so(
    api: ChangingAPI, tmp_path: Path
) -> None:
    out = f"sqlite:///{tmp_path / 'o.db'}"
    args = [api.url, "--incremental", FIELD, "--since-param", PARAM, "-o", out]
    args += ["--pages", "page", "--size", "3", "--records", "data", "--stats-json", "-"]

    first = await fetch(*args)
    assert first.code == 0, first
    assert "every record (no earlier updated_at to fetch from)" in first.err

    api.touch(6, second=99)
    api.queries.clear()
    second = await fetch(*args)  # the same command: no --resume

    assert second.code == 0, second
    assert set(api.sent()) == {at(18)}
    doc = json.loads(second.out)
    assert doc["records"] == 1
    assert doc["incremental"] == {
        "field": FIELD,
        "param": PARAM,
        "since": at(18),
        "high": at(99),
        "skipped": 3,
        "client_side": False,
        "unchecked": 0,
    }
    assert f"updated_at from '{at(18)}' (sent as {PARAM}); 3 records left out" in second.err
    assert versions(written("sqlite", tmp_path)) == sorted(
        [(i, at(min(i, 18))) for i in range(1, 21)] + [(6, at(99))]
    )

    replaced = await fetch(*args, "--replace")
    assert replaced.code == 0, replaced
    assert len(written("sqlite", tmp_path)) == 20


async def test_the_command_line_without_a_since_parameter_says_it_filters_here(
    api: ChangingAPI, tmp_path: Path
) -> None:
    out = str(tmp_path / "orders.jsonl")
    args = [api.url, "--incremental", FIELD, "-o", out, "--pages", "page", "--size", "3"]
    assert (await fetch(*args)).code == 0
    second = await fetch(*args)
    assert second.code == 0, second
    assert "(--since-param): every page is fetched" in second.err  # the decision, said
    assert "filtered here (no --since-param: every page fetched)" in second.err
    assert "param=" not in second.err


async def test_the_command_line_speaks_options_in_its_incremental_errors(
    api: ChangingAPI, tmp_path: Path
) -> None:
    out = str(tmp_path / "orders.jsonl")
    base = [api.url, "-o", out, "--pages", "page", "--size", "3"]
    assert (await fetch(*base, "--incremental", FIELD, "--since-param", PARAM)).code == 0

    plain = await fetch(*base, "--resume")
    assert plain.code == 2, plain
    assert f"--incremental {FIELD} --since-param {PARAM}" in plain.err
    assert "Incremental(" not in plain.err and "mode=" not in plain.err

    wrong = await fetch(*base, "--incremental", "updatedAt", "--replace")
    assert wrong.code == 2, wrong
    assert "Name the field that says when a record changed with --incremental" in wrong.err

    alone = await fetch(*base, "--since-param", PARAM)
    assert alone.code == 2 and "--since-param applies to --incremental" in alone.err
    stdout = await fetch(api.url, "--incremental", FIELD)
    assert stdout.code == 2 and "--incremental needs an output target" in stdout.err


def test_incremental_options_round_trip_through_the_plan(tmp_path: Path) -> None:
    from streampage.cli._parser import build_parser
    from streampage.cli._plan import as_options, make_plan

    out = str(tmp_path / "o.jsonl")
    for incremental in (Incremental("meta.updated_at", "since"), Incremental("id")):
        said = as_options(incremental).split()
        args = build_parser().parse_args(["fetch", "https://h/x", "-o", out, *said])
        assert make_plan(args, print).incremental == incremental


def test_primary_key_goes_to_a_database_target_that_takes_it(tmp_path: Path) -> None:
    from streampage.cli import UsageError
    from streampage.cli._parser import build_parser
    from streampage.cli._plan import make_plan

    def plan(*args: str) -> Any:
        parsed = build_parser().parse_args(["fetch", "https://h/x", *args])
        return make_plan(parsed, print)

    with pytest.raises(UsageError, match="--primary-key applies to sqlite"):
        plan("-o", str(tmp_path / "o.jsonl"), "--primary-key", "id")
    db = f"sqlite:///{tmp_path / 'o.db'}"
    assert plan("-o", db, "--primary-key", "id").target.sink.primary_key == "id"
    dsn = "postgresql://u@127.0.0.1:1/db"
    assert plan("-o", dsn, "--primary-key", "id").target.sink.primary_key == "id"
    assert isinstance(plan("-o", db).target.sink, SQLite)


# ---------------------------------------------------------------------- a second reading's


async def test_a_pass_cut_short_by_max_pages_goes_on_at_the_next_run(
    api: ChangingAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Newest first would leave the rest below the highest value: the pass is not over.
    api.records = {i: {**r, FIELD: at(100 - i)} for i, r in api.records.items()}
    first = await records(api, max_pages=2).into(
        sink_of("sqlite", tmp_path), batch=4, incremental=INCREMENTAL
    )
    assert first.records == 6
    assert stored("sqlite", tmp_path).get("finished", False) is False
    assert "this pass is not over" in caplog.text
    api.queries.clear()
    second = await records(api).into(sink_of("sqlite", tmp_path), incremental=INCREMENTAL)
    assert set(api.sent()) == {None}  # the same pass: from the same (no) value
    assert second.records == 14
    assert sorted(r["id"] for r in written("sqlite", tmp_path)) == list(range(1, 21))
    assert stored("sqlite", tmp_path)["finished"] is True


class Stamped(msgspec.Struct):
    id: int
    updated_at: datetime.datetime


class Page(msgspec.Struct):
    data: list[Stamped]


async def test_decoded_datetimes_compare_as_times_not_as_their_shortest_text(
    tmp_path: Path,
) -> None:
    # msgspec writes 09:30:00Z but 09:30:00.500000Z, and the first sorts after the second
    api = ChangingAPI(count=0)
    api.put(1, "2024-05-01T09:30:00Z")
    api.put(2, "2024-05-01T09:30:00.500000Z")
    async with serving(api):

        def job() -> streampage.Records:
            pages = PageNumber(size=PER_PAGE, size_param="per_page")
            return streampage.stream(api.url, pages=pages, decode=Page).records("data")

        first = await job().into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)
        assert first.incremental_high == "2024-05-01T09:30:00.500000Z"
        api.put(3, "2024-05-01T09:30:00.700000Z")
        second = await job().into(sink_of("jsonl", tmp_path), incremental=INCREMENTAL)
        assert second.records == 1  # record 3, and no other again
        assert sorted(r["id"] for r in written("jsonl", tmp_path)) == [1, 2, 3]
