"""AMI messages -> canonical events (pure: no I/O, only the per-call state attribution needs).

The keys match what the queue_log parser produces for the same event (docs/events.md), so the
store keeps one copy when both sources run: call_id is the caller channel's Uniqueid, agent the
member name, ts the event's `Timestamp` header (manager.conf `timestampevents = yes`).

State kept, and why:
- each live queue call (caller Uniqueid -> QueueCall) and every channel of it (AgentConnect's
  DestUniqueid, channels created into its Linkedid), so a Hold/Unhold on either side of the
  bridge is attributed to the caller's queue call;
- the member serving each connected call ((queue, member name) -> the call) until its
  AgentComplete: app_queue.c builds that event from the *latest snapshots* of the caller and
  member channels (handle_hangup -> send_agent_complete), and when a channel is already gone
  its fields are missing, so an AgentComplete may name neither the caller (no Uniqueid) nor
  the member channel (no DestUniqueid) -- and it is published after the channels' Hangups;
- which channels were asked to hang up (HangupRequest/SoftHangupRequest), for every channel,
  before `QueueCallerAbandon`: app_queue.c sends that event from record_abandoned(), which
  queue_exec calls for ABANDON (the caller hung up: res < 0), but also for EXITWITHTIMEOUT and
  EXITEMPTY, where the channel is still up and the dialplan carries on. Seen on the sandbox:
  ABANDON is preceded by HangupRequest on the caller channel, EXITWITHTIMEOUT is not;
- each queue's members (QueueMemberAdded/Removed/Status/Pause and the QueueStatus list taken
  at every login), to tell EXITEMPTY from a timeout -- with `leavewhenempty`,
  get_member_status() lets the caller leave when no member counts; a queue with no member, or
  only invalid ones, is empty under every leavewhenempty mode, so that is exit-empty; anything
  else (which depends on the mode) is exit-timeout -- and to notice a pause or a member the
  stream never showed (member-state);
- the caller's entry position (QueueCallerJoin), which AgentComplete does not repeat;
- the last blind/attended transfer on a queue call, which comes just before
  `AgentComplete Reason: transfer`.
At every (re)login the listener hands `members_at()` the QueueStatus answer and `calls_at()`
what Asterisk says is live (a `Snapshot`: the Status list and the callers waiting) with what
the store recorded about those calls (`StoredCall`s), each where Asterisk's answer ends in the
stream, so the members, calls and channels are current again after an outage.
A channel goes at its Hangup, a call at its end event; `MAX_TRACKED` bounds what outlives
that when ends were missed (gaps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from callkpi.events import SOURCE_AMI, CallEvent, CallLink, Kind, make_event
from callkpi.events import Occurrences, number_occurrences

MAX_TRACKED = 100_000
MAX_SECONDS = 1e11  # as the queue_log parser: an epoch beyond this is junk, not a time
DEVICE_INVALID = "4"  # AST_DEVICE_INVALID in QueueMember* Status
DEVICE_ONHOLD = "8"  # AST_DEVICE_ONHOLD: the member's device holds a call
SOFTHANGUP_SHUTDOWN = 1 << 2  # AST_SOFTHANGUP_SHUTDOWN (include/asterisk/channel.h)
UNKNOWN = ("", "<unknown>", "NONE", "(null)")  # Asterisk's ways of saying "none"
# Uniqueid headers of BlindTransfer / AttendedTransfer, the queue call's own side first.
TRANSFER_PARTIES = ("TransfererUniqueid", "OrigTransfererUniqueid", "TransfereeUniqueid",
                    "SecondTransfererUniqueid", "TransferTargetUniqueid")
# The product's hold key (asterisk_conf/extensions.conf [callkpi-agent-hold]) runs this on the
# agent's channel for as long as the caller is held.
HOLD_KEY_APP, HOLD_KEY_DATA = "Read", "CALLKPI_UNHOLD,"
# Seconds an AgentComplete found only by its member may be off the connect it ends
# (TalkTime is whole seconds, the connect's Timestamp is not).
TALK_SLACK_S = 2.0
ENDS = frozenset({Kind.COMPLETE, Kind.TRANSFER, Kind.ABANDON, Kind.EXIT_TIMEOUT,
                  Kind.EXIT_EMPTY, Kind.EXIT_KEY, Kind.WITHDRAW})

# AMI events that carry nothing we need; the AMI account's event classes (call,agent,user,
# system) deliver them anyway. Any other event name is unknown and warned about once.
IGNORED = frozenset({
    "AgentCalled", "AttendedTransferRequest", "BridgeCreate", "BridgeDestroy", "BridgeEnter",
    "BridgeInfoChannel", "BridgeInfoComplete", "BridgeLeave", "BridgeMerge",
    "BridgeVideoSourceUpdate",
    "ChannelTalkingStart", "ChannelTalkingStop", "DialBegin", "DialEnd", "DialState",
    "FullyBooted", "HangupHandlerPop", "HangupHandlerPush", "HangupHandlerRun", "LocalBridge",
    "LocalOptimizationBegin", "LocalOptimizationEnd", "MixMonitorMute", "MixMonitorStart",
    "MixMonitorStop", "MusicOnHoldStart", "MusicOnHoldStop", "NewAccountCode",
    "NewCallerid", "NewConnectedLine", "Newstate", "OriginateResponse", "Pickup",
    "QueueMemberPenalty", "QueueMemberRinginuse", "QueueParams", "QueueStatusComplete", "Rename",
    "SessionTimeout", "SuccessfulAuth", "TestEvent", "UserEvent", "VarSet", "Newexten",
    "DTMFBegin", "DTMFEnd", "ChanSpyStart", "ChanSpyStop", "Reload", "Registry",
    "DeviceStateChange", "ExtensionStatus", "PeerStatus", "ContactStatus", "Cdr", "CEL",
    "Agents", "AgentLogin", "AgentLogoff", "MCID", "Masquerade", "Transfer",
    # the rest of the `system` class (Shutdown is mapped)
    "Alarm", "AlarmClear", "DNDState", "DeadlockStart", "Load", "LogChannel",
    "PJSIPMaintenanceStatus", "SpanAlarm", "SpanAlarmClear", "Unload",
})

Message = dict[str, str]


@dataclass
class QueueCall:
    """A caller in (or connected from) a queue."""

    call_id: str
    queue: str
    linked_id: str
    entry_position: int | None = None
    agent: str = ""
    connected_at: float | None = None
    on_hold: bool = False
    transfer: tuple[str, str] | None = None  # (reason, target) of the last transfer


@dataclass
class Member:
    name: str
    status: str  # AST_DEVICE_* number as Asterisk sends it
    paused: bool
    reason: str


@dataclass
class StoredCall:
    """What the store recorded about a queue call with no end yet (see `stored_calls`)."""

    call_id: str
    queue: str
    entry_position: int | None = None
    agent: str = ""
    connected_at: float | None = None
    on_hold: bool = False
    linked_id: str = ""
    channels: list[str] = field(default_factory=list)  # call_links of its linked id


@dataclass
class Snapshot:
    """The calls Asterisk listed at a login; None where it could not be asked (refused,
    timed out)."""

    channels: list[Message] | None = None  # Status items (with the variables asked for)
    waiting: list[Message] | None = None  # QueueStatus's QueueEntry items: callers waiting


@dataclass
class Mapped:
    events: list[CallEvent] = field(default_factory=list)
    links: list[CallLink] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class AmiMapper:
    """Feed AMI event messages in stream order; get canonical events and call links."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.calls: dict[str, QueueCall] = {}  # caller channel uniqueid -> its queue call
        self.channels: dict[str, QueueCall] = {}  # any live channel of a queue call -> the call
        self.linked: dict[str, QueueCall] = {}  # linkedid of a live queue call -> the call
        self.serving: dict[tuple[str, str], QueueCall] = {}  # (queue, member) -> its call
        # channels asked to hang up -> whether Asterisk did it as it shut down
        self.hangup_requested: dict[str, bool] = {}
        self.members: dict[str, dict[str, Member]] = {}  # queue -> member interface -> state
        self.unknown_seen: set[str] = set()
        self.occurrences = Occurrences()  # keys repeated within a second, as queue_log counts
        self._handlers: dict[str, Callable[[Message, float, Mapped], None]] = {
            "QueueCallerJoin": self._join,
            "QueueCallerLeave": self._leave,
            "QueueCallerAbandon": self._abandon,
            "AgentConnect": self._connect,
            "AgentComplete": self._complete,
            "AgentRingNoAnswer": self._ring_no_answer,
            "AgentDump": self._dump,
            "QueueMemberAdded": self._member_added,
            "QueueMemberRemoved": self._member_removed,
            "QueueMemberPause": self._member_pause,
            "QueueMemberStatus": self._member_status,
            "Hold": self._hold,
            "Unhold": self._unhold,
            "HangupRequest": self._hangup_request,
            "SoftHangupRequest": self._hangup_request,
            "Hangup": self._hangup,
            "Newchannel": self._new_channel,
            "BlindTransfer": self._blind_transfer,
            "AttendedTransfer": self._attended_transfer,
            "UserEvent": self._user_event,
            "Shutdown": self._shutdown,
        }

    @property
    def wanted(self) -> frozenset[str]:
        """Event names that can produce something; the listener queues only these."""
        return frozenset(self._handlers)

    def map(self, message: Message, received_at: float) -> Mapped:
        """One AMI event -> events, links and located warnings. Never raises on bad input."""
        out = Mapped()
        name = message.get("Event", "")
        handler = self._handlers.get(name)
        if handler is None:
            if name not in IGNORED and name not in self.unknown_seen:
                self.unknown_seen.add(name)
                out.warnings.append(f"unknown AMI event {name!r} ignored (warned once)")
            return out
        ts = self._ts(message, received_at, out)
        if ts is None:
            return out
        try:
            handler(message, ts, out)
        except _Missing as exc:
            out.warnings.append(f"{name} {_where(message)}: missing {exc.args[0]}; skipped")
        except (ValueError, TypeError, ArithmeticError) as exc:
            out.warnings.append(f"{name} {_where(message)}: {exc}; skipped")
        out.events = number_occurrences(out.events, self.occurrences)
        self._bound()
        return out

    # ------------------------------------------------------------ queue calls
    def _join(self, m: Message, ts: float, out: Mapped) -> None:
        uid, queue = _need(m, "Uniqueid"), _need(m, "Queue")
        position = _int(m, "Position", out)
        call = QueueCall(uid, queue, m.get("Linkedid") or uid, entry_position=position)
        self._track(call)
        out.events.append(self._event(Kind.ENTER_QUEUE, ts, uid, queue,
                                      caller_number=_text(m, "CallerIDNum"),
                                      caller_name=_text(m, "CallerIDName"), position=position))
        self._link(uid, call.linked_id, ts, out)

    def _leave(self, m: Message, ts: float, out: Mapped) -> None:
        # Sent for every way out of the queue (connect, abandon, timeout, key, withdraw) and
        # before AgentConnect: it carries no outcome. Exit-key and withdraw come from queue_log.
        _need(m, "Uniqueid")

    def _abandon(self, m: Message, ts: float, out: Mapped) -> None:
        uid, queue = _need(m, "Uniqueid"), _need(m, "Queue")
        call = self.calls.get(uid)
        extra = None
        if uid in self.hangup_requested:
            kind = Kind.ABANDON
            if self.hangup_requested[uid]:
                extra = {"hangup": "shutdown"}  # Asterisk hung the caller up as it stopped
        elif self._empty(queue):
            kind = Kind.EXIT_EMPTY
        else:
            kind = Kind.EXIT_TIMEOUT
        orig = _int(m, "OriginalPosition", out) if "OriginalPosition" in m else None
        out.events.append(self._event(
            kind, ts, uid, queue, wait_s=_float(m, "HoldTime", out),
            position=_int(m, "Position", out), extra=extra,
            orig_position=orig if orig is not None else (call.entry_position if call else None)))
        if call is not None:
            self._end(call)

    def _connect(self, m: Message, ts: float, out: Mapped) -> None:
        uid, queue, agent = _need(m, "Uniqueid"), _need(m, "Queue"), _member(m)
        call = self.calls.get(uid)
        if call is None or call.queue != queue:  # its join was not seen (a gap)
            call = QueueCall(uid, queue, m.get("Linkedid") or uid)
            self._track(call)
        call.agent, call.connected_at = agent, ts
        self.serving[(queue, agent)] = call
        member_uid = m.get("DestUniqueid", "")
        extra = {}
        if member_uid:
            self.channels[member_uid] = call
            extra["member_uniqueid"] = member_uid
            self._link(member_uid, m.get("DestLinkedid") or call.linked_id, ts, out)
        out.events.append(self._event(Kind.CONNECT, ts, uid, queue, agent,
                                      wait_s=_float(m, "HoldTime", out),
                                      ring_s=_float(m, "RingTime", out), extra=extra))

    def _complete(self, m: Message, ts: float, out: Mapped) -> None:
        queue, agent = _need(m, "Queue"), _member(m)
        call = self._ended_call(m, queue, agent, ts, out)
        fields: dict[str, Any] = dict(
            wait_s=_float(m, "HoldTime", out), talk_s=_float(m, "TalkTime", out),
            orig_position=call.entry_position if call.queue == queue else None)
        if m.get("Reason", "") == "transfer":
            how, target = call.transfer or ("", "")
            out.events.append(self._event(Kind.TRANSFER, ts, call.call_id, queue, agent,
                                          reason=how, value=target, **fields))
        else:
            out.events.append(self._event(Kind.COMPLETE, ts, call.call_id, queue, agent,
                                          reason=m.get("Reason", ""), **fields))
        self._end(call)

    def _ended_call(self, m: Message, queue: str, agent: str, ts: float,
                    out: Mapped) -> QueueCall:
        """The call an AgentComplete ends: named by the caller's Uniqueid, else by the member's
        channel (DestUniqueid), else the call that member was serving in that queue -- checked
        against the event's TalkTime where its connect was seen -- else a call known only by
        its Uniqueid (its connect fell in a gap). Raises _Missing when nothing names it."""
        uid = m.get("Uniqueid", "")
        call = self.calls.get(uid) if uid else self.channels.get(m.get("DestUniqueid", ""))
        if call is None and not uid:
            call = self.serving.get((queue, agent))
            talk = _float(m, "TalkTime", out)
            if (call is not None and call.connected_at is not None and talk is not None
                    and abs(call.connected_at + talk - ts) > TALK_SLACK_S):
                call = None  # that member's last call we saw is not the one ending here
        if call is None:
            if not uid:
                raise _Missing("Uniqueid (and no call of its member matches)")
            call = QueueCall(uid, queue, m.get("Linkedid") or uid)
        return call

    def _ring_no_answer(self, m: Message, ts: float, out: Mapped) -> None:
        ring_ms = _float(m, "RingTime", out)
        out.events.append(self._event(
            Kind.RING_NO_ANSWER, ts, self._caller_uid(m), _need(m, "Queue"), _member(m),
            ring_s=ring_ms / 1000 if ring_ms is not None else None))

    def _dump(self, m: Message, ts: float, out: Mapped) -> None:
        # queue_log writes AGENTDUMP, which has no kind of its own: it is a `custom` event.
        out.events.append(self._event(Kind.CUSTOM, ts, self._caller_uid(m), _need(m, "Queue"),
                                      _member(m), value="AGENTDUMP"))

    # ------------------------------------------------------------ members
    def _empty(self, queue: str) -> bool:
        members = self.members.get(queue)
        return members is not None and all(s.status == DEVICE_INVALID for s in members.values())

    def _member_status(self, m: Message, ts: float, out: Mapped) -> None:
        """QueueMemberStatus comes at every device state change: a member-state event only
        when it shows what the stream had not (a member not known in that queue, or another
        pause state), e.g. after an outage or for a static member."""
        queue, interface, name = _need(m, "Queue"), _need(m, "Interface"), _member(m)
        known = self.members.get(queue, {}).get(interface)
        member = self._remember(queue, interface, name, m)
        if known is None or (known.paused, known.reason) != (member.paused, member.reason):
            out.events.append(self._member_state(m, ts, queue, interface, member))

    def _member_added(self, m: Message, ts: float, out: Mapped) -> None:
        queue, interface = _need(m, "Queue"), _need(m, "Interface")
        member = self._remember(queue, interface, _member(m), m)
        out.events.append(self._event(Kind.MEMBER_ADD, ts, "", queue, member.name,
                                      reason="paused" if member.paused else "",
                                      extra={"interface": interface}))

    def _member_removed(self, m: Message, ts: float, out: Mapped) -> None:
        queue, interface = _need(m, "Queue"), _need(m, "Interface")
        self.members.setdefault(queue, {}).pop(interface, None)
        out.events.append(self._event(Kind.MEMBER_REMOVE, ts, "", queue, _member(m),
                                      extra={"interface": interface}))

    def _member_pause(self, m: Message, ts: float, out: Mapped) -> None:
        queue, interface, paused = _need(m, "Queue"), _need(m, "Interface"), _need(m, "Paused")
        member = self._remember(queue, interface, _member(m), m)
        extra = {"interface": interface}
        if paused == "1":
            out.events.append(self._event(Kind.PAUSE, ts, "", queue, member.name,
                                          discr=member.reason, reason=member.reason,
                                          extra=extra))
        else:
            # AMI's unpause reason is unreliable (asterisk#395): kept, but never in the key.
            out.events.append(self._event(Kind.UNPAUSE, ts, "", queue, member.name,
                                          reason=member.reason, extra=extra))

    def _remember(self, queue: str, interface: str, name: str, m: Message) -> Member:
        member = Member(name, m.get("Status", ""), m.get("Paused") == "1",
                        _text(m, "PausedReason"))
        self.members.setdefault(queue, {})[interface] = member
        return member

    def _member_state(self, m: Message, ts: float, queue: str, interface: str,
                      member: Member) -> CallEvent:
        extra: dict[str, Any] = {"interface": interface, "status": member.status,
                                 "in_call": m.get("InCall", "") == "1"}
        for key, header in (("login_time", "LoginTime"), ("last_pause", "LastPause")):
            if (epoch := _epoch(m.get(header, ""))) is not None:
                extra[key] = int(epoch)  # whole seconds, as Asterisk keeps them; 0 (never) left out
        if membership := m.get("Membership"):
            extra["membership"] = membership
        return self._event(Kind.MEMBER_STATE, ts, "", queue, member.name,
                           reason="paused" if member.paused else "", value=member.reason,
                           extra=extra)

    # ------------------------------------------------------------ channels
    def _hold(self, m: Message, ts: float, out: Mapped) -> None:
        call = self.channels.get(_need(m, "Uniqueid"))
        if call is None or not call.agent or call.on_hold:
            return  # not a connected queue call, or already on hold from the other side
        call.on_hold = True
        out.events.append(self._event(Kind.HOLD, ts, call.call_id, call.queue, call.agent))

    def _unhold(self, m: Message, ts: float, out: Mapped) -> None:
        call = self.channels.get(_need(m, "Uniqueid"))
        if call is None or not call.on_hold:
            return  # e.g. the Unhold a blind transfer sends without any Hold
        call.on_hold = False
        out.events.append(self._event(Kind.UNHOLD, ts, call.call_id, call.queue, call.agent))

    def _hangup_request(self, m: Message, ts: float, out: Mapped) -> None:
        uid = _need(m, "Uniqueid")
        by_shutdown = m.get("Event") == "SoftHangupRequest" and _shutdown_cause(m)
        self.hangup_requested[uid] = self.hangup_requested.get(uid) or by_shutdown

    def _hangup(self, m: Message, ts: float, out: Mapped) -> None:
        uid = _need(m, "Uniqueid")
        self.hangup_requested.pop(uid, None)
        call = self.channels.pop(uid, None)
        if call is None:
            return
        self._link(uid, m.get("Linkedid") or call.linked_id, ts, out)
        if uid == call.call_id and not call.agent:
            self._end(call)  # left the queue without an agent; a connected call ends at its
            # AgentComplete, which may come after the Hangups

    def _new_channel(self, m: Message, ts: float, out: Mapped) -> None:
        # A channel created into a live queue call (a transfer target, a consultation call)
        # joins it: its Hold/Unhold and its link then follow the call.
        uid, linked = _need(m, "Uniqueid"), m.get("Linkedid", "")
        call = self.linked.get(linked)
        if call is not None and uid not in self.channels:
            self.channels[uid] = call
            self._link(uid, linked, ts, out)

    def _blind_transfer(self, m: Message, ts: float, out: Mapped) -> None:
        call = self._transfer_call(m)
        if call is not None:
            call.transfer = ("blind", f"{m.get('Extension', '')}@{m.get('Context', '')}")

    def _attended_transfer(self, m: Message, ts: float, out: Mapped) -> None:
        call = self._transfer_call(m)
        if call is None:
            return
        dest = m.get("DestType", "")
        target = {
            "Bridge": f"BRIDGE:{m.get('DestBridgeUniqueid', '')}",
            "App": f"APP:{m.get('DestApp', '')}",
            "Link": f"LINK:{m.get('LocalOneChannel', '')},{m.get('LocalTwoChannel', '')}",
        }.get(dest, dest)
        call.transfer = ("attended", target)

    def _transfer_call(self, m: Message) -> QueueCall | None:
        """The queue call one of the transfer's parties belongs to."""
        for key in TRANSFER_PARTIES:
            call = self.channels.get(m.get(key, ""))
            if call is not None:
                return call
        return None

    # ------------------------------------------------------------ the PBX
    def _shutdown(self, m: Message, ts: float, out: Mapped) -> None:
        """Asterisk is stopping (sent after it hung up the calls, just before it exits)."""
        out.events.append(self._event(
            Kind.SHUTDOWN, ts, "", "", reason=_need(m, "Shutdown").lower(),
            value="restart" if m.get("Restart", "").lower() == "true" else ""))

    # ------------------------------------------------------------ our dialplan's UserEvents
    def _user_event(self, m: Message, ts: float, out: Mapped) -> None:
        """asterisk_conf/extensions.conf's UserEvents, keyed as its QueueLog() twins are."""
        name = m.get("UserEvent", "")
        if name == "IVRExit":
            out.events.append(self._event(
                Kind.IVR_EXIT, ts, _need(m, "Uniqueid"), _text(m, "Queue"), "",
                discr=_text(m, "Node"), value=_need(m, "Outcome")))
        elif name == "Disposition":
            # sent from the agent's feature-code call: CallUniqueid names the queue call
            out.events.append(self._event(
                Kind.DISPOSITION, ts, _need(m, "CallUniqueid"), _text(m, "Queue"),
                _text(m, "Agent"), value=_need(m, "Code")))

    # ------------------------------------------------------------ at every login
    def members_at(self, items: list[Message], at: float) -> Mapped:
        """The members are what a QueueStatus answer lists (its QueueParams and QueueMember
        items, placed at `at` in the stream): one member-state each."""
        out = Mapped()
        members: dict[str, dict[str, Member]] = {}
        for m in items:
            try:
                if m.get("Event") == "QueueParams":
                    members.setdefault(_need(m, "Queue"), {})
                elif m.get("Event") == "QueueMember":
                    queue, interface = _need(m, "Queue"), _need(m, "Location")
                    member = Member(_need(m, "Name"), m.get("Status", ""),
                                    m.get("Paused") == "1", _text(m, "PausedReason"))
                    members.setdefault(queue, {})[interface] = member
                    out.events.append(self._member_state(m, at, queue, interface, member))
            except _Missing as exc:
                out.warnings.append(f"QueueStatus {m.get('Event')} at login: missing "
                                    f"{exc.args[0]}; skipped")
        self.members = members
        return out

    def calls_at(self, snapshot: Snapshot, stored: dict[str, StoredCall], at: float) -> Mapped:
        """The calls are what Asterisk lists as live at `at` (where its answer ends in the
        stream), completed by what the store recorded about them. Returns a hold or unhold
        (extra.observed = "login") where a call's hold state differs from what was known: the
        change happened while nobody listened."""
        out = Mapped()
        if snapshot.channels is None and snapshot.waiting is None:
            return out  # Asterisk said nothing (the connection dropped): keep what is known
        if snapshot.channels is not None:
            calls, channels = self._live_from_status(snapshot, stored, out)
        else:
            calls, channels = self._live_without_status(snapshot, stored, out)
        self.calls, self.channels = calls, channels
        self.linked = {call.linked_id: call for call in calls.values()}
        live_members = {(c.queue, c.agent): c for c in calls.values() if c.agent}
        # a member with no live call keeps its last one: its AgentComplete may be in flight
        self.serving = {**{k: c for k, c in self.serving.items() if k not in live_members},
                        **live_members}
        if snapshot.channels is not None:
            self._observe_holds(snapshot.channels, at, out)
        return out

    def _live_from_status(self, snapshot: Snapshot, stored: dict[str, StoredCall],
                          out: Mapped) -> tuple[dict[str, QueueCall], dict[str, QueueCall]]:
        """Queue calls from the Status list: a channel running Queue() is a caller, waiting
        or (in a bridge) connected; its agent is the MEMBERNAME Queue() set on it."""
        assert snapshot.channels is not None
        rows = [r for r in snapshot.channels if r.get("Uniqueid")]
        calls: dict[str, QueueCall] = {}
        for row in rows:
            if row.get("Application") != "Queue":
                continue
            uid, queue = row["Uniqueid"], row.get("Data", "").split(",")[0]
            if not queue:
                continue
            call = self._carried(uid, queue, row.get("Linkedid") or uid, stored)
            if row.get("BridgeID"):
                call.agent = _text(_variables(row), "MEMBERNAME") or call.agent
                if (pos := _epoch(_variables(row).get("QEORIGINALPOS", ""))) is not None:
                    call.entry_position = int(pos)
            else:
                call.agent, call.connected_at, call.on_hold = "", None, False  # waiting
            calls[uid] = call
        for entry in snapshot.waiting or ():
            uid, queue = entry.get("Uniqueid", ""), entry.get("Queue", "")
            if uid and queue and uid not in calls:  # Status missed it (it was joining)
                calls[uid] = self._carried(uid, queue, uid, stored)
        channels: dict[str, QueueCall] = {}
        by_linked = {call.linked_id: call for call in calls.values()}
        in_bridge = {row["BridgeID"]: calls[row["Uniqueid"]] for row in rows
                     if row["Uniqueid"] in calls and row.get("BridgeID")}
        for row in rows:
            found = (calls.get(row["Uniqueid"]) or in_bridge.get(row.get("BridgeID", "-"))
                     or by_linked.get(row.get("Linkedid", "")))
            if found is not None:
                channels[row["Uniqueid"]] = found
        return calls, channels

    def _live_without_status(self, snapshot: Snapshot, stored: dict[str, StoredCall],
                             out: Mapped) -> tuple[dict[str, QueueCall], dict[str, QueueCall]]:
        """Status refused (an AMI account without `write = reporting`): the callers waiting
        (QueueEntry), and the connected calls the listener or the store still has open, with
        the channels the store linked to them; ones that ended meanwhile do no harm."""
        calls: dict[str, QueueCall] = {}
        for uid, call in self.calls.items():
            if call.agent:
                calls[uid] = call
        for uid, record in stored.items():
            if record.agent and uid not in calls:
                calls[uid] = self._carried(uid, record.queue, record.linked_id or uid, stored)
        for entry in snapshot.waiting or ():
            uid, queue = entry.get("Uniqueid", ""), entry.get("Queue", "")
            if uid and queue:
                calls[uid] = self._carried(uid, queue, uid, stored)
        channels = {uid: call for uid, call in self.channels.items()
                    if calls.get(call.call_id) is call}
        for uid, call in calls.items():
            channels[uid] = call
            for channel in stored[uid].channels if uid in stored else ():
                channels.setdefault(channel, call)
        return calls, channels

    def _carried(self, uid: str, queue: str, linked_id: str,
                 stored: dict[str, StoredCall]) -> QueueCall:
        """A live call as the listener knew it, else as the store recorded it, else new."""
        known = self.calls.get(uid)
        if known is not None and known.queue == queue:
            known.linked_id = linked_id
            return known
        call = QueueCall(uid, queue, linked_id)
        record = stored.get(uid)
        if record is not None and record.queue == queue:
            call.entry_position, call.agent = record.entry_position, record.agent
            call.connected_at, call.on_hold = record.connected_at, record.on_hold
        return call

    def _observe_holds(self, rows: list[Message], at: float, out: Mapped) -> None:
        """Asterisk shows a hold two ways: the member's device is ONHOLD (a phone's hold
        button), or a channel of the call runs the product's hold key. Where that differs
        from what was known, the hold began or ended while nobody listened."""
        held: set[int] = set()
        for row in rows:
            call = self.channels.get(row.get("Uniqueid", ""))
            if (call is not None and row.get("Application") == HOLD_KEY_APP
                    and row.get("Data", "").startswith(HOLD_KEY_DATA)):
                held.add(id(call))
        for call in self.calls.values():
            if not call.agent:
                continue
            on_hold = id(call) in held or any(
                member.name == call.agent and member.status == DEVICE_ONHOLD
                for member in self.members.get(call.queue, {}).values())
            if on_hold != call.on_hold:
                call.on_hold = on_hold
                out.events.append(self._event(Kind.HOLD if on_hold else Kind.UNHOLD, at,
                                              call.call_id, call.queue, call.agent,
                                              extra={"observed": "login"}))

    # ------------------------------------------------------------ helpers
    def _caller_uid(self, m: Message) -> str:
        """The caller's Uniqueid of an Agent* event; when the caller's channel is already gone
        its snapshot is missing from the event, and the member's channel names the call."""
        if uid := m.get("Uniqueid"):
            return uid
        call = self.channels.get(m.get("DestUniqueid", ""))
        if call is None:
            raise _Missing("Uniqueid")
        return call.call_id

    def _track(self, call: QueueCall) -> None:
        self.calls[call.call_id] = self.channels[call.call_id] = call
        self.linked[call.linked_id] = call

    def _end(self, call: QueueCall) -> None:
        """The call's end was seen: it can no longer be held, completed or abandoned."""
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        if self.linked.get(call.linked_id) is call:
            del self.linked[call.linked_id]
        if self.serving.get((call.queue, call.agent)) is call:
            del self.serving[(call.queue, call.agent)]

    def _event(self, kind: str, ts: float, call_id: str, queue: str, agent: str = "",
               *, discr: str = "", extra: dict[str, Any] | None = None, **data: Any
               ) -> CallEvent:
        return make_event(server=self.server, kind=kind, ts=ts, source=SOURCE_AMI,
                          call_id=call_id, queue=queue, agent=agent, discr=discr,
                          extra=extra, **data)

    def _link(self, uid: str, linked_id: str, ts: float, out: Mapped) -> None:
        out.links.append(CallLink(self.server, uid, linked_id or uid, ts))

    def _ts(self, m: Message, received_at: float, out: Mapped) -> float | None:
        """The event's Timestamp; None (the event is skipped, with a warning) when it is no
        possible time: it is part of the event's key, and a guess would not meet its
        queue_log twin."""
        stamp = m.get("Timestamp")
        if stamp is None:
            return received_at  # timestampevents is off: the time received is all there is
        if (ts := _epoch(stamp)) is None:
            out.warnings.append(f"{m.get('Event')} {_where(m)}: impossible Timestamp "
                                f"{stamp[:40]!r}; skipped")
        return ts

    def _bound(self) -> None:
        tables: tuple[dict[Any, Any], ...] = (self.channels, self.calls, self.linked,
                                              self.serving, self.hangup_requested)
        for table in tables:
            while len(table) > MAX_TRACKED:
                del table[next(iter(table))]  # the oldest entry (dicts keep insertion order)


