"""Shared pieces of the Hypothesis fuzz tests: long strings that print short.

Why: the fuzz tests generate strings of hundreds of kilobytes (request bodies near a size
limit, prompts past the prompt limit). When such an example fails, Hypothesis prints it,
and a repr over 30,000 characters raises a HypothesisWarning, which `-W error` turns into
the test's error in place of the real assertion. `Long` is a plain `str` to every
consumer (JSON, the parsers, the webhook) whose repr only says what it holds.

It must not: change the value, only how it prints.
"""

from __future__ import annotations

from hypothesis import strategies as st


class Long(str):
    """A str whose repr is its length and first characters."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Long({str.__repr__(self[:16])} + ..., {len(self)} chars)"


def repeated(chars: st.SearchStrategy[str], sizes: st.SearchStrategy[int]
             ) -> st.SearchStrategy[Long]:
    """One generated character repeated a generated number of times."""
    return st.builds(lambda c, n: Long(c * n), chars, sizes)
