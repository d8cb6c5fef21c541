"""AMI messages -> canonical events (pure: no I/O, only the per-call state attribution needs).

The keys match what the queue_log parser produces for the same event (docs/events.md), so the
store keeps one copy when both sources run: call_id is the caller channel's Uniqueid, agent the
member name, ts the event's `Timestamp` header (manager.conf `timestampevents = yes`).

State kept per live queue call, and why:
- which channels are bridged to which queue call and agent (AgentConnect's caller Uniqueid and
  DestUniqueid), so a Hold/Unhold on either side is attributed to the caller's queue call;
- whether the caller's channel was asked to hang up (HangupRequest/SoftHangupRequest) before
  `QueueCallerAbandon`: app_queue.c sends that event from record_abandoned(), which queue_exec
  calls for ABANDON (the caller hung up: res < 0), but also for EXITWITHTIMEOUT and EXITEMPTY,
  where the channel is still up and the dialplan carries on. Seen on the sandbox: ABANDON is
  preceded by HangupRequest on the caller channel, EXITWITHTIMEOUT is not;
- each queue's members and their device status (QueueMemberAdded/Removed/Status/Pause, and
  the QueueMember list the listener asks for at login), to tell EXITEMPTY from a timeout:
  with `leavewhenempty`, get_member_status() lets the caller leave when no member counts; a
  queue with no member, or only invalid ones, is empty under every leavewhenempty mode, so
  that is exit-empty; anything else (which depends on the mode) is exit-timeout;
- the caller's entry position (QueueCallerJoin), which AgentComplete does not repeat;
- the last blind/attended transfer on a queue call, which comes just before
  `AgentComplete Reason: transfer`.
Entries go at the channel's Hangup; `MAX_TRACKED` bounds them when Hangups were missed (gaps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from callkpi.events import SOURCE_AMI, CallEvent, CallLink, Kind, make_event
from callkpi.events import Occurrences, number_occurrences

MAX_TRACKED = 100_000
DEVICE_INVALID = "4"  # AST_DEVICE_INVALID in QueueMember* Status
UNKNOWN = ("", "<unknown>", "NONE")  # Asterisk's ways of saying "none"
# Uniqueid headers of BlindTransfer / AttendedTransfer, the queue call's own side first.
TRANSFER_PARTIES = ("TransfererUniqueid", "OrigTransfererUniqueid", "TransfereeUniqueid",
                    "SecondTransfererUniqueid", "TransferTargetUniqueid")

# AMI events that carry nothing we need; the AMI account's event classes (call,agent,user)
# deliver them anyway. Any other event name is unknown and warned about once.
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
    "Shutdown", "Agents", "AgentLogin", "AgentLogoff", "MCID", "Masquerade", "Transfer",
})


@dataclass
class QueueCall:
    """A caller in (or connected from) a queue."""

    call_id: str
    queue: str
    linked_id: str
    entry_position: int | None = None
    agent: str = ""
    hangup_requested: bool = False
    on_hold: bool = False
    transfer: tuple[str, str] | None = None  # (reason, target) of the last transfer


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
        self.channels: dict[str, QueueCall] = {}  # any channel of a queue call -> the call
        self.linked: dict[str, QueueCall] = {}  # linkedid of a live queue call -> the call
        self.members: dict[str, dict[str, str]] = {}  # queue -> member interface -> Status
        self.unknown_seen: set[str] = set()
        self.occurrences = Occurrences()  # keys repeated within a second, as queue_log counts
        self._handlers: dict[str, Callable[[dict[str, str], float, Mapped], None]] = {
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
            "QueueMember": self._member_status,  # the QueueStatus list, at login
            "Hold": self._hold,
            "Unhold": self._unhold,
            "HangupRequest": self._hangup_request,
            "SoftHangupRequest": self._hangup_request,
            "Hangup": self._hangup,
            "Newchannel": self._new_channel,
            "BlindTransfer": self._blind_transfer,
            "AttendedTransfer": self._attended_transfer,
            "UserEvent": self._user_event,
        }

    @property
    def wanted(self) -> frozenset[str]:
        """Event names that can produce something; the listener queues only these."""
        return frozenset(self._handlers)

    def map(self, message: dict[str, str], received_at: float) -> Mapped:
        """One AMI event -> events, links and located warnings. Never raises on bad input."""
        out = Mapped()
        name = message.get("Event", "")
        handler = self._handlers.get(name)
        if handler is None:
            if name not in IGNORED and name not in self.unknown_seen:
                self.unknown_seen.add(name)
                out.warnings.append(f"unknown AMI event {name!r} ignored (warned once)")
            return out
        try:
            handler(message, self._ts(message, received_at, out), out)
        except _Missing as exc:
            out.warnings.append(f"{name} {_where(message)}: missing {exc.args[0]}; skipped")
        except (ValueError, TypeError) as exc:
            out.warnings.append(f"{name} {_where(message)}: {exc}; skipped")
        out.events = number_occurrences(out.events, self.occurrences)
        self._bound()
        return out

    # ------------------------------------------------------------ queue calls
    def _join(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        uid, queue = _need(m, "Uniqueid"), _need(m, "Queue")
        position = _int(m, "Position", out)
        call = QueueCall(uid, queue, m.get("Linkedid") or uid, entry_position=position)
        self._track(call)
        out.events.append(self._event(Kind.ENTER_QUEUE, ts, uid, queue,
                                      caller_number=_text(m, "CallerIDNum"),
                                      caller_name=_text(m, "CallerIDName"), position=position))
        self._link(uid, call.linked_id, ts, out)

    def _leave(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        # Sent for every way out of the queue (connect, abandon, timeout, key, withdraw) and
        # before AgentConnect: it carries no outcome. Exit-key and withdraw come from queue_log.
        _need(m, "Uniqueid")

    def _abandon(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        uid, queue = _need(m, "Uniqueid"), _need(m, "Queue")
        call = self.calls.get(uid)
        if call is not None and call.hangup_requested:
            kind = Kind.ABANDON
        elif self._empty(queue):
            kind = Kind.EXIT_EMPTY
        else:
            kind = Kind.EXIT_TIMEOUT
        orig = _int(m, "OriginalPosition", out) if "OriginalPosition" in m else None
        out.events.append(self._event(
            kind, ts, uid, queue, wait_s=_float(m, "HoldTime", out),
            position=_int(m, "Position", out),
            orig_position=orig if orig is not None else (call.entry_position if call else None)))

    def _connect(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        uid, queue, agent = self._caller_uid(m), _need(m, "Queue"), _member(m)
        call = self._call(uid, queue, m)
        call.agent = agent
        member_uid = m.get("DestUniqueid", "")
        extra = {}
        if member_uid:
            self.channels[member_uid] = call
            extra["member_uniqueid"] = member_uid
            self._link(member_uid, m.get("DestLinkedid") or call.linked_id, ts, out)
        out.events.append(self._event(Kind.CONNECT, ts, uid, queue, agent,
                                      wait_s=_float(m, "HoldTime", out),
                                      ring_s=_float(m, "RingTime", out), extra=extra))

    def _complete(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        uid, queue, agent = self._caller_uid(m), _need(m, "Queue"), _member(m)
        call = self.calls.get(uid)
        fields = dict(wait_s=_float(m, "HoldTime", out), talk_s=_float(m, "TalkTime", out),
                      orig_position=call.entry_position if call else None)
        reason = m.get("Reason", "")
        if reason == "transfer":
            how, target = (call.transfer if call and call.transfer else ("", ""))
            out.events.append(self._event(Kind.TRANSFER, ts, uid, queue, agent, reason=how,
                                          value=target, **fields))
        else:
            out.events.append(self._event(Kind.COMPLETE, ts, uid, queue, agent, reason=reason,
                                          **fields))

    def _ring_no_answer(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        ring_ms = _float(m, "RingTime", out)
        out.events.append(self._event(
            Kind.RING_NO_ANSWER, ts, self._caller_uid(m), _need(m, "Queue"), _member(m),
            ring_s=ring_ms / 1000 if ring_ms is not None else None))

    def _dump(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        # queue_log writes AGENTDUMP, which has no kind of its own: it is a `custom` event.
        out.events.append(self._event(Kind.CUSTOM, ts, self._caller_uid(m), _need(m, "Queue"),
                                      _member(m), value="AGENTDUMP"))

    # ------------------------------------------------------------ members
    def _empty(self, queue: str) -> bool:
        members = self.members.get(queue)
        return members is not None and all(s == DEVICE_INVALID for s in members.values())

    def _member_status(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        queue = _need(m, "Queue")
        interface = m.get("Interface") or _need(m, "Location")
        self.members.setdefault(queue, {})[interface] = m.get("Status", "")

    def _member_added(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        self._member_status(m, ts, out)
        paused = m.get("Paused") == "1"
        out.events.append(self._event(Kind.MEMBER_ADD, ts, "", _need(m, "Queue"), _member(m),
                                      reason="paused" if paused else ""))

    def _member_removed(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        self.members.setdefault(_need(m, "Queue"), {}).pop(_need(m, "Interface"), None)
        out.events.append(self._event(Kind.MEMBER_REMOVE, ts, "", _need(m, "Queue"), _member(m)))

    def _member_pause(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        self._member_status(m, ts, out)
        reason = _text(m, "PausedReason")
        if _need(m, "Paused") == "1":
            out.events.append(self._event(Kind.PAUSE, ts, "", _need(m, "Queue"), _member(m),
                                          discr=reason, reason=reason))
        else:
            # AMI's unpause reason is unreliable (asterisk#395): kept, but never in the key.
            out.events.append(self._event(Kind.UNPAUSE, ts, "", _need(m, "Queue"), _member(m),
                                          reason=reason))

    # ------------------------------------------------------------ channels
    def _hold(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        call = self.channels.get(_need(m, "Uniqueid"))
        if call is None or not call.agent or call.on_hold:
            return  # not a connected queue call, or already on hold from the other side
        call.on_hold = True
        out.events.append(self._event(Kind.HOLD, ts, call.call_id, call.queue, call.agent))

    def _unhold(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        call = self.channels.get(_need(m, "Uniqueid"))
        if call is None or not call.on_hold:
            return  # e.g. the Unhold a blind transfer sends without any Hold
        call.on_hold = False
        out.events.append(self._event(Kind.UNHOLD, ts, call.call_id, call.queue, call.agent))

    def _hangup_request(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        call = self.calls.get(_need(m, "Uniqueid"))
        if call is not None:
            call.hangup_requested = True

    def _hangup(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        uid = _need(m, "Uniqueid")
        call = self.channels.pop(uid, None)
        if call is None:
            return
        self._link(uid, m.get("Linkedid") or call.linked_id, ts, out)
        if uid == call.call_id:
            self.calls.pop(uid, None)
            if self.linked.get(call.linked_id) is call:
                del self.linked[call.linked_id]

    def _new_channel(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        # A channel created into a live queue call (a transfer target, a consultation call)
        # joins it: its Hold/Unhold and its link then follow the call.
        uid, linked = _need(m, "Uniqueid"), m.get("Linkedid", "")
        call = self.linked.get(linked)
        if call is not None and uid not in self.channels:
            self.channels[uid] = call
            self._link(uid, linked, ts, out)

    def _blind_transfer(self, m: dict[str, str], ts: float, out: Mapped) -> None:
        call = self._transfer_call(m)
        if call is not None:
            call.transfer = ("blind", f"{m.get('Extension', '')}@{m.get('Context', '')}")

    def _attended_transfer(self, m: dict[str, str], ts: float, out: Mapped) -> None:
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

    def _transfer_call(self, m: dict[str, str]) -> QueueCall | None:
        """The queue call one of the transfer's parties belongs to."""
        for key in TRANSFER_PARTIES:
            call = self.channels.get(m.get(key, ""))
            if call is not None:
                return call
        return None

    # ------------------------------------------------------------ our dialplan's UserEvents
    def _user_event(self, m: dict[str, str], ts: float, out: Mapped) -> None:
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

    # ------------------------------------------------------------ helpers
    def _caller_uid(self, m: dict[str, str]) -> str:
        """The caller's Uniqueid of an Agent* event. When the caller's channel is already gone
        (it hung up: AgentComplete with Reason caller), app_queue.c publishes the event
        without the caller's snapshot, so only the member's Dest* fields are there (seen on
        Asterisk 22): the member channel then names the call."""
        if uid := m.get("Uniqueid"):
            return uid
        call = self.channels.get(m.get("DestUniqueid", ""))
        if call is None:
            raise _Missing("Uniqueid")
        return call.call_id

    def _call(self, uid: str, queue: str, m: dict[str, str]) -> QueueCall:
        """The queue call of a caller channel, created if its join was not seen (a gap)."""
        call = self.calls.get(uid)
        if call is None:
            call = QueueCall(uid, queue, m.get("Linkedid") or uid)
            self._track(call)
        return call

    def _track(self, call: QueueCall) -> None:
        self.calls[call.call_id] = self.channels[call.call_id] = call
        self.linked[call.linked_id] = call

    def _event(self, kind: str, ts: float, call_id: str, queue: str, agent: str = "",
               *, discr: str = "", extra: dict | None = None, **data) -> CallEvent:
        return make_event(server=self.server, kind=kind, ts=ts, source=SOURCE_AMI,
                          call_id=call_id, queue=queue, agent=agent, discr=discr,
                          extra=extra, **data)

    def _link(self, uid: str, linked_id: str, ts: float, out: Mapped) -> None:
        out.links.append(CallLink(self.server, uid, linked_id or uid, ts))

    def _ts(self, m: dict[str, str], received_at: float, out: Mapped) -> float:
        stamp = m.get("Timestamp")
        if stamp is None:
            return received_at
        try:
            return float(stamp)
        except ValueError:
            out.warnings.append(f"{m.get('Event')} {_where(m)}: bad Timestamp {stamp[:40]!r}; "
                                "using the time received")
            return received_at

    def _bound(self) -> None:
        for table in (self.channels, self.calls, self.linked):
            while len(table) > MAX_TRACKED:
                del table[next(iter(table))]  # the oldest entry (dicts keep insertion order)


class _Missing(Exception):
    pass


def _need(m: dict[str, str], key: str) -> str:
    value = m.get(key)
    if value is None or value == "":
        raise _Missing(key)
    return value


def _text(m: dict[str, str], key: str) -> str:
    value = m.get(key, "")
    return "" if value in UNKNOWN else value


def _member(m: dict[str, str]) -> str:
    return m.get("MemberName") or _need(m, "Interface")


def _int(m: dict[str, str], key: str, out: Mapped) -> int | None:
    value = _float(m, key, out)
    return int(value) if value is not None else None


def _float(m: dict[str, str], key: str, out: Mapped) -> float | None:
    value = m.get(key, "")
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number != number or abs(number) > 1e12:
        out.warnings.append(f"{m.get('Event')} {_where(m)}: {key} {value[:40]!r} is not a "
                            "number; left empty")
        return None
    return number


def _where(m: dict[str, str]) -> str:
    return f"(Uniqueid {m.get('Uniqueid', '-')}, Timestamp {m.get('Timestamp', '-')[:40]})"

