"""Per-call facts: one row per queue call (table `queue_calls`), the agents' sessions and
pauses, and survey answers linked to the call they rate, derived from the events table.

Built incrementally. `facts_state` keeps the last events.id derived; a refresh re-derives
everything from a time `w0` early enough that every fact the new events can change is
rebuilt: the earliest new event, the entry of any call still unsettled (not ended, or its
after-call work still open) or ended shortly before the new events, and of any call the new
events name (a late AMI hold or a late queue_log line). Calls that entered before `w0` are
final and kept; sessions and pauses still open at `w0` resume from their stored start;
events before `w0` are not read again.

Events are read in time order; the events of one instant (queue_log stamps whole seconds) are
taken in an order of their own, never in the order they were stored, so the order of the
lines inside a second and of the files ingested changes nothing (docs/kpis.md, rule 4).

docs/kpis.md defines what each column means; this module computes exactly that.
"""

from __future__ import annotations

import bisect
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from callkpi.config import KpiConfig
from callkpi.events import Kind, base_discr, occurrence
from callkpi.queries import facts as q
from callkpi.queries.facts import BUCKET_S
from callkpi.store import Store, Transaction


# caller numbers per statement when updating their calls' gaps
GAP_CHUNK = 500

# A wrap-up pause counts as a call's ACW when it starts this close to the call's end.
ACW_PAUSE_WINDOW_S = 10.0

# ABANDONs in the last second of queue-call activity before a QUEUESTART this close after it
# were written by a graceful shutdown hanging the waiting callers up (recorded on Asterisk 22:
# 2 s for `core restart now`, 5 s for `core stop now` and a start); an AMI `shutdown` event
# says so with certainty, whatever the delay.
SHUTDOWN_GAP_S = 60.0

# queue_log stamps whole seconds, AMI fractions: an AMI member state up to this long after a
# member's logged change may have been raised before it, so it does not overrule it.
STATE_LAG_S = 1.0

# Bump when a rule of this module changes: stored facts are then derived again.
FACTS_VERSION = 2

CALL_KINDS = (
    Kind.ENTER_QUEUE, Kind.CONNECT, Kind.COMPLETE, Kind.TRANSFER, Kind.ABANDON,
    Kind.EXIT_TIMEOUT, Kind.EXIT_KEY, Kind.EXIT_EMPTY, Kind.WITHDRAW,
    Kind.HOLD, Kind.UNHOLD, Kind.DISPOSITION,
)
PAUSE_STARTS = (Kind.PAUSE, Kind.PAUSE_ALL)
PAUSE_ENDS = (Kind.UNPAUSE, Kind.UNPAUSE_ALL)
SESSION_STARTS = (Kind.MEMBER_ADD, Kind.AGENT_LOGIN)
SESSION_ENDS = (Kind.MEMBER_REMOVE, Kind.AGENT_LOGOFF)
AGENT_KINDS = (*PAUSE_STARTS, *PAUSE_ENDS, *SESSION_STARTS, *SESSION_ENDS, Kind.MEMBER_STATE)
RESTART_KINDS = (Kind.QUEUE_START, Kind.SHUTDOWN)
FACT_KINDS = (*CALL_KINDS, *AGENT_KINDS, *RESTART_KINDS, Kind.SURVEY_ANSWER, Kind.INFO)
IVR_APPEND = "IVRAPPEND"  # QueueMetrics' INFO|IVRAPPEND|<key>|<menu>
# events that show a member is in a queue (for persistent members restored by a restart)
MEMBER_EVIDENCE = (*PAUSE_STARTS, *PAUSE_ENDS, Kind.MEMBER_STATE, Kind.CONNECT)

AUTO_UNPAUSE = "Auto-Unpause"  # app_queue.c, log_unpause_on_reason_change

# queue-leaving events and the outcome each gives the queue call
EXIT_OUTCOMES = {
    Kind.ABANDON: "abandoned",
    Kind.EXIT_TIMEOUT: "timeout",
    Kind.EXIT_KEY: "exit_key",
    Kind.EXIT_EMPTY: "exit_empty",
    Kind.WITHDRAW: "withdrawn",
}
CALL_ENDS = (Kind.COMPLETE, Kind.TRANSFER, *EXIT_OUTCOMES)

# The order of a queue call's events inside one instant: it enters, is connected, is held,
# ends, then gets its disposition. A restart comes first: Asterisk takes over a second to
# boot, so what is stamped with the QUEUESTART's second happened after it.
CALL_PHASE = {Kind.QUEUE_START: 0, Kind.SHUTDOWN: 0, Kind.ENTER_QUEUE: 1, Kind.CONNECT: 2,
              Kind.HOLD: 3, Kind.UNHOLD: 3, **{k: 4 for k in CALL_ENDS},
              Kind.DISPOSITION: 5, Kind.SURVEY_ANSWER: 6, Kind.INFO: 6}

Event = q.FactEvent  # an event as the facts read it (FACT_COLUMNS, in that order)


