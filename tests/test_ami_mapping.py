"""AMI -> canonical events, checked against the real recording and its queue_log twin."""

from pathlib import Path

from callkpi.testing.fakeami import recorded_events
from ami_listener.manager import AmiParser
from ami_listener.mapping import MAX_TRACKED, AmiMapper
from callkpi.events import KEY_COLUMNS, Kind

SAMPLES = Path(__file__).parent.parent / "examples" / "recordings"

# queue_log kinds whose events AMI reports too (the rest have no AMI event, docs/events.md)
TWINNED = {
    "ENTERQUEUE": Kind.ENTER_QUEUE, "CONNECT": Kind.CONNECT, "COMPLETEAGENT": Kind.COMPLETE,
    "COMPLETECALLER": Kind.COMPLETE, "RINGNOANSWER": Kind.RING_NO_ANSWER,
    "ABANDON": Kind.ABANDON, "EXITWITHTIMEOUT": Kind.EXIT_TIMEOUT,
    "BLINDTRANSFER": Kind.TRANSFER, "PAUSE": Kind.PAUSE, "ADDMEMBER": Kind.MEMBER_ADD,
    "REMOVEMEMBER": Kind.MEMBER_REMOVE,
}


def recorded_messages():
    messages, junk = AmiParser().feed(b"\r\n\r\n".join(recorded_events()) + b"\r\n\r\n")
    assert junk == []
    return messages


def map_all(messages, mapper=None):
    mapper = mapper or AmiMapper("pbx")
    events, links, warnings = [], [], []
    for message in messages:
        out = mapper.map(message, 0.0)
        events += out.events
        links += out.links
        warnings += out.warnings
    return events, links, warnings


def queue_log_keys():
    """Natural keys of the recording's queue_log lines that AMI also reports, as the
    queue_log parser keys them (NONE -> "", PAUSE discr = reason)."""
    keys = set()
    for line in (SAMPLES / "all-scenarios.queue_log").read_text().splitlines():
        epoch, call_id, queue, agent, event, *data = line.split("|")
        if event not in TWINNED or (event == "PAUSE" and queue == "NONE"):
            continue
        none = lambda v: "" if v in ("NONE", "MANAGER") else v  # noqa: E731
        discr = data[0] if event == "PAUSE" else ""
        keys.add(("pbx", none(call_id), TWINNED[event], none(queue), none(agent), int(epoch),
                  discr))
    return keys


def key(event):
    return tuple(getattr(event, c) for c in KEY_COLUMNS)


def test_every_twinned_queue_log_event_has_the_same_key_from_ami():
    events, _, _ = map_all(recorded_messages())
    # no queue_log twin: hold, member-state (evidence of a member the stream never showed
    # joining), and UNPAUSE (its AMI reason is not in the key)
    ami_keys = {key(e) for e in events
                if e.kind not in (Kind.HOLD, Kind.UNHOLD, Kind.UNPAUSE, Kind.MEMBER_STATE)}
    expected = queue_log_keys()
    assert len(expected) == 38
    # AMI stamps an event a few ms after the queue_log line: allow the store's one second
    near = {(k[:5], k[6]) for k in ami_keys}
    missing = [k for k in expected if (k[:5], k[6]) not in near]
    assert missing == []
    assert all(any(abs(a[5] - k[5]) <= 1 for a in ami_keys if a[:5] == k[:5]) for k in expected)
    # and nothing AMI-only among the twinned kinds (the queue_log sample stops earlier)
    last = max(k[5] for k in expected)
    assert len({k for k in ami_keys if k[5] <= last}) == len(expected)


def test_fields_of_a_call():
    events, _, _ = map_all(recorded_messages())
    call = [e for e in events if e.call_id == "1795491300.4"]
    assert [e.kind for e in call] == [Kind.ENTER_QUEUE, Kind.RING_NO_ANSWER, Kind.CONNECT,
                                      Kind.COMPLETE]
    enter, rna, connect, complete = call
    assert (enter.caller_number, enter.caller_name, enter.position) == (
        "5556220", "Cust ringnoanswer", 1)
    assert (rna.agent, rna.ring_s) == ("Agent 1002", 8.0)  # RingTime ms -> s
    assert (connect.agent, connect.wait_s, connect.ring_s) == ("Agent 1001", 9.0, 0.0)
    assert connect.extra_dict() == {"member_uniqueid": "1795491309.8"}
    assert (complete.reason, complete.wait_s, complete.talk_s, complete.orig_position) == (
        "agent", 9.0, 4.0, 1)
    assert enter.ts == 1795491300.511751 and enter.source == "ami"


