"""Erlang C against published figures: the worked example of the Erlang C literature (100
calls in 30 minutes, AHT 180 s, 20 s target: 10 Erlangs), as tabulated by the R package
ErlangC and Call Centre Helper's calculator, and the textbook C(3, 2) = 4/9."""

from __future__ import annotations

import pytest

from reports.erlang import (
    agents_needed,
    average_speed_of_answer,
    erlang_c,
    service_level,
)

# agents -> (probability of waiting, service level within 20 s, ASA s) at 10 Erlangs
PUBLISHED = {11: (0.6821, 0.3896, 122.78), 12: (0.4494, 0.6402, 40.44),
             13: (0.2853, 0.7956, 17.12), 14: (0.1741, 0.8884, 7.836),
             15: (0.1020, 0.9415, 3.674)}


@pytest.mark.parametrize("agents", sorted(PUBLISHED))
def test_the_published_table(agents):
    wait, sl, asa = PUBLISHED[agents]
    assert erlang_c(agents, 10.0) == pytest.approx(wait, abs=5e-5)
    assert service_level(agents, 10.0, 180, 20) == pytest.approx(sl, abs=5e-5)
    assert average_speed_of_answer(agents, 10.0, 180) == pytest.approx(asa, rel=1e-3)


def test_textbook_values():
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9)
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: the utilisation


def test_agents_needed_for_a_target():
    assert agents_needed(100, 180, 1800, 20, 0.80) == 14  # 13 give 79.6 %
    assert agents_needed(100, 180, 1800, 20, 0.79) == 13
    assert agents_needed(100, 180, 1800, 20, 0.30) == 11  # never fewer than the traffic + 1


def test_no_calls_need_no_agent_and_overload_needs_more_than_the_traffic():
    assert agents_needed(0, 180, 3600, 20, 0.8) == 0
    assert erlang_c(10, 10.0) == 1.0 and service_level(10, 10.0, 180, 20) == 0.0
    assert agents_needed(1000, 300, 3600, 20, 0.8) > 1000 * 300 / 3600
