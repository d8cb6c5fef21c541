"""The canonical call event: what every source (queue_log, AMI, the AGI survey) produces.

One `CallEvent` is one thing that happened to a queue call, a queue member or the PBX.
Its field order is the column order of the store's `events` table, so a batch of events is
handed to the database as it is, with no per-event conversion on the hot ingest path.

Natural key: ``(server, call_id, kind, queue, agent, tsec, discr)``. Ingesting the same event
twice stores it once, and the same queue event seen by AMI and by queue_log has the same key
(both carry the second Asterisk stamped it with). ``discr`` is a kind-specific,
source-independent discriminator: the pause reason of a `pause`, the question of a
`survey-answer`, the node of an `ivr-exit`; empty for most kinds. An event that really happens
twice in one second with the same key (a caller re-entering an empty queue) is told apart by
its occurrence (`number_occurrences`), which both sources count the same way.

"None" is always the empty string, never NULL (Asterisk writes ``NONE``): NULLs would make
two copies of the same event distinct under a UNIQUE index.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple, Sequence


class Kind:
    """Event kinds. Plain strings (not an Enum) because they go straight into SQLite."""

    # a caller in a queue
    ENTER_QUEUE = "enter-queue"
    RING_NO_ANSWER = "ring-no-answer"
    RING_CANCELED = "ring-canceled"
    CONNECT = "connect"
    COMPLETE = "complete"  # reason: "agent" | "caller" (who hung up)
    ABANDON = "abandon"
    EXIT_TIMEOUT = "exit-timeout"
    EXIT_KEY = "exit-key"  # value: the key pressed
    EXIT_EMPTY = "exit-empty"
    WITHDRAW = "withdraw"
    TRANSFER = "transfer"  # reason: "blind" | "attended" | "legacy"; value: the target
    # an agent with a call
    HOLD = "hold"
    UNHOLD = "unhold"
    DISPOSITION = "disposition"  # value: the code the agent set
    # a queue member
    PAUSE = "pause"  # reason / discr: the pause reason
    UNPAUSE = "unpause"
    PAUSE_ALL = "pause-all"
    UNPAUSE_ALL = "unpause-all"
    MEMBER_ADD = "member-add"
    MEMBER_REMOVE = "member-remove"
    AGENT_LOGIN = "agent-login"
    AGENT_LOGOFF = "agent-logoff"
    PENALTY = "penalty"
    RING_IN_USE = "ring-in-use"
    # what Asterisk says a member is now (AMI QueueMember at login, QueueMemberStatus): evidence
    # of a session and pause the log may never have shown starting (static members, members
    # restored by persistentmembers). reason "paused" or ""; value: the pause reason
    MEMBER_STATE = "member-state"
    # the IVR and the survey
    IVR_EXIT = "ivr-exit"  # value: self-service | to-queue | hangup; discr: the IVR node
    SURVEY_ANSWER = "survey-answer"  # discr: question; value: digit; reason: answer status
    # the PBX and the collectors
    QUEUE_START = "queue-start"
    SHUTDOWN = "shutdown"  # AMI Shutdown: reason cleanly | uncleanly; value "restart" or ""
    CONFIG_RELOAD = "config-reload"
    SYSCOMPAT = "syscompat"
    DID = "did"  # value: the DID dialled
    INFO = "info"
    CUSTOM = "custom"  # value: the event name a dialplan QueueLog() wrote
    AMI_GAP = "ami-gap"  # the listener was not connected from ts to ts + talk_s


ALL_KINDS = frozenset(v for k, v in vars(Kind).items() if not k.startswith("_"))

# Which source wins when two sources report the same event: queue_log is the record Asterisk
# keeps on disk, so it is the source of truth; AMI fills in what queue_log never has (hold).
SOURCE_QUEUE_LOG = "queue_log"
SOURCE_AMI = "ami"
SOURCE_AGI = "agi"
SOURCE_MANUAL = "manual"


class CallEvent(NamedTuple):
    server: str
    call_id: str
    kind: str
    queue: str
    agent: str
    tsec: int  # int(ts): the second, part of the natural key
    discr: str
    ts: float  # epoch seconds (fractional where the source has it)
    source: str
    wait_s: float | None = None
    talk_s: float | None = None
    ring_s: float | None = None
    position: int | None = None
    orig_position: int | None = None
    reason: str = ""
    caller_number: str = ""
    caller_name: str = ""
    value: str = ""
    extra: str = ""  # JSON object text for data with no typed column, "" when none

    def extra_dict(self) -> dict[str, Any]:
        return json.loads(self.extra) if self.extra else {}


COLUMNS = CallEvent._fields
KEY_COLUMNS = ("server", "call_id", "kind", "queue", "agent", "tsec", "discr")


def make_event(
    *,
    server: str,
    kind: str,
    ts: float,
    source: str,
    call_id: str = "",
    queue: str = "",
    agent: str = "",
    discr: str = "",
    extra: dict[str, Any] | None = None,
    **data: Any,
) -> CallEvent:
    """Build an event by name (the readable way, for every path that is not a bulk parser)."""
    if kind not in ALL_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    return CallEvent(
        server=server,
        call_id=call_id,
        kind=kind,
        queue=queue,
        agent=agent,
        tsec=int(ts),
        discr=discr,
        ts=ts,
        source=source,
        extra=json.dumps(extra, separators=(",", ":"), sort_keys=True) if extra else "",
        **data,
    )


# ---------------------------------------------------------------- occurrences
# Asterisk can write the same line twice in one second and mean it: a caller re-entering an
# empty queue logs ENTERQUEUE and EXITEMPTY again (recorded on Asterisk 22.10.1:
# examples/recordings/reenter_empty.*). Both are events, and re-reading the log must still
# store each once, so the n-th event (n >= 2) with the same natural key within one run of a
# second is given `discr + OCCURRENCE + n`. A run is a stream's consecutive events stamped with
# the same second; it ends where the second changes (a clock stepped back starts a new run),
# and its count starts again every MAX_RUN events, so a flood of one second (a hostile file,
# an AMI peer with a stuck clock) cannot make the count's memory grow without end.
# The queue_log parser and the AMI mapper both call `number_occurrences` on their events in
# stream order, so an event and its twin from the other source get the same key.
OCCURRENCE = "\n"  # never inside a queue_log field (a line ends there), nor an AMI value
MAX_RUN = 1 << 16  # events of one second counted together (Asterisk writes far fewer)
_KEY = itemgetter(slice(0, len(KEY_COLUMNS)))
Key = tuple[Any, ...]


@dataclass
class Occurrences:
    """Where a stream is in its current second: what `number_occurrences` advances."""

    tsec: int = -1
    run: int = 0  # events of that second so far
    counts: dict[Key, int] = field(default_factory=dict)  # per key, in the current stretch

    def copy(self) -> "Occurrences":
        return Occurrences(self.tsec, self.run, dict(self.counts))

    @classmethod
    def after(cls, tsec: int, run: int, newest_first: Sequence[Key]) -> "Occurrences":
        """After the first `run` events of second `tsec`, whose keys, newest first, are
        `newest_first` (at least the last `run % MAX_RUN` of them)."""
        return cls(tsec, run, dict(Counter(newest_first[:run % MAX_RUN])))

    def then(self, tsec: int, run: int, newest_first: Sequence[Key],
             whole: bool) -> "Occurrences":
        """Where the stream is after more events, told by the last second among them alone:
        its `run` events of second `tsec`, their keys newest first (the newest MAX_RUN will
        do), and whether they are `whole`, all the events there were since this state. What
        the stream's reader needs who leaves the numbering of the rest to another process."""
        if not run:
            return self
        if not (whole and tsec == self.tsec):
            return Occurrences.after(tsec, run, newest_first)
        total = self.run + run  # they go on with this second
        if total % MAX_RUN <= run:  # and its count started again among them
            return Occurrences.after(tsec, total, newest_first)
        return Occurrences(tsec, total, dict(Counter(self.counts) + Counter(newest_first)))