def test_abandon_and_timeout_are_told_apart_by_the_hangup_request():
    events, _, _ = map_all(recorded_messages())
    by_call = {e.call_id: e for e in events if e.kind in (Kind.ABANDON, Kind.EXIT_TIMEOUT)}
    assert by_call["1795491338.18"].kind == Kind.ABANDON  # queue_log: ABANDON
    assert by_call["1795491348.20"].kind == Kind.EXIT_TIMEOUT  # queue_log: EXITWITHTIMEOUT
    assert (by_call["1795491338.18"].wait_s, by_call["1795491338.18"].position) == (4.0, 1)


def test_hold_is_attributed_to_the_callers_queue_call_and_agent():
    events, _, _ = map_all(recorded_messages())
    holds = [(e.kind, e.call_id, e.queue, e.agent, e.tsec) for e in events
             if e.kind in (Kind.HOLD, Kind.UNHOLD)]
    # the Hold is on the agent's Local channel 1795491317.12; the Unhold a blind transfer
    # sends with no Hold before it is not a hold interval
    assert holds == [(Kind.HOLD, "1795491317.10", "support", "Agent 1002", 1795491321),
                     (Kind.UNHOLD, "1795491317.10", "support", "Agent 1002", 1795491324)]


def test_transfer_takes_its_target_from_the_blind_transfer_event():
    events, _, _ = map_all(recorded_messages())
    (transfer,) = [e for e in events if e.kind == Kind.TRANSFER]
    assert (transfer.call_id, transfer.reason, transfer.value, transfer.talk_s) == (
        "1795491383.36", "blind", "s@survey", 1.0)


def test_pauses_carry_the_reason_in_the_key():
    events, _, _ = map_all(recorded_messages())
    pauses = [(e.kind, e.queue, e.agent, e.discr) for e in events
              if e.kind in (Kind.PAUSE, Kind.UNPAUSE)]
    assert pauses[:2] == [(Kind.PAUSE, "sales", "Agent 1003", "lunch"),
                          (Kind.UNPAUSE, "sales", "Agent 1003", "")]
    assert (Kind.PAUSE, "support", "Agent 1009", "training") in pauses


def test_links_tie_member_channels_to_the_callers_linkedid():
    _, links, _ = map_all(recorded_messages())
    linked = {link.uniqueid: link.linked_id for link in links}
    assert linked["1795491317.12"] == "1795491317.10"  # the agent's channel of the hold call
    assert linked["1795491317.10"] == "1795491317.10"


def hold_call(uid, member_uid, agent, queue="support"):
    base = {"Uniqueid": uid, "Linkedid": uid, "Queue": queue, "Timestamp": "100.5"}
    return [
        {"Event": "QueueCallerJoin", "Position": "1", "CallerIDNum": "<unknown>", **base},
        {"Event": "AgentConnect", "MemberName": agent, "DestUniqueid": member_uid,
         "DestLinkedid": uid, "HoldTime": "2", "RingTime": "1", **base},
    ]


def test_concurrent_holds_go_to_their_own_calls():
    mapper = AmiMapper("pbx")
    map_all(hold_call("1.1", "1.2", "Agent A") + hold_call("2.1", "2.2", "Agent B"), mapper)
    events, _, _ = map_all([
        {"Event": "Hold", "Uniqueid": "2.2", "Timestamp": "101"},
        {"Event": "Hold", "Uniqueid": "1.1", "Timestamp": "102"},  # the caller's side
        {"Event": "Unhold", "Uniqueid": "2.2", "Timestamp": "103"},
        {"Event": "Unhold", "Uniqueid": "1.1", "Timestamp": "104"},
        {"Event": "Hold", "Uniqueid": "9.9", "Timestamp": "105"},  # not a queue call
    ], mapper)
    assert [(e.kind, e.call_id, e.agent, e.tsec) for e in events] == [
        (Kind.HOLD, "2.1", "Agent B", 101), (Kind.HOLD, "1.1", "Agent A", 102),
        (Kind.UNHOLD, "2.1", "Agent B", 103), (Kind.UNHOLD, "1.1", "Agent A", 104)]


def test_caller_id_unknown_becomes_empty():
    events, _, _ = map_all(hold_call("1.1", "1.2", "A"))
    assert events[0].caller_number == ""


