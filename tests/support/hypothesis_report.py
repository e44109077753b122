"""A pytest plugin (named in tests/conftest.py): how many examples each Hypothesis test ran.

Why: `make test` must say how much fuzzing it really did, not what the settings allowed.
Hypothesis hands each test's run statistics to `hypothesis.statistics.collector` when the
run ends; this plugin listens there (inside Hypothesis' own pytest wrapper, whose listener
it still calls) and prints one line per test at the end of the session: the examples run
in each phase, how many were valid, and why generation stopped.

It must not: change what Hypothesis runs, drop Hypothesis' own statistics (the
`--hypothesis-show-statistics` report keeps working), or fail a test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import pytest
from hypothesis.statistics import collector
from hypothesis.utils.dynamicvariables import DynamicVariable

Listener = Callable[[Any], None]
# Declared DynamicVariable(None) by Hypothesis; it holds the listener of the running test.
LISTENER = cast(DynamicVariable[Listener | None], collector)


@dataclass(frozen=True, slots=True)
class Run:
    """One Hypothesis test's examples: per phase, counted by status."""

    nodeid: str
    phases: dict[str, Counter[str]]
    stopped_because: str

    @property
    def examples(self) -> int:
        return sum(sum(c.values()) for c in self.phases.values())

    @property
    def valid(self) -> int:
        return sum(c["valid"] for c in self.phases.values())

    def line(self) -> str:
        parts = ", ".join(f"{phase} {sum(c.values())}" for phase, c in self.phases.items())
        return (f"{self.examples:>6} examples ({self.valid} valid; {parts or 'none'}) "
                f"{self.nodeid} - stopped because {self.stopped_because}")


RUNS: list[Run] = []


def summarize(nodeid: str, stats: Mapping[str, Any]) -> Run:
    phases: dict[str, Counter[str]] = {}
    for phase in ("explicit", "reuse", "generate", "target", "shrink"):
        cases = (stats.get(f"{phase}-phase") or {}).get("test-cases") or []
        if cases:
            phases[phase] = Counter(str(case.get("status")) for case in cases)
    return Run(nodeid, phases, str(stats.get("stopped-because", "?")))


@pytest.hookimpl(wrapper=True, trylast=True)  # innermost: inside Hypothesis' own wrapper
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    outer = LISTENER.value

    def note(stats: Any) -> None:
        RUNS.append(summarize(item.nodeid, stats))
        if outer is not None:
            outer(stats)

    with LISTENER.with_value(note):
        return (yield)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RUNS:
        return
    terminalreporter.section("Hypothesis examples run")
    for run in RUNS:
        terminalreporter.write_line(run.line())
    terminalreporter.write_line(f"{sum(r.examples for r in RUNS)} examples in {len(RUNS)} "
                                "Hypothesis tests")