@dataclass
class QueueCall:
    id: int
    server: str
    call_id: str
    queue: str
    entered_ts: float
    caller_number: str
    outcome: str = "open"
    ended_ts: float | None = None
    wait_s: float | None = None
    connect_ts: float | None = None
    agent: str = ""
    bridged_s: float | None = None
    transferred: bool = False
    disposition: str = ""
    holds: list[tuple[str, float]] = field(default_factory=list)
    hold_s: float | None = None
    acw_s: float | None = None
    unsettled: bool = True
    ended_by_restart: bool = False
    fcr_contact: bool = True

    @property
    def talk_s(self) -> float | None:
        if self.bridged_s is None:
            return None
        return max(0.0, self.bridged_s - (self.hold_s or 0.0))

    def row(self) -> tuple:
        return (
            self.id, self.server, self.call_id, self.queue, self.entered_ts,
            int(self.entered_ts), self.ended_ts, self.outcome, self.wait_s, self.connect_ts,
            self.agent, self.bridged_s, self.talk_s, self.hold_s, self.acw_s,
            self.caller_number, self.disposition, int(self.transferred), None, None,
            int(self.unsettled), int(self.entered_ts) // BUCKET_S, int(self.ended_by_restart),
            int(self.fcr_contact), None,
        )


@dataclass
class IvrPath:
    """A call's QueueMetrics-style IVR choices (INFO|IVRAPPEND|<key>|<menu> lines)."""

    id: int
    server: str
    call_id: str
    first_ts: float
    steps: list[tuple[float, str, str]] = field(default_factory=list)  # (ts, menu, key)

    def row(self, queue_call: "QueueCall | None") -> tuple:
        steps = sorted(self.steps)
        ts = steps[-1][0]
        path = " > ".join(f"{menu}:{key}" for _t, menu, key in steps)
        # a call that reached no queue left the IVR: served there or hung up, which these
        # lines cannot tell apart
        outcome, queue = ("to-queue", queue_call.queue) if queue_call else ("left", "")
        return (self.id, self.server, self.call_id, self.first_ts, ts, int(ts), path,
                steps[-1][1], outcome, queue)


@dataclass
class Interval:
    """An agent session or pause: open while end is None. A pause that a restart cut and
    that Asterisk restored goes on in `continued` (after-call work runs through it)."""

    server: str
    agent: str
    label: str  # the queue of a session, the reason of a pause
    start: float
    end: float | None = None
    continued: "Interval | None" = None


@dataclass
class FactsResult:
    events: int  # events read
    calls: int  # queue calls (re)derived
    since: float | None  # w0, None when nothing was new


@dataclass
class _Restart:
    """Per server: what the facts need to know about Asterisk going down."""

    last_seen: float | None = None  # the server's last event: Asterisk was up then
    up_at: float | None = None  # its last QUEUESTART
    shutdown_at: float | None = None  # an AMI Shutdown since the last event
    end_second: int | None = None  # the last second with a queue call event ...
    abandoned: list[QueueCall] = field(default_factory=list)  # ... and its ABANDONs
    # sessions / pauses a restart ended without persistent_members: (what, agent, queue)
    suspended: dict[tuple[str, str, str], Interval] = field(default_factory=dict)


