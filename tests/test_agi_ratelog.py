"""Rate-limited log lines: the first of a kind, then one a minute saying how many were left out."""

from __future__ import annotations

import logging

from agi_plugin.ratelog import MAX_KEYS, RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeats_are_counted_not_written(caplog):
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("t"), every_s=60, clock=clock)
    for n in range(1000):
        limited.log(logging.WARNING, "probe", "%s: dropped", f"peer{n}")
    limited.log(logging.WARNING, "other", "something else")
    assert [r.getMessage() for r in caplog.records] == ["peer0: dropped", "something else"]
    clock.now += 61
    limited.log(logging.WARNING, "probe", "%s: dropped", "peer1000")
    assert caplog.records[-1].getMessage() == \
        "peer1000: dropped (999 more like this in the last 60 s)"
    limited.log(logging.WARNING, "probe", "%s: dropped", "peer1001")
    limited.flush()
    assert caplog.records[-1].getMessage() == "1 more 'probe' lines were left out"
    assert len(caplog.records) == 4


def test_the_kinds_remembered_are_bounded():
    limited = RateLimitedLog(logging.getLogger("t"), clock=Clock())
    for n in range(MAX_KEYS * 3):
        limited.log(logging.INFO, f"k{n}", "x")
    assert len(limited._seen) == MAX_KEYS
