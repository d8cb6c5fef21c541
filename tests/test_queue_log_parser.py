"""queue_log lines -> canonical events: every event type, from real Asterisk output where
Asterisk wrote it here (samples recorded on Asterisk 22.10.1, examples/), else from the
format strings of apps/app_queue.c (docs/queue_log.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callkpi.events import KEY_COLUMNS, Kind
from queue_log_parser.parser import BadLine, LineParser

SAMPLES = Path(__file__).parent.parent / "examples" / "recordings"
EXAMPLES = Path(__file__).parent.parent / "examples"


def parse(line: str):
    return LineParser("pbx").parse(line)


def real_line(event: str, contains: str = "") -> str:
    """A line Asterisk wrote, from the recordings that ship with the repo or beside it."""
    files = [EXAMPLES / "queue_log.sample", *sorted(SAMPLES.glob("*.queue_log"))]
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if line.split("|")[4] == event and contains in line:
                return line
    raise AssertionError(f"no recorded {event} line")


def fields(event, *names):
    return tuple(getattr(event, n) for n in names)


def test_every_recorded_line_parses():
    lines = (EXAMPLES / "queue_log.sample").read_text().splitlines()
    lines += [line for p in SAMPLES.glob("*.queue_log") for line in p.read_text().splitlines()]
    assert len(lines) > 100
    events = [parse(line) for line in lines]
    assert all(e.source == "queue_log" and e.server == "pbx" for e in events)
    assert Kind.CUSTOM in {e.kind for e in events}


def test_enter_queue_asterisk_22_with_caller_name():
    e = parse("1795491300|1795491300.4|support|NONE|ENTERQUEUE||5556220|1|Cust ringnoanswer")
    assert e.kind == Kind.ENTER_QUEUE
    assert fields(e, "call_id", "queue", "agent", "tsec", "ts", "discr") == (
        "1795491300.4", "support", "", 1795491300, 1795491300.0, "")
    assert fields(e, "caller_number", "caller_name", "position", "extra") == (
        "5556220", "Cust ringnoanswer", 1, "")


def test_enter_queue_without_caller_name():
    e = parse(real_line("ENTERQUEUE", "|5550007|3"))
    assert fields(e, "caller_number", "caller_name", "position") == ("5550007", "", 3)


def test_enter_queue_url_and_asterisk_1_4_layout():
    e = parse("1000|1.1|q|NONE|ENTERQUEUE|http://crm/x?a=1|5551234|2")
    assert (e.extra_dict(), e.caller_number, e.position) == ({"url": "http://crm/x?a=1"},
                                                            "5551234", 2)
    old = parse("1000|1.1|q|NONE|ENTERQUEUE||5551234")  # 1.4: url|callerid
    assert (old.caller_number, old.position) == ("5551234", None)


@pytest.mark.parametrize("line, number, name, position", [
    # caller ID with '|' in it: the position is still the number Asterisk wrote
    ("1|1.1|q|NONE|ENTERQUEUE||Bob|Smith|3", "Bob|Smith", "", 3),
    ("1|1.1|q|NONE|ENTERQUEUE||a|b|c|d|7", "a|b|c|d", "", 7),
    ("1|1.1|q|NONE|ENTERQUEUE||55|12|4|Ann", "55|12", "Ann", 4),
    ("1|1.1|q|NONE|ENTERQUEUE||5551|2|12345", "5551", "12345", 2),  # a numeric name
    # a numeric name no position can be (all digits, beyond a C int)
    ("1|1.1|q|NONE|ENTERQUEUE||a|b|3|1234567890123456789012345", "a|b",
     "1234567890123456789012345", 3),
    ("1|1.1|q|NONE|ENTERQUEUE||<script>|1|x\\xff", "<script>", "x\\xff", 1),
])
def test_caller_id_with_pipes_never_shifts_the_position(line, number, name, position):
    e = parse(line)
    assert fields(e, "caller_number", "caller_name", "position") == (number, name, position)


def test_ring_no_answer_milliseconds_become_seconds():
    e = parse(real_line("RINGNOANSWER"))
    assert fields(e, "kind", "agent", "ring_s", "call_id") == (
        Kind.RING_NO_ANSWER, "Agent 1002", 8.0, "1795491300.4")
    assert parse("1|1.1|q|A|RINGCANCELED|1500").ring_s == 1.5
    assert parse("1|1.1|q|A|RINGCANCELED|1500").kind == Kind.RING_CANCELED


def test_connect_with_and_without_ring_time():
    e = parse(real_line("CONNECT", "|1|1795502632.6|1"))
    assert fields(e, "kind", "wait_s", "ring_s", "agent") == (Kind.CONNECT, 1.0, 1.0, "Agent 1002")
    assert e.extra_dict() == {"member_uniqueid": "1795502632.6"}
    old = parse("1|1.1|q|SIP/100|CONNECT|12|1.2")  # 1.4: holdtime|bridged uniqueid
    assert (old.wait_s, old.ring_s) == (12.0, None)


def test_complete_agent_and_caller():
    agent = parse(real_line("COMPLETEAGENT", "|9|4|1"))
    assert fields(agent, "kind", "reason", "wait_s", "talk_s", "orig_position") == (
        Kind.COMPLETE, "agent", 9.0, 4.0, 1)
    caller = parse(real_line("COMPLETECALLER"))
    assert fields(caller, "kind", "reason", "wait_s", "talk_s", "orig_position") == (
        Kind.COMPLETE, "caller", 0.0, 2.0, 1)


def test_transfers_of_every_version():
    blind = parse(real_line("BLINDTRANSFER"))
    assert fields(blind, "kind", "reason", "value", "wait_s", "talk_s", "orig_position") == (
        Kind.TRANSFER, "blind", "s@survey", 0.0, 1.0, 1)
    legacy = parse("1|1.1|q|A|TRANSFER|200|from-internal|5|60|2")  # <= 11
    assert fields(legacy, "reason", "value", "talk_s") == ("legacy", "200@from-internal", 60.0)
    bridge = parse("1|1.1|q|A|ATTENDEDTRANSFER|BRIDGE|b-42|3|20|1")
    app = parse("1|1.1|q|A|ATTENDEDTRANSFER|APP|VoiceMail|3|20|1")
    link = parse("1|1.1|q|A|ATTENDEDTRANSFER|LINK|Local/1@a-1;1|Local/1@a-1;2|3|20|1")
    assert [(t.reason, t.value, t.talk_s) for t in (bridge, app, link)] == [
        ("attended", "BRIDGE:b-42", 20.0), ("attended", "APP:VoiceMail", 20.0),
        ("attended", "LINK:Local/1@a-1;1,Local/1@a-1;2", 20.0)]


@pytest.mark.parametrize("event, kind", [
    ("ABANDON", Kind.ABANDON), ("EXITWITHTIMEOUT", Kind.EXIT_TIMEOUT),
    ("EXITEMPTY", Kind.EXIT_EMPTY)])
def test_exits_position_origposition_waittime(event, kind):
    e = parse(real_line(event))
    assert e.kind == kind
    assert (e.position, e.orig_position, e.wait_s) == tuple(
        float(x) if i == 2 else int(x) for i, x in enumerate(real_line(event).split("|")[5:]))


def test_exit_with_key_and_withdraw():
    key = parse(real_line("EXITWITHKEY"))
    assert fields(key, "kind", "value", "position", "orig_position", "wait_s") == (
        Kind.EXIT_KEY, "0", 1, 2, 2.0)
    withdraw = parse("1|1.1|q|NONE|WITHDRAW|2|3|45|callback|requested")
    assert fields(withdraw, "kind", "position", "orig_position", "wait_s", "value") == (
        Kind.WITHDRAW, 2, 3, 45.0, "callback|requested")


def test_empty_wait_of_production_abandons_is_not_a_number_not_an_error():
    e = parse("1|1.1|q|NONE|ABANDON|1|1|")
    assert (e.kind, e.wait_s, e.position) == (Kind.ABANDON, None, 1)


def test_pauses_key_by_reason():
    pause = parse(real_line("PAUSE", "|lunch"))
    assert fields(pause, "kind", "call_id", "queue", "agent", "discr", "reason") == (
        Kind.PAUSE, "", "sales", "Agent 1003", "lunch", "lunch")
    unpause = parse(real_line("UNPAUSE", "Auto-Unpause"))
    assert fields(unpause, "kind", "discr", "reason") == (Kind.UNPAUSE, "", "Auto-Unpause")
    pause_all = parse(real_line("PAUSEALL", "meeting"))
    assert fields(pause_all, "kind", "queue", "discr", "reason") == (
        Kind.PAUSE_ALL, "", "meeting", "meeting")
    assert parse(real_line("UNPAUSEALL")).kind == Kind.UNPAUSE_ALL


def test_members_agents_and_settings():
    add = parse(real_line("ADDMEMBER"))
    assert fields(add, "kind", "call_id", "queue", "agent", "reason") == (
        Kind.MEMBER_ADD, "", "support", "Agent 1001", "")  # MANAGER -> ""
    assert parse("1|MANAGER|q|A|ADDMEMBER|PAUSED").reason == "paused"
    assert parse(real_line("REMOVEMEMBER")).kind == Kind.MEMBER_REMOVE
    penalty = parse(real_line("PENALTY"))
    assert fields(penalty, "kind", "agent", "value") == (Kind.PENALTY, "Local/1009@agents/n", "3")
    assert parse("1|NONE|q|Local/1@a/n|RINGINUSE|1").value == "1"
    login = parse("1|1.1|NONE|Agent/1001|AGENTLOGIN|SIP/1001-0001")
    assert fields(login, "kind", "value") == (Kind.AGENT_LOGIN, "SIP/1001-0001")
    logoff = parse("1|1.1|NONE|Agent/1001|AGENTLOGOFF|SIP/1001-0001|3600")
    assert fields(logoff, "kind", "value", "talk_s") == (Kind.AGENT_LOGOFF, "SIP/1001-0001", 3600.0)
    cb = parse("1|NONE|NONE|Agent/1001|AGENTCALLBACKLOGOFF|1001@default|120|Autologoff")
    assert fields(cb, "kind", "value", "talk_s", "reason") == (
        Kind.AGENT_LOGOFF, "1001@default", 120.0, "Autologoff")
    assert parse("1|NONE|NONE|Agent/1|AGENTCALLBACKLOGIN|1001@default").value == "1001@default"


def test_pbx_events():
    assert parse(real_line("QUEUESTART")).kind == Kind.QUEUE_START
    assert parse(real_line("CONFIGRELOAD")).kind == Kind.CONFIG_RELOAD
    assert parse("1|NONE|NONE|NONE|SYSCOMPAT|").kind == Kind.SYSCOMPAT
    did = parse("1|1.1|q|NONE|DID|5551000")
    assert (did.kind, did.value) == (Kind.DID, "5551000")


def test_info_keeps_all_its_data():
    e = parse(real_line("INFO", "IVREXIT|invalid|9"))
    assert (e.kind, e.value, e.extra_dict()) == (
        Kind.INFO, "IVREXIT", {"data": ["IVREXIT", "invalid", "9"]})


def test_our_dialplans_ivr_exit_and_disposition():
    ivr = parse(real_line("IVREXIT", "to-queue|main|support"))
    assert fields(ivr, "kind", "call_id", "queue", "agent", "discr", "value") == (
        Kind.IVR_EXIT, "1795502629.0", "support", "", "main", "to-queue")
    hangup = parse(real_line("IVREXIT", "hangup|main|"))
    assert fields(hangup, "queue", "discr", "value") == ("", "main", "hangup")
    disposition = parse(real_line("DISPOSITION", "|sale"))
    assert fields(disposition, "kind", "call_id", "agent", "value", "discr") == (
        Kind.DISPOSITION, "1795502629.0", "Agent 1001", "sale", "")


def test_agent_dump_and_unknown_events_are_custom():
    dump = parse("1|1.1|q|A|AGENTDUMP|")
    assert fields(dump, "kind", "value", "extra") == (Kind.CUSTOM, "AGENTDUMP", "")
    custom = parse(real_line("CUSTOM"))
    assert fields(custom, "kind", "call_id", "value") == (Kind.CUSTOM, "manual-1", "CUSTOM")
    assert custom.extra_dict() == {"data": ["hello", "world"]}
    wazo = parse("1|1.1|q|NONE|WRAPUPSTART|5")
    assert (wazo.value, json.loads(wazo.extra)) == ("WRAPUPSTART", {"data": ["5"]})


def test_none_and_manager_become_empty():
    e = parse("1|NONE|NONE|NONE|QUEUESTART|")
    assert fields(e, *KEY_COLUMNS) == ("pbx", "", Kind.QUEUE_START, "", "", 1, "")
    assert parse("1|MANAGER|q|A|REMOVEMEMBER|").call_id == ""


def test_fractional_timestamps():
    e = parse("1795491300.511751|1.1|q|NONE|ABANDON|1|1|4")
    assert (e.ts, e.tsec) == (1795491300.511751, 1795491300)


@pytest.mark.parametrize("line, reason", [
    ("garbage", "1 fields"),
    ("1|2|3|4", "4 fields"),
    ("abc|1.1|q|A|CONNECT|1|x|0", "timestamp 'abc' is not a number"),
    ("nan|1.1|q|A|CONNECT|1|x|0", "timestamp 'nan' is not a number"),
    ("-5|1.1|q|A|CONNECT|1|x|0", "out of range"),
    ("1|1.1|q|A||x", "no event name"),
    ("1|1.1|q|NONE|ENTERQUEUE||5551234|x", "position 'x' is not a whole number"),
    ("1|1.1|q|A|CONNECT|soon|x|0", "wait 'soon' is not a number"),
    ("1|1.1|q|A|COMPLETEAGENT|1|2|first", "original position 'first'"),
    ("1|1.1|q|A|RINGNOANSWER|1e400", "ring time '1e400' is not a number"),
    ("1|1.1|q|A|RINGNOANSWER|1" + "0" * 400, "out of range"),
    # numbers SQLite cannot hold, or no C int can be: never an OverflowError at the store
    ("1|1.1|q|NONE|ABANDON|99999999999999999999|1|4",
     "position '99999999999999999999' is out of range"),
    ("1|1.1|q|NONE|ABANDON|2147483648|1|4", "position '2147483648' is out of range"),
    ("1|1.1|q|NONE|EXITWITHKEY|1|-1|1|4", "position '-1' is out of range"),
    ("1|1.1|q|A|COMPLETEAGENT|1|2|123456789012345678901", "original position"),
    ("1|1.1|q|NONE|ENTERQUEUE||5551234|99999999999", "position '99999999999' is out of range"),
    ("1|1.1|q|A|CONNECT|1" + "0" * 30 + "|x|0", "wait '1000"),
    # digits Python's int()/float() take but Asterisk never writes
    ("\u0661\u0667\u0669\u0665|1.1|q|NONE|ABANDON|1|1|4", "timestamp '\u0661\u0667"),
    ("1|1.1|q|NONE|ABANDON|\u0663|1|4", "position '\u0663' is not a whole number"),
    ("1|1.1|q|A|CONNECT|\u0663|x|0", "wait '\u0663' is not a number"),
    ("1|1.1|q|NONE|ABANDON|\uff13|1|4", "is not a whole number"),  # fullwidth 3
    (" 1|1.1|q|NONE|ABANDON|1|1|4", "timestamp ' 1' is not a number"),
    ("1_0|1.1|q|NONE|ABANDON|1|1|4", "timestamp '1_0' is not a number"),
    ("1|1.1|q|NONE|ABANDON|+1|1|4", "position '+1' is not a whole number"),
    ("1|1.1|q|NONE|ABANDON|1|1|inf", "wait 'inf' is not a number"),
    ("1|1.1|q|NONE|ABANDON|one|1|4", "position 'one'"),
    ("1|1.1|q|A|BLINDTRANSFER|s|survey|0|x|1", "talk time 'x'"),
    ("1|1.1|q|A|BLINDTRANSFER|1|1", "2 data fields"),
])
def test_bad_lines_say_why(line, reason):
    with pytest.raises(BadLine) as exc:
        parse(line)
    assert reason in exc.value.args[0]


def test_padded_data_fields_of_a_data1_to_data5_export():
    # a queue_log exported from a data1..data5 table pads the missing data fields
    e = parse("1|1.1|q|NONE|ENTERQUEUE||5551234|2||")
    assert (e.caller_number, e.position, e.caller_name) == ("5551234", 2, "")
    t = parse("1|1.1|q|A|BLINDTRANSFER|s|survey|0|1|1|")
    assert (t.value, t.orig_position) == ("s@survey", 1)


@given(st.text())
def test_any_text_is_an_event_or_a_reason_never_a_crash(text):
    line = text.replace("\n", "")
    try:
        event = parse(line)
    except BadLine as exc:
        assert exc.args[0]
    else:
        assert event.source == "queue_log" and event.tsec == int(event.ts)
        assert_storable(event)


def assert_storable(event):
    """Every number fits SQLite's 64-bit integer or is a finite float."""
    for value in event:
        if isinstance(value, int):
            assert -(2**63) <= value < 2**63
        elif isinstance(value, float):
            assert value == value and abs(value) < float("inf")


@given(st.lists(st.text(alphabet="0123456789-.|", max_size=25), min_size=3, max_size=6),
       st.sampled_from(["ENTERQUEUE", "CONNECT", "COMPLETEAGENT", "ABANDON", "EXITWITHKEY",
                        "ATTENDEDTRANSFER", "RINGNOANSWER", "WITHDRAW", "AGENTLOGOFF"]))
def test_any_digits_in_any_field_are_a_storable_event_or_a_reason(data, name):
    try:
        event = parse("|".join(["1700000000", "1.1", "q", "A", name, *data]))
    except BadLine as exc:
        assert exc.args[0]
    else:
        assert_storable(event)


@given(st.lists(st.text(alphabet="0123456789|abc NONE.", max_size=12), min_size=5, max_size=12))
def test_pipe_soup_in_every_field_is_an_event_or_a_reason(fields):
    for name in ("ENTERQUEUE", "CONNECT", "BLINDTRANSFER", "ATTENDEDTRANSFER", "ABANDON",
                 "EXITWITHKEY", "WITHDRAW", "AGENTLOGOFF", "PAUSE", "IVREXIT"):
        line = "|".join(["1700000000", *fields[1:4], name, *fields[5:]])
        try:
            parse(line)
        except BadLine:
            pass
