"""Builders of hand-made event sequences for the facts and KPI tests (no tests here)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from callkpi.events import CallEvent, Kind, make_event
from callkpi.store import Batch, open_store

SERVER = "pbx"


def epoch(text: str) -> float:
    """'2026-03-10T09:00:00+00:00' -> epoch seconds."""
    return dt.datetime.fromisoformat(text).timestamp()


class Calls:
    """Queue calls as Asterisk would log them (queue_log; hold from AMI; answers from AGI)."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    def ev(self, kind: str, ts: float, source: str = "queue_log", **data: Any) -> "Calls":
        self.events.append(make_event(server=SERVER, kind=kind, ts=ts, source=source, **data))
        return self

    def enter(self, call_id: str, queue: str, ts: float, number: str = "") -> "Calls":
        return self.ev(Kind.ENTER_QUEUE, ts, call_id=call_id, queue=queue, caller_number=number,
                       position=1)

    def answered(self, call_id: str, queue: str, agent: str, ts: float, wait: float,
                 talk: float, number: str = "", transfer: bool = False,
                 connect: bool = True) -> "Calls":
        self.enter(call_id, queue, ts, number)
        if connect:
            self.ev(Kind.CONNECT, ts + wait, call_id=call_id, queue=queue, agent=agent,
                    wait_s=wait, ring_s=1)
        end = Kind.TRANSFER if transfer else Kind.COMPLETE
        return self.ev(end, ts + wait + talk, call_id=call_id, queue=queue, agent=agent,
                       wait_s=wait, talk_s=talk, reason="blind" if transfer else "agent")

    def left(self, kind: str, call_id: str, queue: str, ts: float, wait: float,
             number: str = "") -> "Calls":
        self.enter(call_id, queue, ts, number)
        return self.ev(kind, ts + wait, call_id=call_id, queue=queue, wait_s=wait)

    def hold(self, call_id: str, ts: float, until: float | None = None) -> "Calls":
        self.ev(Kind.HOLD, ts, source="ami", call_id=call_id)
        if until is not None:
            self.ev(Kind.UNHOLD, until, source="ami", call_id=call_id)
        return self

    def pause(self, agent: str, ts: float, until: float | None, reason: str = "ACW",
              queue: str = "") -> "Calls":
        self.ev(Kind.PAUSE, ts, agent=agent, queue=queue, reason=reason, discr=reason)
        if until is not None:
            self.ev(Kind.UNPAUSE, until, agent=agent, queue=queue)
        return self

    def member(self, agent: str, queue: str, ts: float, until: float | None) -> "Calls":
        self.ev(Kind.MEMBER_ADD, ts, agent=agent, queue=queue)
        if until is not None:
            self.ev(Kind.MEMBER_REMOVE, until, agent=agent, queue=queue)
        return self

    def disposition(self, call_id: str, ts: float, code: str) -> "Calls":
        return self.ev(Kind.DISPOSITION, ts, call_id=call_id, value=code)

    def answer(self, call_id: str, ts: float, question: str, kind: str, value: str,
               status: str = "answered", **extra: str) -> "Calls":
        return self.ev(Kind.SURVEY_ANSWER, ts, source="agi", call_id=call_id, discr=question,
                       value=value, reason=status, extra={"question_kind": kind, **extra})

    def ivr(self, call_id: str, ts: float, outcome: str, queue: str = "") -> "Calls":
        return self.ev(Kind.IVR_EXIT, ts, call_id=call_id, value=outcome, queue=queue,
                       discr="main")

    async def store_in(self, store: Any) -> None:
        await store.write(Batch(events=self.events))
        self.events = []

    async def store_at(self, url: str) -> None:
        """Into the store at `url` (a CLI test's `--db`), opened for that alone."""
        async with await open_store(url) as store:
            await self.store_in(store)


async def calls_by_id(store: Any) -> dict[str, dict[str, Any]]:
    from callkpi.queries.facts import CALL_COLUMNS

    rows = await store.fetch_all(f"SELECT {', '.join(CALL_COLUMNS)} FROM queue_calls")
    return {f"{r[2]}@{r[3]}": dict(zip(CALL_COLUMNS, r)) for r in rows}