def test_missing_fields_and_bad_numbers_warn_with_location_and_never_raise():
    events, _, warnings = map_all([
        {"Event": "AgentConnect", "Queue": "q", "MemberName": "A", "Timestamp": "5"},
        {"Event": "QueueCallerJoin", "Uniqueid": "3.3", "Queue": "q", "Position": "x" * 100,
         "Timestamp": "not-a-time"},
        {"Event": "AgentRingNoAnswer", "Uniqueid": "3.3", "Queue": "q", "MemberName": "A",
         "RingTime": "1e400"},
    ])
    assert "AgentConnect (Uniqueid -, Timestamp 5): missing Uniqueid" in warnings[0]
    # a Timestamp is part of the key: without a possible one the event cannot be matched
    assert "impossible Timestamp 'not-a-time'; skipped" in warnings[1]
    assert "Uniqueid 3.3" in warnings[1]
    assert "RingTime" in warnings[2]
    assert [(e.kind, e.ring_s) for e in events] == [(Kind.RING_NO_ANSWER, None)]


def test_unknown_events_are_warned_once():
    _, _, warnings = map_all([{"Event": "FancyNewThing"}] * 3 + [{"Event": "Newstate"}])
    assert warnings == ["unknown AMI event 'FancyNewThing' ignored (warned once)"]


def test_user_events_of_our_dialplan():
    # as asterisk_conf/extensions.conf sends them
    events, _, warnings = map_all([
        {"Event": "UserEvent", "UserEvent": "IVRExit", "Uniqueid": "7.7", "Node": "main",
         "Outcome": "to-queue", "Queue": "sales", "Timestamp": "50"},
        {"Event": "UserEvent", "UserEvent": "IVRExit", "Uniqueid": "8.8", "Node": "hours",
         "Outcome": "self-service", "Queue": "", "Timestamp": "51"},
        {"Event": "UserEvent", "UserEvent": "Disposition", "Uniqueid": "9.1", "Code": "sale",
         "Queue": "support", "Agent": "Agent A", "CallUniqueid": "1.1", "Timestamp": "120"},
        {"Event": "UserEvent", "UserEvent": "CsatResult", "Uniqueid": "1.1"},
        {"Event": "UserEvent", "UserEvent": "IVRExit", "Uniqueid": "9.9"},
    ])
    assert [(e.kind, e.call_id, e.queue, e.agent, e.discr, e.value) for e in events] == [
        (Kind.IVR_EXIT, "7.7", "sales", "", "main", "to-queue"),
        (Kind.IVR_EXIT, "8.8", "", "", "hours", "self-service"),
        (Kind.DISPOSITION, "1.1", "support", "Agent A", "", "sale")]
    assert warnings == ["UserEvent (Uniqueid 9.9, Timestamp -): missing Outcome; skipped"]


def test_state_is_released_at_hangup_and_end_and_bounded():
    mapper = AmiMapper("pbx")
    map_all(hold_call("1.1", "1.2", "A"), mapper)
    map_all([{"Event": "Hangup", "Uniqueid": "1.2"}, {"Event": "Hangup", "Uniqueid": "1.1"}],
            mapper)
    assert mapper.channels == {}
    assert list(mapper.calls) == ["1.1"]  # its AgentComplete may come after the Hangups
    map_all([{"Event": "AgentComplete", "Queue": "support", "MemberName": "A",
              "TalkTime": "3", "Reason": "caller", "Timestamp": "103.5"}], mapper)
    assert (mapper.calls, mapper.channels, mapper.linked, mapper.serving) == ({}, {}, {}, {})
    for n in range(MAX_TRACKED + 10):
        mapper.map({"Event": "QueueCallerJoin", "Uniqueid": f"{n}.0", "Queue": "q"}, 0.0)
    assert len(mapper.calls) == len(mapper.channels) == MAX_TRACKED


def abandon_without_hangup(uid, queue="sales"):
    return [{"Event": "QueueCallerJoin", "Uniqueid": uid, "Queue": queue, "Position": "1"},
            {"Event": "QueueCallerAbandon", "Uniqueid": uid, "Queue": queue, "Position": "1",
             "OriginalPosition": "1", "HoldTime": "9"}]


def member(event, queue="sales", interface="Local/1@agents/n", status="1"):
    return {"Event": event, "Queue": queue, "Interface": interface, "MemberName": "A",
            "Status": status, "Paused": "0"}


def test_exit_empty_when_the_queue_has_no_member_left_else_timeout():
    mapper = AmiMapper("pbx")
    events, _, _ = map_all([
        # the QueueStatus list at login names the members
        {"Event": "QueueMember", "Queue": "sales", "Location": "Local/1@agents/n",
         "Name": "A", "Status": "1"},
        *abandon_without_hangup("1.1"),  # a member is there: the queue timed out
        member("QueueMemberRemoved"),
        *abandon_without_hangup("2.1"),  # nobody left: leavewhenempty
        member("QueueMemberAdded", status="4"),  # an invalid member does not count
        *abandon_without_hangup("3.1"),
        member("QueueMemberStatus", status="5"),  # unavailable counts in `loose` mode
        *abandon_without_hangup("4.1"),
        *abandon_without_hangup("5.1", queue="support"),  # members never seen: timeout
    ], mapper)
    exits = [(e.call_id, e.kind) for e in events
             if e.kind in (Kind.EXIT_TIMEOUT, Kind.EXIT_EMPTY)]
    assert exits == [("1.1", Kind.EXIT_TIMEOUT), ("2.1", Kind.EXIT_EMPTY),
                     ("3.1", Kind.EXIT_EMPTY), ("4.1", Kind.EXIT_TIMEOUT),
                     ("5.1", Kind.EXIT_TIMEOUT)]


