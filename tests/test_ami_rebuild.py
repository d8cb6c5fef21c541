"""What the listener rebuilds at a login, and how it places what follows: on the real
recordings of a login while calls are in progress and of a `core restart now`
(examples/recordings/login-midcall.*, restart.*), and on small hand-made cases."""

import asyncio
import gzip
import time
from pathlib import Path

from ami_listener.listener import Listener
from ami_listener.manager import AmiParser
from ami_listener.mapping import AmiMapper, Mapped, Snapshot, StoredCall, stored_calls
from callkpi.config import AmiConfig
from callkpi.events import Kind
from callkpi.testing.fakeami import FakeAmi

RECORDINGS = Path(__file__).parent.parent / "examples" / "recordings"
COMPARED = ("kind", "call_id", "queue", "agent", "tsec", "discr", "reason", "value", "wait_s",
            "talk_s", "position", "orig_position")


def stream(name):
    messages, junk = AmiParser().feed(gzip.open(RECORDINGS / name).read())
    assert junk == []
    return messages


def late_login(name):
    """The late client's stream: its (QueueStatus, Status) answers, and the events after."""
    messages = stream(name)
    lists = {"qs": [], "st": []}
    events = []
    for m in messages:
        if m.get("ActionID") in lists and "Event" in m and m.get("EventList") != "Complete":
            lists[m["ActionID"]].append(m)
        elif "Event" in m and "ActionID" not in m:
            events.append(m)
    return (lists["qs"], lists["st"] or None), events


def log_in(mapper, queue_status, channels, stored, at):
    """What the listener does at a login: the members where QueueStatus's answer ends, then
    the calls where Status's does (here both at `at`)."""
    out = Mapped()
    if queue_status is not None:
        out = mapper.members_at(queue_status, at)
    waiting = None if queue_status is None else [
        m for m in queue_status if m["Event"] == "QueueEntry"]
    calls = mapper.calls_at(Snapshot(channels=channels, waiting=waiting), stored, at)
    return Mapped(out.events + calls.events, out.links + calls.links,
                  out.warnings + calls.warnings)


def first_stamp(messages):
    return next(float(m["Timestamp"]) for m in messages if "Timestamp" in m)


def mapped(mapper, messages):
    events, warnings = [], []
    for m in messages:
        out = mapper.map(m, 0.0)
        events += out.events
        warnings += out.warnings
    return events, warnings


def compared(events):
    return sorted(tuple(getattr(e, c) for c in COMPARED) for e in events)


def test_a_login_mid_call_places_what_a_listener_there_from_the_start_places():
    answers, after = late_login("login-midcall.late.ami-raw.txt.gz")
    at = first_stamp(after) - 0.001  # just before the first event the late login received
    there = AmiMapper("pbx")
    whole, _ = mapped(there, [m for m in stream("login-midcall.full.ami-raw.txt.gz")
                              if "Event" in m])
    late = AmiMapper("pbx")
    rebuilt = log_in(late, *answers, queue_log_calls_before(at), at)
    events, warnings = mapped(late, after)
    assert rebuilt.warnings == warnings == []
    # every hold, unhold, abandon and end after the login, as if the listener had been there
    want = [e for e in whole if e.ts >= at and e.kind != Kind.MEMBER_STATE]
    got = [e for e in events if e.kind != Kind.MEMBER_STATE]
    assert compared(got) == compared(want)
    kinds = {e.kind for e in want}
    assert {Kind.HOLD, Kind.UNHOLD, Kind.ABANDON, Kind.COMPLETE, Kind.CONNECT} <= kinds
    # one call was already on hold at the login (the product's hold key was running): its
    # Hold came before, so the login says so, and its Unhold afterwards is placed
    (observed,) = [e for e in rebuilt.events if e.kind == Kind.HOLD]
    before = [e for e in whole if e.kind == Kind.HOLD and e.ts < at]
    assert [(e.call_id, e.agent) for e in before] == [(observed.call_id, observed.agent)]
    assert observed.extra_dict() == {"observed": "login"} and observed.ts == at
    assert any(e.kind == Kind.UNHOLD and e.call_id == observed.call_id for e in got)
    # one member-state per member listed, with what Asterisk says of it
    states = sorted((e.agent, e.reason, e.extra_dict()["interface"], e.extra_dict()["in_call"])
                    for e in rebuilt.events if e.kind == Kind.MEMBER_STATE)
    assert states == [("Agent 1001", "", "Local/1001@sim-agents/n", True),
                      ("Agent 1002", "", "Local/1002@sim-agents/n", True)]
    assert late.calls == there.calls == {}  # every call ended, and both saw it