def stored_calls(rows: Iterable[tuple[str, str, str, str, float, int | None]],
                 links: Iterable[tuple[str, str]] = ()) -> dict[str, StoredCall]:
    """The store's queue calls with no end yet, from their events (call_id, kind, queue,
    agent, ts, position) in time order and their channels' call_links (uniqueid, linked_id)."""
    calls: dict[str, StoredCall] = {}
    for call_id, kind, queue, agent, ts, position in rows:
        call = calls.get(call_id)
        if kind == Kind.ENTER_QUEUE:
            calls[call_id] = StoredCall(call_id, queue, entry_position=position)
        elif kind == Kind.CONNECT:
            if call is None or call.queue != queue:
                call = calls[call_id] = StoredCall(call_id, queue)
            call.agent, call.connected_at, call.on_hold = agent, ts, False
        elif kind in (Kind.HOLD, Kind.UNHOLD) and call is not None:
            call.on_hold = kind == Kind.HOLD
        elif kind in ENDS and call is not None and call.queue == queue:
            del calls[call_id]
    linked_of = dict(links)
    members: dict[str, list[str]] = {}
    for uniqueid, linked_id in linked_of.items():
        members.setdefault(linked_id, []).append(uniqueid)
    for call in calls.values():
        call.linked_id = linked_of.get(call.call_id, call.call_id)
        call.channels = members.get(call.linked_id, [])
    return calls