class Deriver:
    """One pass over events in time order, from w0 on."""

    def __init__(self, kpi: KpiConfig, aliases: dict[tuple[str, str], str] | None = None,
                 names: dict[str, str] | None = None) -> None:
        self.kpi = kpi
        self.wrapup_reasons = set(kpi.wrapup_reasons)
        self.no_number = {n.lower() for n in kpi.no_number}
        self.aliases = aliases or {}  # (server, interface) -> member name, learned from AMI
        self.names = names or {}  # interface -> member name, from the config
        self.calls: list[QueueCall] = []
        self.by_call_id: dict[tuple[str, str], list[QueueCall]] = {}  # (server, call_id)
        self.open_calls: dict[tuple[str, str, str], list[QueueCall]] = {}  # + queue
        self.sessions: list[Interval] = []
        self.open_sessions: dict[tuple[str, str, str], Interval] = {}
        self.pauses: list[Interval] = []
        self.open_pause: dict[tuple[str, str], Interval] = {}
        self.connects: dict[tuple[str, str], list[float]] = {}
        self.changed: dict[tuple[str, ...], float] = {}  # a member's last logged change
        self.answers: list[tuple] = []  # survey-answer event rows, linked after the pass
        self.ivr: dict[tuple[str, str], IvrPath] = {}
        self.restarts: dict[str, _Restart] = {}
        self.events = 0

    # ---------------------------------------------------------------- one instant
    def feed_instant(self, events: Sequence[Event]) -> None:
        """All the events stamped with one time: in an order of their own (module doc)."""
        self.events += len(events)
        calls: list[Event] = []
        members: list[Event] = []
        for ev in events:
            (members if ev[3] in AGENT_KINDS else calls).append(ev)
        calls.sort(key=_call_order)
        for ev in calls:
            self._call_event(ev)
        if members:
            self._member_events(members)
        for ev in events:
            self._seen(ev[1], ev[3], ev[6])

    def _seen(self, server: str, kind: str, ts: float) -> None:
        restart = self.restarts.setdefault(server, _Restart())
        restart.last_seen = ts if restart.last_seen is None else max(restart.last_seen, ts)

    def _name(self, server: str, agent: str) -> str:
        """The member name of an agent a queue_log line may name by its interface."""
        return self.aliases.get((server, agent)) or self.names.get(agent) or agent

    def _call_event(self, ev: Event) -> None:
        (eid, server, call_id, kind, queue, agent, ts, wait_s, talk_s, reason,
         caller_number, value, discr, extra) = ev
        agent = self._name(server, agent)
        if kind in CALL_ENDS or kind in (Kind.ENTER_QUEUE, Kind.CONNECT):
            self._activity(server, int(ts))
        if kind == Kind.ENTER_QUEUE:
            number = "" if caller_number.lower() in self.no_number else caller_number
            call = QueueCall(eid, server, call_id, queue, ts, number)
            self.calls.append(call)
            self.by_call_id.setdefault((server, call_id), []).append(call)
            self.open_calls.setdefault((server, call_id, queue), []).append(call)
        elif kind == Kind.CONNECT:
            self._connect(server, call_id, queue, agent, ts, wait_s)
        elif kind in (Kind.COMPLETE, Kind.TRANSFER):
            self._complete(server, call_id, queue, agent, kind, ts, wait_s, talk_s)
        elif kind in EXIT_OUTCOMES:
            if left := self._pop_open(server, call_id, queue):
                left.outcome, left.ended_ts, left.wait_s = EXIT_OUTCOMES[kind], ts, wait_s
                if kind == Kind.ABANDON:
                    self.restarts[server].abandoned.append(left)
        elif kind in (Kind.HOLD, Kind.UNHOLD):
            if held := self._latest(server, call_id, queue, lambda c: c.connect_ts is not None):
                held.holds.append((kind, ts))
        elif kind == Kind.DISPOSITION:
            self._disposition(server, call_id, queue, agent, value)
        elif kind == Kind.QUEUE_START:
            self._pbx_restart(server, ts)
        elif kind == Kind.SHUTDOWN:
            self._shutdown(server, ts)
        elif kind == Kind.SURVEY_ANSWER:
            self.answers.append(ev)
        elif kind == Kind.INFO and value == IVR_APPEND:
            data = (json.loads(extra).get("data") if extra else None) or []
            path = self.ivr.setdefault((server, call_id), IvrPath(eid, server, call_id, ts))
            path.steps.append((ts, _field(data, 2), _field(data, 1)))

    def _activity(self, server: str, second: int) -> None:
        """A queue call event: the last second of activity (for shutdown ABANDONs) moves."""
        restart = self.restarts.setdefault(server, _Restart())
        if restart.end_second != second:
            restart.end_second, restart.abandoned = second, []
        restart.shutdown_at = None

    def _pop_open(self, server: str, call_id: str, queue: str) -> QueueCall | None:
        """The earliest open call of this caller in this queue (end events match both)."""
        waiting = self.open_calls.get((server, call_id, queue))
        if not waiting:
            return None
        call = waiting.pop(0)
        if not waiting:
            del self.open_calls[(server, call_id, queue)]
        return call

    def _latest(self, server: str, call_id: str, queue: str, wanted: Any) -> QueueCall | None:
        """This caller's latest queue call (in `queue` when it is named) that is `wanted`."""
        for call in reversed(self.by_call_id.get((server, call_id), [])):
            if (not queue or call.queue == queue) and wanted(call):
                return call
        return None

    def _connect(self, server: str, call_id: str, queue: str, agent: str, ts: float,
                 wait_s: float | None) -> None:
        self.connects.setdefault((server, agent), []).append(ts)
        self._member_evidence(server, agent, queue, Kind.CONNECT, ts)
        waiting = self.open_calls.get((server, call_id, queue), [])
        call = next((c for c in waiting if c.connect_ts is None), None)
        if call:
            call.outcome, call.connect_ts, call.agent, call.wait_s = "answered", ts, agent, wait_s

    def _complete(self, server: str, call_id: str, queue: str, agent: str, kind: str,
                  ts: float, wait_s: float | None, talk_s: float | None) -> None:
        call = self._pop_open(server, call_id, queue)
        if call is None:
            return
        if call.connect_ts is None:  # CONNECT lost: the end says who answered, and when
            call.connect_ts = ts - (talk_s or 0.0)
            call.wait_s, call.agent = wait_s, agent
            self.connects.setdefault((server, agent), []).append(call.connect_ts)
            self.connects[(server, agent)].sort()
        call.outcome, call.ended_ts = "answered", ts
        call.bridged_s = talk_s if talk_s is not None else ts - call.connect_ts
        call.transferred = kind == Kind.TRANSFER

    def _disposition(self, server: str, call_id: str, queue: str, agent: str,
                     code: str) -> None:
        """A disposition names its queue and agent: it belongs to that agent's answered
        call in that queue (a blind transfer may have put the caller in another queue)."""
        call = self._latest(server, call_id, queue, lambda c: c.connect_ts is not None
                            and (not agent or c.agent == agent))
        if call is None and (queue or agent):
            call = self._latest(server, call_id, "", lambda c: c.connect_ts is not None)
        if call:
            call.disposition = code

    # ---------------------------------------------------------------- restarts
    def _shutdown(self, server: str, ts: float) -> None:
        """AMI says Asterisk is stopping: the callers it hung up in its last second of
        queue activity did not abandon."""
        restart = self.restarts.setdefault(server, _Restart())
        self._close_shutdown_abandons(restart)
        restart.shutdown_at = ts

    def _close_shutdown_abandons(self, restart: _Restart) -> None:
        for call in restart.abandoned:
            call.outcome, call.wait_s = "closed", None
        restart.abandoned = []

    def _pbx_restart(self, server: str, ts: float) -> None:
        """Asterisk started (QUEUESTART): close what it left open (docs/kpis.md rules 1, 2)."""
        restart = self.restarts.setdefault(server, _Restart())
        down_from = restart.shutdown_at or restart.last_seen or ts
        if restart.end_second is not None and ts - restart.end_second <= SHUTDOWN_GAP_S:
            self._close_shutdown_abandons(restart)
        restart.abandoned, restart.shutdown_at, restart.end_second = [], None, None
        restart.up_at = ts
        for key in [k for k in self.open_calls if k[0] == server]:
            for call in self.open_calls.pop(key):
                self._close(call, down_from)
        restart.suspended = {}
        for (srv, agent, queue) in [k for k in self.open_sessions if k[0] == server]:
            session = self.open_sessions.pop((srv, agent, queue))
            session.end = down_from
            if self.kpi.persistent_members:
                self._open_session(server, agent, queue, ts)
            else:
                restart.suspended[("session", agent, queue)] = session
        for (srv, agent) in [k for k in self.open_pause if k[0] == server]:
            pause = self.open_pause.pop((srv, agent))
            pause.end = down_from
            if self.kpi.persistent_members:
                pause.continued = self._open_pause(server, agent, pause.label, ts)
            else:
                restart.suspended[("pause", agent, "")] = pause

    def _close(self, call: QueueCall, ts: float) -> None:
        """The PBX restarted with the call open. Connected: it was answered (its wait and
        agent are known) and its talk is not (kill -9 wrote no end): `ended_by_restart`.
        Still waiting: `closed`, with no wait (the caller neither got nor refused service)."""
        call.ended_ts = ts
        if call.connect_ts is not None:
            call.ended_by_restart = True
        else:
            call.outcome, call.wait_s = "closed", None

    def _member_evidence(self, server: str, agent: str, queue: str, kind: str,
                         ts: float) -> None:
        """Without persistent_members, a member who shows up after a restart with no
        ADDMEMBER was restored by Asterisk all the same: its sessions (and, for an UNPAUSE,
        its pause) go on from the restart."""
        restart = self.restarts.get(server)
        if restart is None or not restart.suspended or not agent:
            return
        up = restart.up_at or ts
        for key in [k for k in restart.suspended if k[1] == agent]:
            if key[0] == "session" and (server, agent, key[2]) not in self.open_sessions:
                self._open_session(server, agent, key[2], up)
                del restart.suspended[key]
            elif key[0] == "pause" and kind in PAUSE_ENDS and (server, agent) not in self.open_pause:
                cut = restart.suspended.pop(key)
                cut.continued = self._open_pause(server, agent, cut.label, up)

    # ---------------------------------------------------------------- members
    def _member_events(self, events: list[Event]) -> None:
        """The member events of one instant, in an order of their own: starts and ends of a
        pause (or a session) alternate, an end first when one is open, and the n-th of
        each (its occurrence in the second: the same line written again) takes the n-th
        turn. So a pause taken and ended in the same second, ended and taken again, or
        taken, ended and taken again, comes out as Asterisk had it whatever the order of
        its lines."""
        turns = {id(ev): self._turn(ev) for ev in events}
        for ev in sorted(sorted(events, key=_member_order), key=lambda e: turns[id(e)]):
            self._member_event(ev)

    def _turn(self, ev: Event) -> int:
        """An event's place in its instant (see _member_events), from the state before it."""
        server, kind, queue = ev[1], ev[3], ev[4]
        agent = self._name(server, ev[5])
        if kind in (*PAUSE_STARTS, *PAUSE_ENDS):
            is_open = (server, agent) in self.open_pause
            ends = kind in PAUSE_ENDS and ev[9] != AUTO_UNPAUSE
        elif kind in (*SESSION_STARTS, *SESSION_ENDS):
            is_open = (server, agent, queue) in self.open_sessions
            ends = kind in SESSION_ENDS
        else:  # a member state: with the starts
            is_open, ends = False, False
        n = occurrence(ev[12])
        return 2 * n - (2 if ends == is_open else 1)

    def _member_event(self, ev: Event) -> None:
        server, kind, queue, ts, reason, value, discr = ev[1], ev[3], ev[4], ev[6], ev[9], \
            ev[11], ev[12]
        agent = self._name(server, ev[5])
        if kind in MEMBER_EVIDENCE:
            self._member_evidence(server, agent, queue, kind, ts)
        if kind in (*SESSION_STARTS, *SESSION_ENDS):
            self.changed[(server, agent, queue)] = ts
        elif kind in (*PAUSE_STARTS, *PAUSE_ENDS):
            self.changed[(server, agent)] = ts
        if kind in SESSION_STARTS:
            self._open_session(server, agent, queue, ts)
            if reason == "paused":  # ADDMEMBER|PAUSED: added paused, and no PAUSE line
                self._pause(server, agent, value, ts)
        elif kind in SESSION_ENDS:
            if session := self.open_sessions.pop((server, agent, queue), None):
                session.end = ts
            if not any(k[:2] == (server, agent) for k in self.open_sessions):
                if pause := self.open_pause.pop((server, agent), None):
                    pause.end = ts  # logged out of every queue: no longer paused
        elif kind in PAUSE_STARTS:
            self._pause(server, agent, reason or base_discr(discr), ts)
        elif kind in PAUSE_ENDS:
            # log_unpause_on_reason_change writes UNPAUSE|Auto-Unpause before the PAUSE of the
            # new reason: not an end (that PAUSE ends the old pause), and in the order-free
            # second it would end the new one
            if reason != AUTO_UNPAUSE and (pause := self.open_pause.pop((server, agent), None)):
                pause.end = ts
        elif kind == Kind.MEMBER_STATE:
            self._member_state(server, agent, queue, ts, reason, value, ev[13])

    def _member_state(self, server: str, agent: str, queue: str, ts: float, paused: str,
                      pause_reason: str, extra: str) -> None:
        """What Asterisk says the member is now (AMI, at every listener login and on
        change): a member the log never saw log in (static, restored, logged in before the
        history) is staffed from now, or from its login time when Asterisk gives it."""
        info = json.loads(extra) if extra else {}
        if ts - self.changed.get((server, agent, queue), -STATE_LAG_S) < STATE_LAG_S:
            return  # raised around a logged login or logout: that line is the truth
        if queue and (server, agent, queue) not in self.open_sessions:
            since = _epoch(info.get("login_time"), ts)
            self._open_session(server, agent, queue, since)
        current = self.open_pause.get((server, agent))
        if ts - self.changed.get((server, agent), -STATE_LAG_S) < STATE_LAG_S:
            return  # raised around a logged pause or unpause
        if paused == "paused":
            if current is None or current.label != pause_reason:
                self._pause(server, agent, pause_reason, _epoch(info.get("last_pause"), ts)
                            if current is None else ts)
        elif current is not None:
            current.end = ts  # the unpause was missed (the listener was away)
            del self.open_pause[(server, agent)]

    def _open_session(self, server: str, agent: str, queue: str, ts: float) -> None:
        key = (server, agent, queue)
        if key not in self.open_sessions:
            self.open_sessions[key] = session = Interval(server, agent, queue, ts)
            self.sessions.append(session)

    def _open_pause(self, server: str, agent: str, reason: str, ts: float) -> Interval:
        self.open_pause[(server, agent)] = pause = Interval(server, agent, reason, ts)
        self.pauses.append(pause)
        return pause

    def _pause(self, server: str, agent: str, reason: str, ts: float) -> None:
        current = self.open_pause.get((server, agent))
        if current and current.label == reason:
            return  # the same pause reported per queue
        if current:
            current.end = ts
        self._open_pause(server, agent, reason, ts)

    # ---------------------------------------------------------------- after the pass
    def finish(self, data_end: float) -> None:
        """Hold and after-call work need what came after each call: compute them last."""
        wrapup_pauses: dict[tuple[str, str], list[Interval]] = {}
        for pause in self.pauses:
            if pause.label in self.wrapup_reasons:
                wrapup_pauses.setdefault((pause.server, pause.agent), []).append(pause)
        for call in self.calls:
            talk_known = call.bridged_s is not None
            if call.connect_ts is not None and talk_known:
                call.hold_s = _hold_seconds(call)
            if call.ended_ts is None:
                call.unsettled = True
            elif call.outcome == "answered" and call.agent and talk_known:
                call.acw_s, call.unsettled = self._acw(
                    call, wrapup_pauses.get((call.server, call.agent), []), data_end)
            else:
                call.unsettled = False
        self._mark_fcr_contacts()

    def ivr_rows(self) -> list[tuple]:
        """Each IVRAPPEND call's path, and the first queue it entered after its first choice."""
        rows = []
        for (server, call_id), path in self.ivr.items():
            queued = next((c for c in self.by_call_id.get((server, call_id), [])
                           if c.entered_ts >= path.first_ts), None)
            rows.append(path.row(queued))
        return rows

    def _mark_fcr_contacts(self) -> None:
        """A contact is a phone call: of the queue calls of one call id (moved or transferred
        between queues), only the last answered one is its FCR contact."""
        for calls in self.by_call_id.values():
            answered = [c for c in calls if c.outcome == "answered"]
            for call in answered[:-1]:
                call.fcr_contact = False

    def _acw(self, call: QueueCall, pauses: list[Interval], data_end: float
             ) -> tuple[float, bool]:
        """(acw seconds, still unsettled) per docs/kpis.md."""
        end = call.ended_ts
        assert end is not None and call.connect_ts is not None
        connects = self.connects.get((call.server, call.agent), [])
        i = bisect.bisect_left(connects, end)
        while i < len(connects) and connects[i] <= call.connect_ts:
            i += 1
        next_connect = connects[i] if i < len(connects) else None
        pause = next((p for p in pauses if abs(p.start - end) <= ACW_PAUSE_WINDOW_S
                      and p.start >= call.connect_ts), None)
        if pause is not None:
            return _pause_work(pause, max(pause.start, end), next_connect, data_end)
        late_pause_possible = end + ACW_PAUSE_WINDOW_S > data_end
        wrapup = self.kpi.wrapup_s.get(call.queue, 0.0)
        if wrapup <= 0:
            return 0.0, late_pause_possible
        if next_connect is not None and next_connect - end < wrapup:
            return max(0.0, next_connect - end), late_pause_possible
        return wrapup, late_pause_possible or (next_connect is None and end + wrapup > data_end)