def queue_log_calls_before(at):
    """What the store holds when `callkpi tail` runs beside the listener: the queue_log's
    ENTERQUEUE and CONNECT lines (the entry position of a caller still waiting at the
    login is in no AMI answer: QueueEntry gives the current position)."""
    rows = []
    for line in (RECORDINGS / "login-midcall.queue_log").read_text().splitlines():
        epoch, call_id, queue, agent, event, *data = line.split("|")
        if int(epoch) < at and event == "ENTERQUEUE":
            rows.append((call_id, Kind.ENTER_QUEUE, queue, "", float(epoch), int(data[2])))
        elif int(epoch) < at and event == "CONNECT":
            rows.append((call_id, Kind.CONNECT, queue, agent, float(epoch), None))
    return stored_calls(rows)


def test_without_the_store_only_the_entry_position_of_callers_waiting_at_login_is_unknown():
    answers, after = late_login("login-midcall.late.ami-raw.txt.gz")
    at = first_stamp(after) - 0.001
    with_store, without = AmiMapper("pbx"), AmiMapper("pbx")
    log_in(with_store, *answers, queue_log_calls_before(at), at)
    log_in(without, *answers, {}, at)
    first, _ = mapped(with_store, after)
    second, _ = mapped(without, after)
    waiting = {e["Uniqueid"] for e in answers[0] if e["Event"] == "QueueEntry"}
    differ = [(a.kind, a.call_id, a.orig_position, b.orig_position)
              for a, b in zip(first, second) if a != b]
    assert differ and all(call_id in waiting and b is None and a is not None
                          for _, call_id, a, b in differ)


def test_callers_who_joined_before_the_login_and_hung_up_after_are_abandons():
    answers, after = late_login("login-midcall.late.ami-raw.txt.gz")
    late = AmiMapper("pbx")
    log_in(late, *answers, {}, first_stamp(after) - 0.001)
    events, _ = mapped(late, after)
    queue_log = (RECORDINGS / "login-midcall.queue_log").read_text().splitlines()
    abandons = {line.split("|")[1] for line in queue_log if "|ABANDON|" in line}
    assert len(abandons) == 3
    assert {e.call_id for e in events if e.kind == Kind.ABANDON} == abandons
    assert not [e for e in events if e.kind in (Kind.EXIT_TIMEOUT, Kind.EXIT_EMPTY)]


def test_a_graceful_restart_is_recorded_as_asterisk_tells_it():
    events, warnings = mapped(AmiMapper("pbx"), [m for m in stream("restart.full.ami-raw.txt.gz")
                                                 if "Event" in m])
    assert warnings == []
    (shutdown,) = [e for e in events if e.kind == Kind.SHUTDOWN]
    assert (shutdown.reason, shutdown.value, shutdown.call_id, shutdown.queue) == (
        "cleanly", "restart", "", "")
    # the callers still waiting were hung up by the shutdown: abandons as queue_log writes
    # them, each marked with what caused it (the facts layer closes them)
    queue_log = (RECORDINGS / "restart.queue_log").read_text().splitlines()
    abandons = {line.split("|")[1] for line in queue_log if "|ABANDON|" in line}
    marked = {e.call_id for e in events
              if e.kind == Kind.ABANDON and e.extra_dict() == {"hangup": "shutdown"}}
    assert len(abandons) == 4 and marked == abandons
    assert all(e.ts < shutdown.ts for e in events if e.kind in (Kind.ABANDON, Kind.COMPLETE))
    # after the restart, persistentmembers brought the members back, still paused
    answers, _ = late_login("restart.late.ami-raw.txt.gz")
    rebuilt = log_in(AmiMapper("pbx"), *answers, {}, shutdown.ts + 5)
    states = [(e.agent, e.reason, e.value) for e in rebuilt.events]
    assert states == [("Agent 1001", "paused", "ACW"), ("Agent 1002", "paused", "ACW")]
    assert {e.extra_dict()["membership"] for e in rebuilt.events} == {"dynamic"}


