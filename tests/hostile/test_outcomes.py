"""The catalogue's own bookkeeping: each way a case can end is counted in its class, and the summary line shows the
silent wrong results apart from crashes and hangs."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from . import catalogue


@pytest.fixture
def fresh(monkeypatch):
    """The catalogue's counters, emptied for this test and restored after it (the session's stay as they were)."""
    monkeypatch.setattr(catalogue, "OUTCOMES", Counter())
    monkeypatch.setattr(catalogue, "PROBLEMS", [])
    monkeypatch.setattr(catalogue, "FUZZ", Counter())
    return catalogue


def _outcome(fn) -> str:
    with pytest.raises(pytest.fail.Exception) as failed:
        fn()
    return str(failed.value)


def _must_be_two(result) -> None:
    assert result == 2, f"got {result}"


def test_each_ending_is_counted_in_its_class(fresh):
    fresh.refused("refused", lambda: int("x"), r"invalid literal")
    fresh.handled("handled", lambda: 2, lambda r: r == 2 or pytest.fail())
    wrong = _outcome(lambda: fresh.handled("wrong", lambda: 1, lambda r: r == 2 or pytest.fail("got 1")))
    asserted = _outcome(lambda: fresh.handled("asserted", lambda: 1, _must_be_two))
    accepted = _outcome(lambda: fresh.refused("accepted", lambda: "#-1-1-1", r"colour"))
    crash = _outcome(lambda: fresh.refused("crash", lambda: [][1], r"index"))
    hang = _outcome(lambda: fresh.handled("hang", lambda: time.sleep(5), limit_s=0.05))
    assert "silent wrong result: wrong result: got 1" in wrong and "silent wrong result" in asserted
    assert "silent wrong result: accepted instead of refused" in accepted
    assert "crash: undocumented builtins.IndexError" in crash and "hang: still running" in hang
    counts = fresh.OUTCOMES
    assert (counts["tried"], counts["refused"], counts["handled"]) == (7, 1, 1)
    assert (counts["crash"], counts["hang"], counts[fresh.SILENT_WRONG]) == (1, 1, 3)
    line = fresh.summary_lines()[0]
    assert line == ("hostile inputs: 7 tried, 1 refused with a clear error, 1 handled correctly, 1 crashes, 1 hangs, "
                    "silent wrong results: 3")