class _Missing(Exception):
    pass


def _need(m: Message, key: str) -> str:
    value = m.get(key)
    if value is None or value == "":
        raise _Missing(key)
    return value


def _text(m: Message, key: str) -> str:
    value = m.get(key, "")
    return "" if value in UNKNOWN else value


def _member(m: Message) -> str:
    return m.get("MemberName") or _need(m, "Interface")


def _variables(row: Message) -> Message:
    """The `Variable: NAME=value` headers of a Status item (AmiParser joins a repeated
    header's values with a line feed)."""
    pairs = (line.partition("=") for line in row.get("Variable", "").split("\n"))
    return {name: value for name, sep, value in pairs if sep}


def _shutdown_cause(m: Message) -> bool:
    """A SoftHangupRequest's Cause holds AST_SOFTHANGUP_* flags; SHUTDOWN is 1 << 2 (what
    ast_softhangup_all() sets on every channel at `core stop|restart now`)."""
    try:
        return bool(int(m.get("Cause", "0")) & SOFTHANGUP_SHUTDOWN)
    except ValueError:
        return False


def _epoch(text: str) -> float | None:
    """A time or count Asterisk writes, or None when it is empty, 0 or impossible."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value < MAX_SECONDS else None


def _int(m: Message, key: str, out: Mapped) -> int | None:
    value = _float(m, key, out)
    return int(value) if value is not None else None


def _float(m: Message, key: str, out: Mapped) -> float | None:
    value = m.get(key, "")
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or abs(number) > 1e12:
        out.warnings.append(f"{m.get('Event')} {_where(m)}: {key} {value[:40]!r} is not a "
                            "number; left empty")
        return None
    return number


def _where(m: Message) -> str:
    return f"(Uniqueid {m.get('Uniqueid', '-')}, Timestamp {m.get('Timestamp', '-')[:40]})"

