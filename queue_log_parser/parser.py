"""One queue_log line -> one `CallEvent`, or the reason it cannot be one (pure, no I/O).

The line layout (main/logger.c, ast_queue_log): ``epoch|callid|queue|agent|event|data``;
``data`` is whatever the event's format string in apps/app_queue.c wrote, itself
``|``-separated. docs/queue_log.md has every event's fields across Asterisk versions and where
they come from.

Caller-controlled text (caller ID, URL, a dialplan's QueueLog data) can contain ``|``, so
each layout is read from its fixed ends: the fields Asterisk formats as numbers are taken from
the right and the free text is what is left in the middle, joined back. A line whose numeric
fields do not parse is rejected with the reason (the caller quarantines it), never shifted.

This is the ingest hot path: events are built positionally (``CallEvent`` field order), with
one handler per event name and no per-line keyword arguments.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from callkpi.events import SOURCE_QUEUE_LOG, CallEvent, Kind

# Asterisk's placeholders for "none" in the callid/queue/agent fields.
NONE_VALUES = frozenset({"NONE", "MANAGER"})
MAX_SECONDS = 1e11  # an epoch or duration beyond this is junk, not a time
_new = tuple.__new__  # builds a CallEvent from a tuple without NamedTuple's keyword handling


class BadLine(Exception):
    """The line cannot become an event; args[0] says why."""


Handler = Callable[[str, str, str, str, int, float, list[str]], CallEvent]


class LineParser:
    """Parses lines of one PBX's queue_log (the server name goes into every event)."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._handlers: dict[str, Handler] = _handlers()

    def parse(self, line: str) -> CallEvent:
        """The event of one line (without its newline); raises BadLine with the reason."""
        fields = line.split("|")
        if len(fields) < 5:
            raise BadLine(f"{len(fields)} fields, a queue_log line has at least 5")
        epoch, call_id, queue, agent, name = fields[:5]
        ts = _epoch(epoch)
        if call_id in NONE_VALUES:
            call_id = ""
        if queue in NONE_VALUES:
            queue = ""
        if agent in NONE_VALUES:
            agent = ""
        if not name:
            raise BadLine("no event name")
        handler = self._handlers.get(name)
        if handler is None:
            return _custom(self.server, call_id, queue, agent, int(ts), ts, fields[5:], name)
        return handler(self.server, call_id, queue, agent, int(ts), ts, fields[5:])


# ---------------------------------------------------------------- numbers
# Numbers are what Asterisk's format strings write: ASCII digits, a sign, a fraction in a
# timestamp. Python's int() and float() take more ("٣", " 3", "3_0", "1e5", "inf"), and a
# number SQLite cannot hold would stop every write of its batch, so each one is checked
# and bounded: a line with a number outside its range is quarantined, never stored.
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
MAX_POSITION = 2**31 - 1  # a position is a C int ("%d")


def _epoch(text: str) -> float:
    # (each check inline, the usual case first: this runs for every line)
    if not (text.isdigit() and text.isascii() or _is_decimal(text)):
        raise BadLine(f"timestamp {text[:40]!r} is not a number")
    ts = float(text)
    if not 0 <= ts < MAX_SECONDS:
        raise BadLine(f"timestamp {text[:40]!r} is out of range")
    return ts


def _seconds(text: str, what: str) -> float | None:
    """A duration field; empty is "not recorded" (seen in production ABANDON lines)."""
    if not text:
        return None
    if not (text.isdigit() and text.isascii() or _is_decimal(text)):
        raise BadLine(f"{what} {text[:40]!r} is not a number")
    value = float(text)
    if not -MAX_SECONDS < value < MAX_SECONDS:
        raise BadLine(f"{what} {text[:40]!r} is out of range")
    return value


def _int(text: str, what: str) -> int | None:
    """A position field; empty is "not recorded"."""
    if not text:
        return None
    if _is_position(text):
        return int(text)
    if _is_int(text.removeprefix("-")):
        raise BadLine(f"{what} {text[:40]!r} is out of range")
    raise BadLine(f"{what} {text[:40]!r} is not a whole number")


def _is_decimal(text: str) -> bool:
    return text.isascii() and _DECIMAL.fullmatch(text) is not None


