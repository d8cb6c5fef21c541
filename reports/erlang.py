"""Erlang C: how many agents a queue needs to answer a share of its calls within a target.

The M/M/N queue with infinite patience (Erlang's C formula), as every workforce tool uses it.
No well-kept Python library fits: the maintained ones bring an optimisation stack for
scheduling (pyworkforce: or-tools, pandas) or need a licence key; the formula is a few lines.
tests/test_erlang.py checks it against published tables.
"""

from __future__ import annotations

import math

MAX_AGENTS = 10_000  # a bound on the search; far beyond any queue callkpi reports on


def erlang_c(agents: int, traffic: float) -> float:
    """The probability that a call waits, with `agents` agents offered `traffic` Erlangs
    (1 when the agents cannot keep up). Erlang B by its stable recursion, then C from B."""
    if traffic <= 0:
        return 0.0
    if agents <= traffic:
        return 1.0
    blocking = 1.0
    for n in range(1, agents + 1):
        blocking = traffic * blocking / (n + traffic * blocking)
    return blocking / (1 - traffic / agents * (1 - blocking))


def service_level(agents: int, traffic: float, aht_s: float, target_s: float) -> float:
    """The share of calls answered within target_s."""
    if agents <= traffic:
        return 0.0
    return 1 - erlang_c(agents, traffic) * math.exp(-(agents - traffic) * target_s / aht_s)


def average_speed_of_answer(agents: int, traffic: float, aht_s: float) -> float:
    if agents <= traffic:
        return math.inf
    return erlang_c(agents, traffic) * aht_s / (agents - traffic)


def agents_needed(calls: float, aht_s: float, interval_s: float, target_s: float,
                  target_share: float) -> int:
    """The fewest agents that answer `target_share` (0..1) of `calls` offered over
    `interval_s` within `target_s`, each call taking `aht_s` of an agent's time."""
    if calls <= 0 or aht_s <= 0 or interval_s <= 0:
        return 0
    traffic = calls * aht_s / interval_s
    agents = math.floor(traffic) + 1
    while service_level(agents, traffic, aht_s, target_s) < target_share:
        agents += 1
        if agents > MAX_AGENTS:
            raise ValueError(f"more than {MAX_AGENTS} agents for {traffic:.1f} Erlangs")
    return agents