# ------------------------------------------------------------------ hand-made cases
def status_row(uid, app, bridge="", linked=None, member="", data=None, seconds="5"):
    variables = f"MEMBERNAME={member or '(null)'}\nQEORIGINALPOS={'2' if member else '(null)'}"
    return {"Event": "Status", "Uniqueid": uid, "Linkedid": linked or uid, "BridgeID": bridge,
            "Application": app, "Data": data or ("support,c" if app == "Queue" else ""),
            "Seconds": seconds, "Variable": variables}


def member_row(name, status="2", paused="0", reason="", incall="1"):
    return {"Event": "QueueMember", "Queue": "support", "Name": name,
            "Location": f"PJSIP/{name[-4:]}", "Membership": "dynamic", "Status": status,
            "Paused": paused, "PausedReason": reason, "InCall": incall,
            "LoginTime": "1795000000", "LastPause": "0"}


def connected_call(uid="1.1", member_uid="1.2", agent="Agent 1001"):
    return [status_row(uid, "Queue", bridge="b1", member=agent),
            status_row(member_uid, "AppQueue", bridge="b1", linked=uid, member=agent),
            status_row("1.3", "Wait", linked=uid)]


def test_a_phone_holding_at_login_is_a_hold_and_its_unhold_is_placed():
    mapper = AmiMapper("pbx")
    out = log_in(mapper, [member_row("Agent 1001", status="8")], connected_call(), {}, 100.0)
    assert [(e.kind, e.call_id, e.agent, e.tsec) for e in out.events if e.kind == Kind.HOLD] == [
        (Kind.HOLD, "1.1", "Agent 1001", 100)]
    events, _ = mapped(mapper, [{"Event": "Unhold", "Uniqueid": "1.2", "Timestamp": "104"},
                                {"Event": "Hold", "Uniqueid": "1.3", "Timestamp": "106"}])
    assert [(e.kind, e.call_id, e.tsec) for e in events] == [
        (Kind.UNHOLD, "1.1", 104), (Kind.HOLD, "1.1", 106)]


def test_a_hold_the_store_has_open_ends_at_the_next_unhold():
    """The listener was killed while the caller was on hold: its Unhold comes after."""
    mapper = AmiMapper("pbx")
    stored = {"1.1": StoredCall("1.1", "support", entry_position=2, agent="Agent 1001",
                                connected_at=90.0, on_hold=True)}
    # Asterisk shows the hold too (the product's hold key runs on the member's channel)
    rows = connected_call()
    rows[1] |= {"Application": "Read", "Data": "CALLKPI_UNHOLD,,1,,1,600"}
    out = log_in(mapper, [member_row("Agent 1001")], rows, stored, 100.0)
    assert [e.kind for e in out.events] == [Kind.MEMBER_STATE]
    events, _ = mapped(mapper, [
        {"Event": "Unhold", "Uniqueid": "1.2", "Timestamp": "104"},
        {"Event": "AgentComplete", "Queue": "support", "MemberName": "Agent 1001",
         "HoldTime": "3", "TalkTime": "20", "Reason": "agent", "Timestamp": "110.2"}])
    assert [(e.kind, e.call_id, e.orig_position) for e in events] == [
        (Kind.UNHOLD, "1.1", None), (Kind.COMPLETE, "1.1", 2)]


def test_a_hold_that_ended_unseen_is_an_unhold_at_login():
    stored = {"1.1": StoredCall("1.1", "support", agent="Agent 1001", on_hold=True)}
    out = log_in(AmiMapper("pbx"), [member_row("Agent 1001")], connected_call(), stored, 100.0)
    assert [(e.kind, e.extra_dict()) for e in out.events if e.kind != Kind.MEMBER_STATE] == [
        (Kind.UNHOLD, {"observed": "login"})]


