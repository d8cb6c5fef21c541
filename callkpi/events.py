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
# the same second; it ends where the second changes (a clock stepped back starts a new run).
# The queue_log parser and the AMI mapper both call `number_occurrences` on their events in
# stream order, so an event and its twin from the other source get the same key.
OCCURRENCE = "\n"  # never inside a queue_log field (a line ends there), nor an AMI value
_KEY = itemgetter(slice(0, len(KEY_COLUMNS)))


class Occurrences(NamedTuple):
    """How often each natural key has occurred in a stream's current run of one second."""

    tsec: int
    counts: dict[tuple[Any, ...], int]

    @classmethod
    def start(cls) -> "Occurrences":
        """Before a stream's first event."""
        return cls(-1, {})


def number_occurrences(events: Sequence[CallEvent],
                       before: Occurrences) -> tuple[list[CallEvent], Occurrences]:
    """`events` (a stream's next ones, in order) with each repeat of a natural key within a
    run of one second told apart by its occurrence number in `discr`; and the counts after
    them. `before` is what it returned for the events before these (`Occurrences.start()`
    at the start of a stream). Pure: `before` is not changed."""
    # The usual case, no repeat, told by the keys' hashes (a set of ints costs the ingest's hot
    # path less than a set of tuples; docs/queue_log.md): equal hashes only mean the slow way.
    hashes = set(map(hash, map(_KEY, events)))
    if len(hashes) == len(events) and hashes.isdisjoint(map(hash, before.counts)):
        return list(events), _last_run(events, before)
    tsec, counts = before.tsec, dict(before.counts)
    numbered = []
    for event, key in zip(events, map(_KEY, events)):
        if event.tsec != tsec:
            tsec, counts = event.tsec, {}
        n = counts[key] = counts.get(key, 0) + 1
        numbered.append(event if n == 1 else event._replace(discr=f"{event.discr}{OCCURRENCE}{n}"))
    return numbered, Occurrences(tsec, counts)


def _last_run(events: Sequence[CallEvent], before: Occurrences) -> Occurrences:
    """The counts after `events`, none of which repeats a key."""
    if not events:
        return Occurrences(before.tsec, dict(before.counts))
    tsec, i = events[-1].tsec, len(events)
    while i and events[i - 1].tsec == tsec:
        i -= 1
    counts = dict(before.counts) if i == 0 and before.tsec == tsec else {}
    counts.update(dict.fromkeys(map(_KEY, events[i:]), 1))
    return Occurrences(tsec, counts)


def base_discr(discr: str) -> str:
    """`discr` without its occurrence number: the pause reason, node or question it names."""
    return discr.partition(OCCURRENCE)[0]


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