def _pause_work(pause: Interval, start: float, next_connect: float | None, data_end: float
                ) -> tuple[float, bool]:
    """After-call work in a wrap-up pause from `start` (the call's end: ACW starts there
    even when the pause was pressed before) to its unpause or the agent's next connect,
    through the parts a restart cut it in (the downtime is no work)."""
    work, part = 0.0, pause
    while True:
        stop = part.end
        if next_connect is not None and (stop is None or next_connect < stop):
            return work + max(0.0, next_connect - max(start, part.start)), False
        if stop is None:
            return work + max(0.0, data_end - max(start, part.start)), True
        work += max(0.0, stop - max(start, part.start))
        if part.continued is None:
            return work, False
        part = part.continued


def _field(data: list[Any], i: int) -> str:
    return str(data[i]) if i < len(data) else ""


def _call_order(ev: Event) -> tuple:
    # (phase, call id, queue, agent, kind, discr, value, id): every field but the id first,
    # so equal events are the only ones the store's order can still tell apart
    return (CALL_PHASE.get(ev[3], 4), ev[2], ev[4], ev[5], ev[3], ev[12], ev[11], ev[0])


def _member_order(ev: Event) -> tuple:
    return (ev[5], ev[3], ev[4], ev[12], ev[9], ev[11], ev[0])