def test_without_status_the_store_links_the_channels_of_calls_in_progress():
    """An AMI account without `write = reporting`: Status is refused."""
    rows = [("1.1", Kind.ENTER_QUEUE, "support", "", 80.0, 3),
            ("1.1", Kind.CONNECT, "support", "Agent 1001", 90.0, None),
            ("2.1", Kind.ENTER_QUEUE, "support", "", 81.0, 1),
            ("2.1", Kind.ABANDON, "support", "", 85.0, 1)]
    links = [("1.1", "1.1"), ("1.2", "1.1"), ("1.3", "1.1")]
    stored = stored_calls(rows, links)
    assert list(stored) == ["1.1"] and stored["1.1"].channels == ["1.1", "1.2", "1.3"]
    mapper = AmiMapper("pbx")
    log_in(mapper, [{"Event": "QueueEntry", "Queue": "support", "Uniqueid": "3.1",
                     "Position": "1"}], None, stored, 100.0)
    events, _ = mapped(mapper, [
        {"Event": "Hold", "Uniqueid": "1.3", "Timestamp": "101"},
        {"Event": "Unhold", "Uniqueid": "1.2", "Timestamp": "102"},
        {"Event": "HangupRequest", "Uniqueid": "3.1", "Timestamp": "103"},
        {"Event": "QueueCallerAbandon", "Uniqueid": "3.1", "Queue": "support",
         "Position": "1", "OriginalPosition": "1", "HoldTime": "30", "Timestamp": "103.1"},
        {"Event": "AgentComplete", "Uniqueid": "1.1", "Queue": "support",
         "MemberName": "Agent 1001", "TalkTime": "14", "Reason": "caller", "Timestamp": "104"}])
    assert [(e.kind, e.call_id, e.orig_position) for e in events] == [
        (Kind.HOLD, "1.1", None), (Kind.UNHOLD, "1.1", None), (Kind.ABANDON, "3.1", 1),
        (Kind.COMPLETE, "1.1", 3)]


def test_an_agent_complete_naming_neither_channel_is_placed_by_its_member():
    """app_queue.c builds AgentComplete from the channels' latest snapshots: when both are
    gone (Hangups published first) it carries only Queue, MemberName and the times."""
    mapper = AmiMapper("pbx")
    base = {"Queue": "support", "Linkedid": "1.1"}
    mapped(mapper, [
        {"Event": "QueueCallerJoin", "Uniqueid": "1.1", "Position": "2", **base,
         "Timestamp": "100"},
        {"Event": "AgentConnect", "Uniqueid": "1.1", "MemberName": "Agent A",
         "DestUniqueid": "1.2", "HoldTime": "5", "Timestamp": "105", **base},
        {"Event": "Hangup", "Uniqueid": "1.1", "Timestamp": "125"},
        {"Event": "Hangup", "Uniqueid": "1.2", "Timestamp": "125.1"}])
    events, warnings = mapped(mapper, [
        {"Event": "AgentComplete", "Queue": "support", "MemberName": "Agent A",
         "HoldTime": "5", "TalkTime": "20", "Reason": "caller", "Timestamp": "125.2"},
        # another member's end whose connect was never seen, and a late one of Agent A
        # that cannot be the call it served (20 s talk, connected at 105): never guessed
        {"Event": "AgentComplete", "Queue": "support", "MemberName": "Agent B",
         "TalkTime": "3", "Reason": "caller", "Timestamp": "126"},
        {"Event": "AgentComplete", "Queue": "support", "MemberName": "Agent A",
         "TalkTime": "3", "Reason": "caller", "Timestamp": "300"}])
    assert [(e.kind, e.call_id, e.orig_position, e.talk_s) for e in events] == [
        (Kind.COMPLETE, "1.1", 2, 20.0)]
    assert len(warnings) == 2 and all("missing Uniqueid" in w for w in warnings)