def _is_int(text: str) -> bool:
    return text.isdigit() and text.isascii()


def _is_position(text: str) -> bool:
    return text.isdigit() and text.isascii() and (len(text) < 10 or int(text) <= MAX_POSITION)


def _at(data: list[str], i: int) -> str:
    return data[i] if i < len(data) else ""


def _trim(data: list[str], n: int) -> list[str]:
    """Drop empty trailing fields beyond `n` (logs exported from a data1..data5 table pad
    the line with empty data fields)."""
    while len(data) > n and data[-1] == "":
        data = data[:-1]
    return data


def _extra_data(data: list[str]) -> str:
    return json.dumps({"data": data}, separators=(",", ":"))


# ---------------------------------------------------------------- a caller in a queue
def _enter_queue(s: str, c: str, q: str, a: str, tsec: int, ts: float,
                 d: list[str]) -> CallEvent:
    # 1.4: url|callerid; 1.8..22.3: url|callerid|position; 20.14/21.9/22.4+ add |callername
    # (its own '|' replaced by '_', so it is one field). The URL is first; the caller
    # number may contain '|': it is whatever lies between the URL and the position.
    d = _trim(d, 3)
    name = ""
    if len(d) < 3:
        number, position = _at(d, 1), None
    elif len(d) == 3:
        number, position = d[1], _int(d[2], "position")
    elif _is_position(d[-1]) and not (len(d) == 4 and _is_position(d[2])):
        number, position = "|".join(d[1:-1]), int(d[-1])
    else:
        name = d[-1]
        number, position = "|".join(d[1:-2]), _int(d[-2], "position")
    extra = json.dumps({"url": d[0]}, separators=(",", ":")) if d and d[0] else ""
    return _new(CallEvent, (s, c, Kind.ENTER_QUEUE, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                            None, None, None, position, None, "", number, name, "", extra))


def _ringer(kind: str) -> Handler:
    """RINGNOANSWER / RINGCANCELED: ringtime, in milliseconds."""

    def ring(s: str, c: str, q: str, a: str, tsec: int, ts: float, d: list[str]) -> CallEvent:
        ms = _seconds(_at(d, 0), "ring time")
        return _new(CallEvent, (s, c, kind, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                                None, None, ms / 1000 if ms is not None else None, None, None,
                                "", "", "", "", ""))

    return ring


def _connect(s: str, c: str, q: str, a: str, tsec: int, ts: float,
             d: list[str]) -> CallEvent:
    # holdtime|member uniqueid[|ringtime] (ring time since 1.6; seconds)
    wait = _seconds(_at(d, 0), "wait")
    ring = _seconds(_at(d, 2), "ring time")
    member = _at(d, 1)
    extra = json.dumps({"member_uniqueid": member}, separators=(",", ":")) if member else ""
    return _new(CallEvent, (s, c, Kind.CONNECT, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                            wait, None, ring, None, None, "", "", "", "", extra))


def _completer(reason: str) -> Handler:
    def complete(s: str, c: str, q: str, a: str, tsec: int, ts: float,
                 d: list[str]) -> CallEvent:
        # holdtime|calltime|origposition
        return _new(CallEvent, (s, c, Kind.COMPLETE, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                                _seconds(_at(d, 0), "wait"), _seconds(_at(d, 1), "talk time"),
                                None, None, _int(_at(d, 2), "original position"),
                                reason, "", "", "", ""))
    return complete


def _transfer(reason: str, target: Callable[[list[str]], str]) -> Handler:
    def transfer(s: str, c: str, q: str, a: str, tsec: int, ts: float,
                 d: list[str]) -> CallEvent:
        # <target fields>|holdtime|calltime|origposition: the numbers are the last three
        d = _trim(d, 5)
        if len(d) < 4:
            raise BadLine(f"{len(d)} data fields, a transfer has at least 4")
        return _new(CallEvent, (s, c, Kind.TRANSFER, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                                _seconds(d[-3], "wait"), _seconds(d[-2], "talk time"), None,
                                None, _int(d[-1], "original position"), reason, "", "",
                                target(d[:-3]), ""))
    return transfer


