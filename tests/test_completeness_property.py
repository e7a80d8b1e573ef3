"""Random server contracts: a run delivers every record exactly once, or fails loudly.

The server paginates by a random Contract (frameworks.py): page numbers, offsets, a list
body with Link headers, next URLs or cursors; the size of the data shown nowhere, in the
body, in X-Total-Count or as a page count; a size cap or none; past the data an empty page,
404 or the last page again; and maybe it ignores the page parameter altogether. The client
runs pages=auto, or the paginator that fits the style (naming the total or not).

Property: the run ends, and either it delivered every record exactly once, or it raised a
streampage.StreamPageError. It never ends normally with a record missing or duplicated.

One exception, where no client can know: a response that shows no size of the data, from a
server that cannot be told apart from a smaller data set (page 2 the same as page 1 under a
guessed paginator, which is how a one-page data set also looks; or an offset API whose first
page is short because it caps the size). There the run may end with records missing, but
then it must not claim the run verified, and it still never delivers a record twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from frameworks import ENDS, STYLES, TOTALS, Contract, ContractAPI, record_ids
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import streampage
from streampage import Cursor, Header, LinkHeader, NextURL, Offset, PageNumber

#: Upper bound for one run: a run that never ends is a failure, not a stuck suite.
WITHIN = 5.0


@dataclass(frozen=True)
class Case:
    """A server contract and how the client is set up against it."""

    contract: Contract
    paginator: str  # "auto" or "explicit" (the paginator that fits the style)
    ask: int  # the page size the client asks for (explicit page/offset; auto: in the URL)
    size_in_url: bool  # auto: the URL already carries the page size
    name_total: bool  # explicit: the paginator is told where the total is

    @property
    def asked(self) -> int:
        """The page size the first request asks for."""
        c = self.contract
        if self.paginator == "auto":
            return self.ask if self.size_in_url else c.per_page
        return self.ask if c.style in ("page", "offset") else c.per_page

    @property
    def served(self) -> int:
        """The page size the server serves."""
        cap = self.contract.cap
        return self.asked if cap is None else min(self.asked, cap)

    @property
    def knowable(self) -> bool:
        """Can a client tell, from what the server shows, that records are missing?"""
        c = self.contract
        if c.total != "none":
            return True
        guessed = self.paginator == "auto"
        if guessed and c.ignores_page and c.style in ("page", "offset"):
            return c.records <= self.served  # page 1 again looks like a one-page data set
        if c.style == "offset" and guessed:
            return False  # an offset body without a total is no sign of pagination
        # an offset API's short first page looks like the last, also when it is a size cap
        return not (c.style == "offset" and c.cap is not None and self.asked > c.cap)

    def url(self, base: str) -> str:
        if self.paginator == "auto" and self.size_in_url:
            name = "limit" if self.contract.style == "offset" else "per_page"
            return f"{base}?{name}={self.ask}"
        return base

    def pages(self) -> Any:
        """The paginator: None (auto), or the one that fits the style."""
        c = self.contract
        if self.paginator == "auto":
            return None
        total: dict[str, Any] = {}
        if self.name_total and c.total == "body":
            total = {"total_items": "total"}
        elif self.name_total and c.total == "header":
            total = {"total_items": Header("X-Total-Count")}
        if c.style == "page":
            if self.name_total and c.total == "pages":
                total = {"total_pages": "total_pages"}
            return PageNumber(size=self.ask, **total)
        if c.style == "offset":
            return Offset(limit=self.ask, **total)
        if c.style == "link":
            return LinkHeader()
        if c.style == "next-url":
            return NextURL()
        return Cursor()


@st.composite
def cases(draw: st.DrawFn) -> Case:
    style = draw(st.sampled_from(STYLES))
    paged = style in ("page", "offset", "link")
    contract = Contract(
        style=style,
        records=draw(st.integers(min_value=0, max_value=60)),
        per_page=draw(st.integers(min_value=1, max_value=8)),
        total=draw(st.sampled_from([t for t in TOTALS if not (style == "link" and t == "body")])),
        cap=draw(st.none() | st.integers(min_value=1, max_value=10)) if paged else None,
        end=draw(st.sampled_from(ENDS)) if paged else "empty",
        ignores_page=draw(st.booleans()),
    )
    return Case(
        contract=contract,
        paginator=draw(st.sampled_from(["auto", "explicit"])),
        ask=draw(st.integers(min_value=1, max_value=12)),
        size_in_url=draw(st.booleans()),
        name_total=draw(st.booleans()),
    )


@dataclass
class Outcome:
    ids: list[int]
    error: streampage.StreamPageError | None
    status: str | None


async def run_case(case: Case) -> Outcome:
    api = ContractAPI(case.contract)
    await api.start()
    ids: list[int] = []
    error: streampage.StreamPageError | None = None
    # a run delivering far more pages than the server has is running away: stop it early
    runaway = 4 * (case.contract.records + 10)
    s = streampage.stream(case.url(api.url), pages=case.pages(), concurrency=4)
    try:
        async with asyncio.timeout(WITHIN), s:
            pages = 0
            async for page in s:
                ids.extend(record_ids(page.data))
                pages += 1
                assert pages <= runaway, f"{pages} pages from a server with {api.records} records"
    except streampage.StreamPageError as exc:
        error = exc
    except TimeoutError:
        raise AssertionError(f"the run did not end within {WITHIN} s") from None
    finally:
        await api.stop()
    completeness = getattr(s, "completeness", None)
    return Outcome(ids, error, getattr(completeness, "status", None))


PROPERTY = settings(
    max_examples=100,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY
@given(case=cases())
def test_a_run_delivers_every_record_exactly_once_or_fails(case: Case) -> None:
    outcome = asyncio.run(run_case(case))
    # `pytest --hypothesis-show-statistics` shows how the runs ended
    event(f"{case.paginator}: {type(outcome.error).__name__ if outcome.error else 'ended'}")

    if outcome.error is not None:
        return  # failing loudly is always allowed
    twice = sorted(i for i, n in Counter(outcome.ids).items() if n > 1)
    assert twice == [], f"ended normally with records delivered twice: {twice[:20]}"
    expected = list(range(1, case.contract.records + 1))
    missing = sorted(set(expected) - set(outcome.ids))
    if case.knowable:
        assert missing == [], f"ended normally without {len(missing)} records: {missing[:20]}"
    elif missing:
        assert outcome.status != "verified", "records are missing, yet the run says verified"