def test_member_state_only_when_queue_member_status_shows_something_new():
    mapper = AmiMapper("pbx")
    status = {"Event": "QueueMemberStatus", "Queue": "support", "MemberName": "Agent A",
              "Interface": "PJSIP/1001", "Membership": "static", "Status": "1", "Paused": "0",
              "PausedReason": "", "LoginTime": "1795000000", "LastPause": "0", "InCall": "0",
              "Timestamp": "100"}
    events, _ = mapped(mapper, [
        status,  # a member never seen joining (static, or logged in before the listener)
        {**status, "Status": "2", "InCall": "1", "Timestamp": "101"},  # device state only
        {**status, "Paused": "1", "PausedReason": "lunch", "Timestamp": "102"},  # unseen pause
        {"Event": "QueueMemberPause", "Queue": "support", "MemberName": "Agent A",
         "Interface": "PJSIP/1001", "Paused": "0", "Timestamp": "103"},
        {**status, "Timestamp": "104"},  # the same as the pause event said: nothing new
    ])
    assert [(e.kind, e.tsec, e.reason, e.value) for e in events] == [
        (Kind.MEMBER_STATE, 100, "", ""), (Kind.MEMBER_STATE, 102, "paused", "lunch"),
        (Kind.UNPAUSE, 103, "", "")]
    assert events[0].extra_dict() == {"interface": "PJSIP/1001", "status": "1",
                                      "in_call": False, "login_time": 1795000000,
                                      "membership": "static"}
    assert events[2].extra_dict() == {"interface": "PJSIP/1001"}


def test_member_events_carry_the_interface():
    base = {"Queue": "sales", "MemberName": "Agent A", "Interface": "PJSIP/1001"}
    events, _ = mapped(AmiMapper("pbx"), [
        {"Event": "QueueMemberAdded", "Paused": "1", "Timestamp": "1", **base},
        {"Event": "QueueMemberPause", "Paused": "1", "PausedReason": "x", "Timestamp": "2",
         **base},
        {"Event": "QueueMemberPause", "Paused": "0", "Timestamp": "3", **base},
        {"Event": "QueueMemberRemoved", "Timestamp": "4", **base}])
    assert [(e.kind, e.reason, e.extra_dict()) for e in events] == [
        (Kind.MEMBER_ADD, "paused", {"interface": "PJSIP/1001"}),
        (Kind.PAUSE, "x", {"interface": "PJSIP/1001"}),
        (Kind.UNPAUSE, "", {"interface": "PJSIP/1001"}),
        (Kind.MEMBER_REMOVE, "", {"interface": "PJSIP/1001"})]


def test_two_logins_in_one_second_give_the_same_member_state_keys():
    listed = [member_row("Agent A", paused="1", reason="lunch")]
    first = AmiMapper("pbx").members_at(listed, 100.2).events
    second = AmiMapper("pbx").members_at(listed, 100.7).events
    key = lambda e: (e.server, e.call_id, e.kind, e.queue, e.agent, e.tsec, e.discr)  # noqa
    assert [key(e) for e in first] == [key(e) for e in second]


def test_impossible_timestamps_skip_the_event_with_a_warning():
    pause = {"Event": "QueueMemberPause", "Queue": "q", "MemberName": "A", "Interface": "I",
             "Paused": "1", "PausedReason": "r"}
    bad = ["inf", "-inf", "nan", "1e19", "-1e300", "0", "-5", "1e400"]
    events, warnings = mapped(AmiMapper("pbx"), [{**pause, "Timestamp": t} for t in bad]
                              + [{**pause, "Timestamp": "1795000000.5"}])
    assert [e.tsec for e in events] == [1795000000]
    assert len(warnings) == len(bad) and all("impossible Timestamp" in w for w in warnings)