def _exten_at_context(target: list[str]) -> str:
    # TRANSFER / BLINDTRANSFER: exten|context (as AMI's BlindTransfer Extension@Context)
    return f"{target[0]}@{'|'.join(target[1:])}"


def _attended_target(target: list[str]) -> str:
    # ATTENDEDTRANSFER: BRIDGE|bridge id, APP|app, LINK|chan1|chan2 (as AMI's DestType)
    return f"{target[0]}:{','.join(target[1:])}"


def _exiter(kind: str) -> Handler:
    def exit_(s: str, c: str, q: str, a: str, tsec: int, ts: float,
              d: list[str]) -> CallEvent:
        # ABANDON / EXITWITHTIMEOUT / EXITEMPTY: position|origposition|waittime
        return _new(CallEvent, (s, c, kind, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                                _seconds(_at(d, 2), "wait"), None, None,
                                _int(_at(d, 0), "position"),
                                _int(_at(d, 1), "original position"), "", "", "", "", ""))
    return exit_


def _exit_with_key(s: str, c: str, q: str, a: str, tsec: int, ts: float,
                   d: list[str]) -> CallEvent:
    # key|position|origposition|waittime (1.4: key|position)
    return _new(CallEvent, (s, c, Kind.EXIT_KEY, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                            _seconds(_at(d, 3), "wait"), None, None, _int(_at(d, 1), "position"),
                            _int(_at(d, 2), "original position"), "", "", "", _at(d, 0), ""))


def _withdraw(s: str, c: str, q: str, a: str, tsec: int, ts: float,
              d: list[str]) -> CallEvent:
    # position|origposition|waittime|withdraw info (free text: the rest, joined back)
    return _new(CallEvent, (s, c, Kind.WITHDRAW, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                            _seconds(_at(d, 2), "wait"), None, None, _int(_at(d, 0), "position"),
                            _int(_at(d, 1), "original position"), "", "", "",
                            "|".join(d[3:]), ""))


# ---------------------------------------------------------------- members and the PBX
def _reasoned(kind: str, keyed: bool) -> Handler:
    def member(s: str, c: str, q: str, a: str, tsec: int, ts: float,
               d: list[str]) -> CallEvent:
        # PAUSE/UNPAUSE/PAUSEALL/UNPAUSEALL: reason (free text, may contain '|')
        reason = "|".join(d)
        return _new(CallEvent, (s, c, kind, q, a, tsec, reason if keyed else "", ts,
                                SOURCE_QUEUE_LOG, None, None, None, None, None, reason, "", "",
                                "", ""))
    return member


def _member_add(s: str, c: str, q: str, a: str, tsec: int, ts: float,
                d: list[str]) -> CallEvent:
    # ADDMEMBER: "PAUSED" when the member was added paused, else empty
    reason = "paused" if _at(d, 0).upper() == "PAUSED" else ""
    return _new(CallEvent, (s, c, Kind.MEMBER_ADD, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                            None, None, None, None, None, reason, "", "", "", ""))


def _valued(kind: str) -> Handler:
    def valued(s: str, c: str, q: str, a: str, tsec: int, ts: float,
               d: list[str]) -> CallEvent:
        # one free-text field: AGENTLOGIN channel, PENALTY, RINGINUSE, DID, DISPOSITION code
        return _new(CallEvent, (s, c, kind, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                                None, None, None, None, None, "", "", "", "|".join(d), ""))
    return valued


def _agent_logoff(s: str, c: str, q: str, a: str, tsec: int, ts: float,
                  d: list[str]) -> CallEvent:
    # AGENTLOGOFF channel|logintime; AGENTCALLBACKLOGOFF exten@context|logintime|reason
    return _new(CallEvent, (s, c, Kind.AGENT_LOGOFF, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                            None, _seconds(_at(d, 1), "login time"), None, None, None,
                            "|".join(d[2:]), "", "", _at(d, 0), ""))


def _plain(kind: str) -> Handler:
    def plain(s: str, c: str, q: str, a: str, tsec: int, ts: float,
              d: list[str]) -> CallEvent:
        # QUEUESTART, CONFIGRELOAD, SYSCOMPAT: no data
        return _new(CallEvent, (s, c, kind, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                                None, None, None, None, None, "", "", "", "", ""))
    return plain


