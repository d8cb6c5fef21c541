"""Refreshes of the facts at once (two readers of one store object, or a report and the
e-mail job in two processes) leave the facts a refresh alone would have built."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from callkpi.config import KpiConfig
from callkpi.events import Kind
from callkpi.store import Store, open_store
from reports import facts
from reports.facts import refresh_facts
from test_facts_helpers import Calls, epoch

pytestmark = pytest.mark.backends("sqlite", "postgresql")

T = epoch("2026-03-10T09:00:00+00:00")
FACTS = {
    "queue_calls": "SELECT call_id, queue, outcome, agent, unsettled FROM queue_calls",
    "agent_sessions": "SELECT agent, queue, start_ts, end_ts FROM agent_sessions",
    "agent_pauses": "SELECT agent, reason, start_ts, end_ts FROM agent_pauses",
}


async def derived(store: Store) -> dict[str, list[tuple]]:
    return {table: sorted(await store.fetch_all(sql), key=repr) for table, sql in FACTS.items()}


@pytest.mark.parametrize("same_store", [True, False], ids=["one-store", "two-stores"])
async def test_a_refresh_overtaken_by_another_leaves_what_one_refresh_builds(
        store_url, monkeypatch, same_store):
    """Refresh A reads the events up to a call at +500 s (re-deriving from +300 s) and is
    held before it writes; meanwhile the agent's logout at +200 s (logged late) is stored
    and refresh B, which sees both, writes first. A's facts, derived without the logout,
    must not land on B's: the agent would stay logged in for ever (staffed time up to the
    end of the data)."""
    store = await open_store(store_url)
    other = store if same_store else await open_store(store_url)
    kpi = KpiConfig()
    c = Calls().member("A", "q", T - 1000, None)
    c.answered("c0", "q", "A", T, wait=5, talk=30)
    c.answered("c1", "q", "A", T + 300, wait=5, talk=30)  # unsettled: A re-derives from it
    await c.store_in(store)
    await refresh_facts(store, kpi)
    await Calls().answered("c2", "q", "A", T + 500, wait=5, talk=30).store_in(store)

    deriving, go_on = asyncio.Event(), asyncio.Event()
    link_answers = facts._link_answers

    async def held(*args: Any) -> list[tuple]:
        if not deriving.is_set():  # refresh A only
            deriving.set()
            await go_on.wait()
        return await link_answers(*args)

    monkeypatch.setattr(facts, "_link_answers", held)
    refresh_a = asyncio.ensure_future(refresh_facts(store, kpi))
    await deriving.wait()
    await Calls().ev(Kind.MEMBER_REMOVE, T + 200, agent="A", queue="q").store_in(other)
    await refresh_facts(other, kpi)  # B
    go_on.set()
    assert (await refresh_a).since is None  # A wrote nothing, and found B's facts current
    await refresh_facts(store, kpi)  # the next refresh, as any later report's

    after_race = await derived(store)
    await refresh_facts(store, kpi, rebuild=True)
    assert after_race == await derived(store)
    assert after_race["agent_sessions"] == [("A", "q", T - 1000, T + 200)]
    if other is not store:
        await other.close()
    await store.close()