def _epoch(value: Any, default: float) -> float:
    """An epoch Asterisk gave (LoginTime, LastPause; 0 when it has none), else `default`;
    never later than `default` (the event's own time)."""
    try:
        epoch = float(value)
    except (TypeError, ValueError):
        return default
    return min(epoch, default) if epoch > 0 else default


def _hold_seconds(call: QueueCall) -> float:
    """Hold/Unhold pairs between connect and end; a hold never released ends with the call."""
    assert call.connect_ts is not None
    end = call.ended_ts
    total, since = 0.0, None
    for kind, ts in sorted(call.holds, key=lambda h: (h[1], h[0] == Kind.UNHOLD)):
        if kind == Kind.HOLD and since is None:
            since = ts
        elif kind == Kind.UNHOLD and since is not None:
            total += _clipped(since, ts, call.connect_ts, end)
            since = None
    if since is not None and end is not None:
        total += _clipped(since, end, call.connect_ts, end)
    if call.bridged_s is not None:
        total = min(total, call.bridged_s)
    return total


def _clipped(start: float, stop: float, lo: float, hi: float | None) -> float:
    if hi is not None:
        stop = min(stop, hi)
    return max(0.0, stop - max(start, lo))


# ------------------------------------------------------------------------ the refresh
async def refresh_facts(store: Store, kpi: KpiConfig, *, rebuild: bool = False,
                        names: dict[str, str] | None = None,
                        merge_servers: bool = True) -> FactsResult:
    """Bring the facts up to date with the events table (everything again with rebuild).
    `names`: member interface -> member name from the config ([agents] names);
    `merge_servers` ([report] merge_servers): a caller number is one customer on every
    server of the store (else one per server: a repeat call is a call to the same PBX).
    Refreshes at once (in one process or several) are safe: one that builds on the facts it
    read (not a rebuild) writes nothing if another refresh wrote them meanwhile, and starts
    again from theirs."""
    while True:
        try:
            return await _refresh(store, kpi, rebuild, names, merge_servers)
        except _Overtaken:
            continue