# ------------------------------------------------------------------ the listener, end to end
async def test_a_listener_restarted_mid_call_places_the_unhold_and_the_end(store):
    """Issue: the first run stored the connect and the hold; the second, after a kill, must
    still attribute the call's Unhold and AgentComplete (no caller fields) to it."""
    ami = await FakeAmi(secret="s").start()
    try:
        cfg = AmiConfig(port=ami.port, secret="s", ping_interval_s=0.2, flush_interval_s=0.02)
        first = Listener(store, cfg, "pbx", connect_timeout=1.0)
        task = asyncio.create_task(first.run())
        await asyncio.wait_for(first.rebuilt.wait(), 5)
        t0 = time.time()
        for block in (
            f"Event: QueueCallerJoin\r\nPrivilege: agent,all\r\nTimestamp: {t0}\r\n"
            "Uniqueid: 1.1\r\nLinkedid: 1.1\r\nQueue: support\r\nPosition: 2",
            f"Event: AgentConnect\r\nPrivilege: agent,all\r\nTimestamp: {t0 + 1}\r\n"
            "Uniqueid: 1.1\r\nLinkedid: 1.1\r\nQueue: support\r\nMemberName: Agent A\r\n"
            "DestUniqueid: 1.2\r\nHoldTime: 1",
            f"Event: Hold\r\nPrivilege: call,all\r\nTimestamp: {t0 + 2}\r\nUniqueid: 1.2",
        ):
            await ami.emit(block.encode())
        await eventually(lambda: first.stats.processed == 3)
        first.stop()
        await task
        # what Asterisk lists at the second login: the call, bridged, its member on hold
        ami.queue_members = [{"Queue": "support", "Name": "Agent A", "Location": "PJSIP/1001",
                              "Status": "8", "Paused": "0", "InCall": "1"}]
        ami.channels = [status_row("1.1", "Queue", bridge="b", member="Agent A"),
                        status_row("1.2", "AppQueue", bridge="b", linked="1.1",
                                   member="Agent A")]
        second = Listener(store, cfg, "pbx", connect_timeout=1.0)
        task = asyncio.create_task(second.run())
        await asyncio.wait_for(second.rebuilt.wait(), 5)
        for block in (
            f"Event: Unhold\r\nPrivilege: call,all\r\nTimestamp: {t0 + 4}\r\nUniqueid: 1.2",
            f"Event: Hangup\r\nPrivilege: call,all\r\nTimestamp: {t0 + 6}\r\nUniqueid: 1.1",
            f"Event: Hangup\r\nPrivilege: call,all\r\nTimestamp: {t0 + 6}\r\nUniqueid: 1.2",
            f"Event: AgentComplete\r\nPrivilege: agent,all\r\nTimestamp: {t0 + 6.1}\r\n"
            "Queue: support\r\nMemberName: Agent A\r\nHoldTime: 1\r\nTalkTime: 5\r\n"
            "Reason: caller",
        ):
            await ami.emit(block.encode())
        await eventually(lambda: second.stats.processed == 4)
        second.stop()
        stats = await task
    finally:
        await ami.close()
    assert stats.warnings == 0
    rows = await store.fetch_all(
        "SELECT kind, call_id, agent, orig_position FROM events WHERE call_id <> '' ORDER BY ts")
    assert rows == [("enter-queue", "1.1", "", None), ("connect", "1.1", "Agent A", None),
                    ("hold", "1.1", "Agent A", None), ("unhold", "1.1", "Agent A", None),
                    ("complete", "1.1", "Agent A", 2)]


async def eventually(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_right_after_a_restart_the_listener_waits_for_asterisk_to_be_booted(store):
    """Seen on the sandbox: after `core restart now` AMI answers before app_queue is loaded
    (QueueStatus: "Invalid/unknown command"); FullyBooted comes when it is."""
    ami = await FakeAmi(secret="s", booted=False, queue_members=[
        {"Queue": "support", "Name": "Agent A", "Location": "PJSIP/1001", "Status": "1",
         "Paused": "1", "PausedReason": "lunch", "InCall": "0"}]).start()
    try:
        listener = Listener(store, AmiConfig(port=ami.port, secret="s", flush_interval_s=0.02),
                            "pbx", connect_timeout=5.0)
        task = asyncio.create_task(listener.run())
        await asyncio.wait_for(listener.connected.wait(), 5)
        await asyncio.sleep(0.3)
        assert "queuestatus" not in ami.actions  # not asked before it is booted
        await ami.boot()
        await asyncio.wait_for(listener.rebuilt.wait(), 5)
        listener.stop()
        await task
    finally:
        await ami.close()
    rows = await store.fetch_all("SELECT kind, agent, reason, value FROM events")
    assert rows == [("member-state", "Agent A", "paused", "lunch")]
