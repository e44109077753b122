"""The example counts `make test` prints are the examples Hypothesis really ran.

Why: the summary (tests/support/hypothesis_report.py) is the evidence of how much fuzzing
a run did; a count taken from the settings, or one that misses rejected examples, would
overstate it.
"""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.support.hypothesis_report import LISTENER, Run, summarize


def test_the_counts_are_the_examples_run_with_rejected_ones_apart() -> None:
    calls: list[int] = []
    seen: list[Run] = []

    @settings(max_examples=40, database=None, deadline=None)
    @given(st.integers())
    def inner(x: int) -> None:
        calls.append(x)
        assume(x % 3 == 0)

    with LISTENER.with_value(lambda stats: seen.append(summarize("inner", stats))):
        inner()
    assert len(seen) == 1
    run = seen[0]
    assert run.valid == 40  # what max_examples asks for: valid examples
    assert run.examples == len(calls)  # every call counted, the rejected ones too
    assert run.examples > run.valid, run.line()
    assert "max_examples=40" in run.line()


def test_a_search_space_smaller_than_max_examples_reports_what_ran() -> None:
    calls: list[bool] = []
    seen: list[Run] = []

    @settings(max_examples=500, database=None, deadline=None)
    @given(st.booleans())
    def inner(flag: bool) -> None:
        calls.append(flag)

    with LISTENER.with_value(lambda stats: seen.append(summarize("inner", stats))):
        inner()
    assert seen[0].examples == len(calls) == 2, seen[0].line()