def test_attended_transfer_target_as_queue_log_writes_it():
    mapper = AmiMapper("pbx")
    map_all(hold_call("1.1", "1.2", "Agent A"), mapper)
    events, _, _ = map_all([
        {"Event": "AttendedTransfer", "Result": "Success", "OrigTransfererUniqueid": "1.2",
         "SecondTransfererUniqueid": "5.5", "DestType": "Bridge",
         "DestBridgeUniqueid": "b-42", "Timestamp": "130"},
        {"Event": "AgentComplete", "Uniqueid": "1.1", "Queue": "support",
         "MemberName": "Agent A", "HoldTime": "2", "TalkTime": "20", "Reason": "transfer",
         "Timestamp": "130.2"},
    ], mapper)
    (transfer,) = events
    assert (transfer.kind, transfer.reason, transfer.value, transfer.talk_s) == (
        Kind.TRANSFER, "attended", "BRIDGE:b-42", 20.0)


EXAMPLES = Path(__file__).parent.parent / "examples"


def test_product_dialplan_capture_has_the_keys_of_its_queue_log():
    """examples/: a smoke run through asterisk_conf/'s dialplan, recorded on both sides."""
    messages, junk = AmiParser().feed((EXAMPLES / "ami-capture.txt").read_bytes())
    assert junk == []
    events, _, warnings = map_all([m for m in messages if "Event" in m])
    assert warnings == []
    twinned = {**TWINNED, "EXITEMPTY": Kind.EXIT_EMPTY, "UNPAUSE": Kind.UNPAUSE,
               "IVREXIT": Kind.IVR_EXIT, "DISPOSITION": Kind.DISPOSITION}
    expected = set()
    for line in (EXAMPLES / "queue_log.sample").read_text().splitlines():
        epoch, call_id, queue, agent, event, *data = line.split("|")
        if event not in twinned or queue == "NONE" and event in ("PAUSE", "UNPAUSE"):
            continue
        if event == "UNPAUSE" and data == ["Auto-Unpause"]:
            continue  # log_unpause_on_reason_change: queue_log only, no AMI event
        none = lambda v: "" if v in ("NONE", "MANAGER") else v  # noqa: E731
        discr = {"PAUSE": data[0], "IVREXIT": data[1] if len(data) > 1 else ""}.get(event, "")
        if event == "IVREXIT":
            queue = data[2] if len(data) > 2 else ""
        expected.add((none(call_id), twinned[event], none(queue), none(agent), int(epoch),
                      discr))
    got = {k[1:] for k in map(key, events) if k[2] in set(twinned.values())}
    unmatched = [k for k in expected
                 if not any(g[:4] == k[:4] and g[5] == k[5] and abs(g[4] - k[4]) <= 1
                            for g in got)]
    assert unmatched == []
    assert len(got) == len(expected)
    kinds = {k[1] for k in expected}
    assert {Kind.EXIT_EMPTY, Kind.DISPOSITION, Kind.IVR_EXIT, Kind.ABANDON} <= kinds


def test_agent_complete_without_the_gone_callers_fields_is_found_by_the_member_channel():
    mapper = AmiMapper("pbx")
    map_all(hold_call("1.1", "1.2", "Agent A"), mapper)
    # Asterisk 22, caller hung up first: no Channel/Uniqueid/Linkedid of the caller
    events, _, warnings = map_all([
        {"Event": "AgentComplete", "DestUniqueid": "1.2", "DestLinkedid": "1.1",
         "Queue": "support", "MemberName": "Agent A", "HoldTime": "2", "TalkTime": "7",
         "Reason": "caller", "Timestamp": "140"},
        {"Event": "AgentComplete", "DestUniqueid": "8.8", "Queue": "support",
         "MemberName": "Agent B", "Reason": "caller", "Timestamp": "141"},
    ], mapper)
    assert [(e.call_id, e.kind, e.reason, e.talk_s) for e in events] == [
        ("1.1", Kind.COMPLETE, "caller", 7.0)]
    assert warnings == ["AgentComplete (Uniqueid -, Timestamp 141): missing Uniqueid (and no "
                        "call of its member matches); skipped"]