class _Overtaken(Exception):
    """Another refresh committed while this one derived: its facts would be stale."""


async def _refresh(store: Store, kpi: KpiConfig, rebuild: bool,
                   names: dict[str, str] | None, merge_servers: bool) -> FactsResult:
    state = await q.facts_state(store)
    settings = settings_fingerprint(kpi, names, merge_servers)
    rebuild = rebuild or state.get("settings") != settings
    watermark = 0 if rebuild else int(state.get("events_id", 0))
    last_id, data_end = await q.events_end(store)
    if last_id is None or data_end is None or (last_id <= watermark and not rebuild):
        return FactsResult(0, 0, None)
    learned, renamed_since = await _learn_aliases(store, watermark, last_id, rebuild)
    w0 = None if rebuild else await _rederive_from(store, watermark, renamed_since)
    deriver = Deriver(kpi, await _aliases(store, learned), names)
    if w0 is not None:
        await _resume(store, deriver, w0)
    instant: list[Event] = []
    async for ev in q.fact_events(store, FACT_KINDS, last_id, None if w0 is None else int(w0)):
        if w0 is not None and ev[6] < w0:
            continue
        if instant and ev[6] != instant[0][6]:
            deriver.feed_instant(instant)
            instant = []
        instant.append(ev)
    if instant:
        deriver.feed_instant(instant)
    deriver.finish(data_end)
    answers = await _link_answers(store, deriver, w0)
    async with store.transaction() as tx:
        if not await q.claim_facts(tx, state.get("written"), overwrite=w0 is None):
            raise _Overtaken
        await q.store_aliases(tx, learned)
        await q.clear_facts(tx, w0)
        await q.insert_queue_calls(tx, [c.row() for c in deriver.calls])
        await q.insert_sessions(tx, (q.Span(s.server, s.agent, s.label, s.start, s.end)
                                     for s in deriver.sessions))
        await q.insert_pauses(tx, (q.Span(p.server, p.agent, p.label, p.start, p.end)
                                   for p in deriver.pauses))
        await q.insert_survey_answers(tx, answers)
        await q.insert_ivr_paths(tx, deriver.ivr_rows())
        numbers = None if w0 is None else {c.caller_number for c in deriver.calls}
        await _update_caller_gaps(tx, numbers, merge_servers)
        await q.set_facts_state(tx, {"events_id": str(last_id), "settings": settings,
                                     "data_end": str(data_end)})
    return FactsResult(deriver.events, len(deriver.calls), w0)


