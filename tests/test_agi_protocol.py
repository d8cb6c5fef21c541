"""The FastAGI wire protocol, pure: environment, replies, HANGUP between them, 520 blocks;
and `AgiSession` over an in-memory stream: EOF, 511, 510/520, a reply that never comes."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from agi_plugin.protocol import (
    AgiHangup,
    AgiProtocolError,
    ReplyReader,
    arguments,
    parse_env,
    parse_reply,
    quote,
    script_name,
)
from agi_plugin.session import AgiSession

# Recorded from Asterisk 22.10.1 (examples/recordings/answered.agi.jsonl)
ENV_LINES = [
    "agi_network: yes", "agi_network_script: csat", "agi_request: agi://127.0.0.1:4573/csat",
    "agi_channel: Local/s@caller-sim-00000000;1", "agi_language: en", "agi_uniqueid: 1795491290.0",
    "agi_callerid: 5558039", "agi_calleridname: Cust answered", "agi_accountcode: ",
    "agi_arg_1: 1795491290.0", "agi_arg_2: support", "agi_arg_3: Agent 1001",
]


def test_environment_and_arguments():
    env = parse_env(ENV_LINES)
    assert env["agi_uniqueid"] == "1795491290.0" and env["agi_accountcode"] == ""
    assert arguments(env) == ["1795491290.0", "support", "Agent 1001"]
    assert script_name(env) == "csat"


def test_script_from_the_request_when_not_network_script():
    env = parse_env(["agi_request: agi://10.0.0.1/csat?x=1"])
    assert script_name(env) == "csat"


@pytest.mark.parametrize("lines, message", [
    (["GET / HTTP/1.1"], "line 1"),
    (["agi_request: agi://x/csat", "Host: example"], "line 2"),
    (["agi_channel: x"], "without agi_request"),
    ([f"agi_x{i}: y" for i in range(500)], "500 lines"),
])
def test_malformed_environment_names_the_problem(lines, message):
    with pytest.raises(AgiProtocolError, match=message):
        parse_env(lines)


@pytest.mark.parametrize("line, code, result, data", [
    ("200 result=0", 200, "0", ""),
    ("200 result=4", 200, "4", ""),
    ("200 result= (timeout)", 200, "", "(timeout)"),
    ("200 result=12 (timeout)", 200, "12", "(timeout)"),
    ("200 result=-1", 200, "-1", ""),
    ("200 result=1 (Agent 1001)", 200, "1", "(Agent 1001)"),
    ("200 result=0 endpos=8000", 200, "0", "endpos=8000"),
    ("510 Invalid or unknown command", 510, "", "Invalid or unknown command"),
    ("511 Command Not Permitted on a dead channel or intercept routine", 511, "",
     "Command Not Permitted on a dead channel or intercept routine"),
])
def test_reply_lines(line, code, result, data):
    reply = parse_reply(line)
    assert (reply.code, reply.result, reply.data) == (code, result, data)


def test_reply_flags():
    assert parse_reply("200 result= (timeout)").timed_out
    assert not parse_reply("200 result=4").timed_out
    assert parse_reply("200 result=1 (Agent 1001)").value == "Agent 1001"
    assert parse_reply("200 result=0").value == ""


@pytest.mark.parametrize("line", ["", "HELLO", "20 result=1", "abc result=1"])
def test_garbage_is_not_a_reply(line):
    with pytest.raises(AgiProtocolError):
        parse_reply(line)


def feed_all(reader: ReplyReader, lines: list[str]) -> list:
    return [r for r in map(reader.feed, lines) if r is not None]


def test_hangup_between_replies_does_not_shift_them():
    reader = ReplyReader()
    replies = feed_all(reader, ["200 result=0", "HANGUP", "511 Command Not Permitted on a dead "
                                "channel or intercept routine"])
    assert [r.code for r in replies] == [200, 511]
    assert reader.hung_up


def test_hangup_after_a_reply_marks_the_session():
    reader = ReplyReader()
    assert feed_all(reader, ["200 result=-1", "HANGUP"])[0].result == "-1"
    assert reader.hung_up


def test_trying_lines_are_skipped():
    reader = ReplyReader()
    replies = feed_all(reader, ["100 result=0 Trying...", "200 result=3"])
    assert [(r.code, r.result) for r in replies] == [(200, "3")]


def test_520_usage_block_is_one_reply():
    reader = ReplyReader()
    lines = ["520-Invalid command syntax.  Proper usage follows:",
             "Usage: GET DATA <file to be streamed> [timeout] [maxdigits]",
             "", "HANGUP", "520 End of proper usage.", "200 result=0"]
    replies = feed_all(reader, lines)
    assert [r.code for r in replies] == [520, 200]
    assert replies[0].data == "Usage: GET DATA <file to be streamed> [timeout] [maxdigits]\n"
    assert reader.hung_up


def test_quote():
    assert quote("SURVEY:q1") == '"SURVEY:q1"'
    assert quote('a "b" \\c') == '"a \\"b\\" \\\\c"'
    with pytest.raises(ValueError):
        quote("a\nANSWER")


class StubWriter:
    """What AgiSession needs of a StreamWriter, recording what it writes."""

    def __init__(self) -> None:
        self.written = b""

    def get_extra_info(self, name: str):
        return ("127.0.0.1", 40000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        pass


def session_reading(data: bytes) -> tuple[AgiSession, StubWriter]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    writer = StubWriter()
    return AgiSession(reader, cast(asyncio.StreamWriter, writer)), writer


async def test_eof_inside_the_environment_is_a_protocol_error():
    session, _ = session_reading(b"agi_network: yes\nagi_request: agi://x/csat\n")
    with pytest.raises(AgiProtocolError, match="closed after 2 environment lines"):
        await session.read_env()


async def test_eof_instead_of_a_reply_is_a_hangup():
    session, writer = session_reading(b"200 result=0\n200 result=")  # cut mid-line
    assert (await session.command("ANSWER")).result == "0"
    with pytest.raises(AgiHangup):
        await session.command("GET DATA beep 3000 1")
    assert writer.written == b"ANSWER\nGET DATA beep 3000 1\n"


async def test_511_and_hangup_notice_end_the_session():
    session, writer = session_reading(b"200 result=0\nHANGUP\n511 Command Not Permitted on a "
                                      b"dead channel or intercept routine\n")
    await session.command('SEND TEXT "SURVEY:q1"')
    with pytest.raises(AgiHangup):
        await session.command("GET DATA beep 3000 1")
    assert session.hung_up
    with pytest.raises(AgiHangup):  # nothing more is sent to a dead channel
        await session.command("ANSWER")
    assert writer.written.count(b"\n") == 2


async def test_510_and_520_replies_are_protocol_errors():
    session, _ = session_reading(b"510 Invalid or unknown command\n520-Invalid command syntax."
                                 b"  Proper usage follows:\nUsage: GET DATA\n520 End of proper "
                                 b"usage.\n")
    with pytest.raises(AgiProtocolError, match="refused"):
        await session.command("FOO")
    with pytest.raises(AgiProtocolError, match="refused"):
        await session.command("GET DATA")


async def test_a_reply_that_never_comes_times_out():
    reader, writer = asyncio.StreamReader(), StubWriter()
    with pytest.raises(AgiProtocolError, match="no reply to ANSWER within 0.1 s"):
        await AgiSession(reader, writer).command("ANSWER", timeout_s=0.1)