def number_occurrences(events: Sequence[CallEvent], seen: Occurrences) -> list[CallEvent]:
    """`events` (a stream's next ones, in order) with each repeat of a natural key within a
    run of one second told apart by its occurrence number in `discr`. `seen` is the
    stream's own state, advanced past them: no I/O, nothing else, so both sources, given
    the same events in the same order, number them alike."""
    if not events:
        return []
    last = len(events)  # where the last second of `events` starts
    while last and events[last - 1].tsec == events[-1].tsec:
        last -= 1
    going_on = events[0].tsec == seen.tsec  # the first events go on with seen's second
    # The usual case, no repeat, told by the keys' hashes (a set of ints costs the ingest's hot
    # path less than a set of tuples; docs/queue_log.md): equal hashes only mean the slow way.
    if (len(set(map(hash, map(_KEY, events)))) == len(events)
            and not (going_on and _repeats(events, seen))):
        if last or not going_on:
            seen.tsec, seen.run, seen.counts = events[-1].tsec, 0, {}
        _count(events[last:], seen)  # only the last second's events count from here on
        return list(events)
    numbered: list[CallEvent] = []
    _count(events, seen, numbered)
    return numbered


def _repeats(events: Sequence[CallEvent], seen: Occurrences) -> bool:
    """Does an event going on with seen's second repeat a key counted there?"""
    for event in events:
        if event.tsec != seen.tsec:
            return False
        if _KEY(event) in seen.counts:
            return True
    return False


def _count(events: Sequence[CallEvent], seen: Occurrences,
           numbered: list[CallEvent] | None = None) -> None:
    for event in events:
        key = _KEY(event)
        if event.tsec != seen.tsec:
            seen.tsec, seen.run, seen.counts = event.tsec, 0, {}
        seen.run += 1
        n = seen.counts[key] = seen.counts.get(key, 0) + 1
        if seen.run % MAX_RUN == 0:  # a stretch is full: the next event starts a new count
            seen.counts = {}
        if numbered is not None:
            numbered.append(event if n == 1 else
                            event._replace(discr=f"{event.discr}{OCCURRENCE}{n}"))


def base_discr(discr: str) -> str:
    """`discr` without its occurrence number: the pause reason, node or question it names."""
    return discr.partition(OCCURRENCE)[0]


def occurrence(discr: str) -> int:
    """Which repeat of its key within its second an event is: 1 for the first."""
    number = discr.partition(OCCURRENCE)[2]
    return int(number) if number else 1


class Quarantined(NamedTuple):
    """Input that could not become an event, kept with where it came from and why."""

    source: str  # queue_log | ami | agi
    origin: str  # file path, "host:port", ...
    position: int  # byte offset in the file, or a sequence number on a socket
    line_no: int  # 1-based line number where there is one, else 0
    reason: str
    raw: str  # the input as text (undecodable bytes backslash-escaped)
    received_at: float


class Checkpoint(NamedTuple):
    """How far a file stream has been read durably. Written with the events read before it."""

    stream: str  # the followed path
    file_id: str  # identity of the file being read (device:inode)
    head: str  # digest of the first bytes, to tell a new file reusing an inode
    offset: int  # byte offset after the last complete line stored
    line_no: int  # lines consumed so far in this file
    updated_at: float


class CallLink(NamedTuple):
    """A channel's uniqueid and the linkedid of the call it belongs to (from AMI)."""

    server: str
    uniqueid: str
    linked_id: str
    ts: float