async def data_end(store: Store) -> float | None:
    """The time of the last event the facts were built from (FCR windows end there)."""
    value = (await q.facts_state(store)).get("data_end")
    return float(value) if value not in (None, "None") else None


def settings_fingerprint(kpi: KpiConfig, names: dict[str, str] | None = None,
                         merge_servers: bool = True) -> str:
    # the facts depend on these: change them and the facts are rebuilt
    settings = {"version": FACTS_VERSION, "wrapup_reasons": sorted(kpi.wrapup_reasons),
                "wrapup_s": kpi.wrapup_s, "persistent_members": kpi.persistent_members,
                "no_number": sorted(n.lower() for n in kpi.no_number), "names": names or {}}
    if not merge_servers:  # (absent when merged: the stores of one PBX are not rebuilt)
        settings["merge_servers"] = False
    return json.dumps(settings, sort_keys=True)


async def _rederive_from(store: Store, watermark: int, renamed_since: float | None) -> float:
    """w0: the earliest time any fact the new events can change starts (see module doc)."""
    t_new = await q.first_ts_after(store, watermark)
    assert t_new is not None  # called only when there are events past the watermark
    lookback = max(ACW_PAUSE_WINDOW_S + max([0.0, *await _wrapups(store)]), SHUTDOWN_GAP_S)
    candidates = [t_new] + ([renamed_since] if renamed_since is not None else [])
    for value in (
        await q.first_entry_unsettled_or_ended_since(store, t_new - lookback),
        await q.first_entry_named_after(store, watermark),
        # an IVR path the new events name (its queue entry, another choice)
        await q.first_ivr_path_named_after(store, watermark),
    ):
        if value is not None:
            candidates.append(value)
    return min(candidates)


async def _wrapups(store: Store) -> list[float]:
    state = await q.facts_state(store)
    settings = json.loads(state.get("settings", "{}"))
    return [float(v) for v in settings.get("wrapup_s", {}).values()]


async def _resume(store: Store, deriver: Deriver, w0: float) -> None:
    """Sessions and pauses that began before w0 and had not ended by then are rebuilt from
    their stored start, open: their end (if any) is among the events replayed from w0. An
    agent logged in for months does not make every refresh reread those months. Each
    server's last event before w0 is when Asterisk was last known up."""
    for server, agent, queue, start, _end in await q.sessions_open_at(store, w0):
        session = Interval(server, agent, queue, start)
        deriver.sessions.append(session)
        deriver.open_sessions[(server, agent, queue)] = session
    for server, agent, reason, start, _end in await q.pauses_open_at(store, w0):
        deriver._open_pause(server, agent, reason, start)
    for server, last in await q.last_seen_before(store, w0, FACT_KINDS):
        deriver.restarts[server] = _Restart(last_seen=last)


# ------------------------------------------------------------------------ member names
ALIAS_KINDS = (Kind.MEMBER_ADD, Kind.MEMBER_REMOVE, Kind.PAUSE, Kind.UNPAUSE, Kind.MEMBER_STATE)


async def _learn_aliases(store: Store, watermark: int, last_id: int, rebuild: bool
                         ) -> tuple[list[tuple[str, str, str]], float | None]:
    """(server, interface, member name) taught by the new AMI member events, which carry
    both, and the earliest start of a stored session named by an interface it renames: the
    facts are derived again from there."""
    learned: dict[tuple[str, str], str] = {}
    for server, agent, extra in await q.alias_events(store, 0 if rebuild else watermark,
                                                     last_id, ALIAS_KINDS):
        interface = json.loads(extra).get("interface", "") if extra else ""
        if interface and agent and interface != agent:
            learned[(server, interface)] = agent
    if not learned:
        return [], None
    known = await q.agent_aliases(store)
    new = [(s, i, n) for (s, i), n in learned.items() if known.get((s, i)) != n]
    since = None
    for server, interface, _name in new:
        start = await q.first_session_start(store, server, interface)
        if start is not None:
            since = start if since is None else min(since, start)
    return new, since


async def _aliases(store: Store, learned: list[tuple[str, str, str]]
                   ) -> dict[tuple[str, str], str]:
    aliases = await q.agent_aliases(store)
    aliases.update({(s, i): n for s, i, n in learned})
    return aliases