def _info(s: str, c: str, q: str, a: str, tsec: int, ts: float, d: list[str]) -> CallEvent:
    return _new(CallEvent, (s, c, Kind.INFO, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                            None, None, None, None, None, "", "", "", _at(d, 0),
                            _extra_data(d)))


def _ivr_exit(s: str, c: str, q: str, a: str, tsec: int, ts: float,
              d: list[str]) -> CallEvent:
    # our dialplan's QueueLog(NONE,${UNIQUEID},NONE,IVREXIT,outcome|node|target queue):
    # keyed as AMI's UserEvent IVRExit (queue = the target queue, discr = the node)
    return _new(CallEvent, (s, c, Kind.IVR_EXIT, _at(d, 2), a, tsec, _at(d, 1), ts,
                            SOURCE_QUEUE_LOG, None, None, None, None, None, "", "", "",
                            _at(d, 0), ""))


def _agent_dump(s: str, c: str, q: str, a: str, tsec: int, ts: float,
                d: list[str]) -> CallEvent:
    # no kind of its own: a custom event, as the AMI listener keys AgentDump
    return _new(CallEvent, (s, c, Kind.CUSTOM, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                            None, None, None, None, None, "", "", "", "AGENTDUMP", ""))


def _custom(s: str, c: str, q: str, a: str, tsec: int, ts: float, d: list[str],
            name: str) -> CallEvent:
    """Any other event name: a dialplan's QueueLog(), QueueMetrics, Wazo, a newer Asterisk."""
    return _new(CallEvent, (s, c, Kind.CUSTOM, q, a, tsec, "", ts, SOURCE_QUEUE_LOG,
                            None, None, None, None, None, "", "", "", name, _extra_data(d)))


def _handlers() -> dict[str, Handler]:
    return {
        "ENTERQUEUE": _enter_queue,
        "RINGNOANSWER": _ringer(Kind.RING_NO_ANSWER),
        "RINGCANCELED": _ringer(Kind.RING_CANCELED),
        "CONNECT": _connect,
        "COMPLETEAGENT": _completer("agent"),
        "COMPLETECALLER": _completer("caller"),
        "TRANSFER": _transfer("legacy", _exten_at_context),
        "BLINDTRANSFER": _transfer("blind", _exten_at_context),
        "ATTENDEDTRANSFER": _transfer("attended", _attended_target),
        "ABANDON": _exiter(Kind.ABANDON),
        "EXITWITHTIMEOUT": _exiter(Kind.EXIT_TIMEOUT),
        "EXITEMPTY": _exiter(Kind.EXIT_EMPTY),
        "EXITWITHKEY": _exit_with_key,
        "WITHDRAW": _withdraw,
        "PAUSE": _reasoned(Kind.PAUSE, keyed=True),
        "UNPAUSE": _reasoned(Kind.UNPAUSE, keyed=False),
        "PAUSEALL": _reasoned(Kind.PAUSE_ALL, keyed=True),
        "UNPAUSEALL": _reasoned(Kind.UNPAUSE_ALL, keyed=True),
        "ADDMEMBER": _member_add,
        "REMOVEMEMBER": _plain(Kind.MEMBER_REMOVE),
        "AGENTLOGIN": _valued(Kind.AGENT_LOGIN),
        "AGENTCALLBACKLOGIN": _valued(Kind.AGENT_LOGIN),
        "AGENTLOGOFF": _agent_logoff,
        "AGENTCALLBACKLOGOFF": _agent_logoff,
        "PENALTY": _valued(Kind.PENALTY),
        "RINGINUSE": _valued(Kind.RING_IN_USE),
        "QUEUESTART": _plain(Kind.QUEUE_START),
        "CONFIGRELOAD": _plain(Kind.CONFIG_RELOAD),
        "SYSCOMPAT": _plain(Kind.SYSCOMPAT),
        "DID": _valued(Kind.DID),
        "INFO": _info,
        "IVREXIT": _ivr_exit,
        "DISPOSITION": _valued(Kind.DISPOSITION),
        "AGENTDUMP": _agent_dump,
    }