# ------------------------------------------------------------------------ surveys
async def _link_answers(store: Store, deriver: Deriver, w0: float | None) -> list[tuple]:
    """Each survey answer with the queue call it rates: the call with the answer's call_id,
    else the call its channel is linked to (call_links, extra.linkedid). Queue and agent
    come from that call (the AGI may know them wrongly); unlinked answers (orphans) keep
    their own and are not counted in CSAT or FCR until their call's events arrive. One
    survey per call: only the answers of a call's first survey session are counted."""
    rows = []
    for (eid, server, call_id, _kind, queue, agent, ts, _w, _t, reason, _n, value, discr,
         extra) in deriver.answers:
        info = json.loads(extra) if extra else {}
        call = await _rated_call(store, deriver, server, call_id, info.get("linkedid", ""), ts)
        if call:
            qc_id, queue, agent, entered, answered = call
        else:
            qc_id, entered, answered = None, ts, 0
        rows.append([eid, server, call_id, qc_id, queue, agent, int(entered), answered,
                     base_discr(discr), info.get("question_kind", ""), value, reason, ts,
                     str(info.get("session", "")), 1])
    first = await _first_sessions(store, [r for r in rows if r[3] is not None], w0)
    for row in rows:
        if row[3] is not None:
            row[14] = int(first[row[3]] == row[13])
    return [tuple(r) for r in rows]


async def _first_sessions(store: Store, rows: list[list], w0: float | None
                          ) -> dict[int, str]:
    """Queue call id -> the session of its earliest survey answer (stored or new)."""
    earliest: dict[int, tuple[float, int, str]] = {}
    stored: list[tuple] = []
    calls = sorted({r[3] for r in rows})
    if w0 is not None:
        for lo in range(0, len(calls), GAP_CHUNK):
            stored += await q.answers_before(store, w0, calls[lo:lo + GAP_CHUNK])
    for queue_call, ts, aid, session in [*stored, *((r[3], r[12], r[0], r[13]) for r in rows)]:
        if queue_call not in earliest or (ts, aid) < earliest[queue_call][:2]:
            earliest[queue_call] = (ts, aid, session)
    return {call: e[2] for call, e in earliest.items()}


async def _rated_call(store: Store, deriver: Deriver, server: str, call_id: str,
                      linkedid: str, ts: float) -> tuple | None:
    ids = [i for i in dict.fromkeys([call_id, linkedid]) if i]
    ids += await q.linked_ids(store, server, call_id)
    for rid in dict.fromkeys(ids):
        if calls := deriver.by_call_id.get((server, rid)):
            call = calls[-1]
            return (call.id, call.queue, call.agent, call.entered_ts,
                    int(call.outcome == "answered"))
    rated = await q.latest_call_rated(store, server, ids, ts)
    if rated is None:
        return None
    return (rated.id, rated.queue, rated.agent, rated.entered_ts,
            int(rated.outcome == "answered"))


# ------------------------------------------------------------------------ caller gaps
async def _update_caller_gaps(tx: Transaction, numbers: set[str] | None,
                              merge_servers: bool) -> None:
    """prev_gap_s / next_gap_s: seconds to the nearest queue call from the same number that
    is another phone call (another call_id of its server: two PBXs hand out the same
    uniqueids), for FCR and repeat calls; fcr_prev_gap_s: to the nearest earlier *answered*
    one (an abandoned attempt is no prior contact). A number is one customer across the
    servers when they are merged, one per server when not. All numbers, or the given ones (in
    chunks: a database caps the parameters of a statement)."""
    if numbers is None:
        await _write_gaps(tx, await q.calls_of_numbers(tx, None, merge_servers), merge_servers)
        return
    wanted = sorted(numbers - {""})
    for lo in range(0, len(wanted), GAP_CHUNK):
        await _write_gaps(tx, await q.calls_of_numbers(tx, wanted[lo:lo + GAP_CHUNK],
                                                       merge_servers), merge_servers)


async def _write_gaps(tx: Transaction, rows: list[q.GapRow], merge_servers: bool) -> None:
    """rows: (id, caller_number, server, call_id, entered_ts, outcome) in customer order."""
    updates = []
    customer = (lambda r: r[1]) if merge_servers else (lambda r: (r[2], r[1]))
    for _, number_rows in itertools.groupby(rows, key=customer):
        updates.extend(_gaps([(r[0], (r[2], r[3]), r[4], r[5]) for r in number_rows]))
    await q.set_caller_gaps(tx, updates)


def _gaps(rows: list[tuple]) -> list[tuple]:
    """One customer's calls (id, phone call, entered_ts, outcome) in time order ->
    (prev_gap_s, next_gap_s, fcr_prev_gap_s, id), in linear time."""
    prev = _nearest_other_call([(r[1], r[2]) for r in rows])
    nxt = _nearest_other_call([(r[1], -r[2]) for r in reversed(rows)])[::-1]
    answered = _nearest_other_call([(r[1], r[2]) for r in rows], [r[3] == "answered"
                                                                    for r in rows])
    return [(p, n, a, r[0]) for r, p, n, a in zip(rows, prev, nxt, answered)]


def _nearest_other_call(calls: list[tuple[Any, float]], counts: list[bool] | None = None
                        ) -> list[float | None]:
    """For each (call_id, t) in order, t minus the t of the latest earlier entry with another
    call_id (among those `counts` marks, when given). Keeps the latest entry and the latest
    one with a call_id other than its."""
    out: list[float | None] = []
    latest: tuple[Any, float] | None = None
    before_latest: float | None = None  # latest t whose call_id differs from latest's
    for i, (call_id, t) in enumerate(calls):
        if latest is None:
            out.append(None)
        elif latest[0] != call_id:
            out.append(abs(t - latest[1]))
        else:
            out.append(None if before_latest is None else abs(t - before_latest))
        if counts is not None and not counts[i]:
            continue
        if latest is not None and latest[0] != call_id:
            before_latest = latest[1]
        latest = (call_id, t)
    return out
