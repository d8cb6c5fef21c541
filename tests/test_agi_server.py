"""The survey server over real sockets: a fake Asterisk (callkpi/testing/fakeasterisk.py) plays
scripted callers against `AgiServer`, and the rows in a real store (SQLite and PostgreSQL) are
checked."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

import pytest

from agi_plugin import survey as survey_module
from callkpi.testing.fakeasterisk import FakeCall, environment
from agi_plugin.server import AgiServer
from agi_plugin.survey import load_questions
from callkpi.config import Config, ConfigError
from callkpi.events import SOURCE_AGI, Kind, make_event
from callkpi.store import Batch
from store_helpers import write_lock_held

UID = "1795491290.7"
LINKED = "1795491290.5"
SELECT = ("SELECT call_id, queue, agent, discr, value, reason, caller_number, source, extra"
          " FROM events WHERE kind = 'survey-answer' ORDER BY ts, id")


def make_config(**survey) -> Config:
    config = Config()
    config.server.name = "pbx1"
    config.agi.port = 0
    config.survey.announce_text = True
    for key, value in survey.items():
        setattr(config.survey, key, value)
    return config


@pytest.fixture
async def serve(store, tmp_path):
    """serve(config=None, **kwargs) -> a started AgiServer on a free loopback port."""
    servers = []

    async def start(config: Config | None = None, **kwargs) -> AgiServer:
        config = config or make_config()
        config.store.db = store.path  # a file store's spool goes beside it
        if "://" in store.path and not config.agi.spool:  # a server's: it needs its own
            config.agi.spool = str(tmp_path / "spool")
        server = await AgiServer(config, store, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(grace_s=1)


def caller(presses, uid=UID, args=None, variables=None, **env) -> FakeCall:
    args = [uid, "support", "Agent 1001"] if args is None else args
    return FakeCall(environment(uid, args, **env), list(presses),
                    variables={"CHANNEL(linkedid)": LINKED, **(variables or {})})


async def run(call: FakeCall, server: AgiServer, timeout_s: float = 30) -> FakeCall:
    """Play the call and wait until the server has finished with it (a caller that hangs up
    is gone before the server records the hang-up) and its answers are in the store."""
    await call.run("127.0.0.1", server.port, timeout_s)
    await finished(server)
    return call


async def finished(server: AgiServer, timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while server.running:
            await asyncio.sleep(0.01)
        await server.stored_all()


async def answers(store) -> list[tuple]:
    return [(*row[:8], json.loads(row[8] or "{}")) for row in await store.fetch_all(SELECT)]


async def brief(store) -> list[tuple[str, str, str]]:
    return [(discr, value, reason) for _, _, _, discr, value, reason, *_ in await answers(store)]


async def test_answers_are_stored_with_the_call_queue_and_agent(serve, store):
    server = await serve()
    call = await run(caller(["4", "1"]), server)
    rows = await answers(store)
    assert [r[:8] for r in rows] == [
        (UID, "support", "Agent 1001", "q1", "4", "answered", "5551234", SOURCE_AGI),
        (UID, "support", "Agent 1001", "q2", "1", "answered", "5551234", SOURCE_AGI)]
    q1, q2 = rows[0][8], rows[1][8]
    assert q1["question_kind"] == "csat" and q2["question_kind"] == "resolution"
    assert q1["linkedid"] == LINKED and q1["session"] == q2["session"]
    assert q1["call_id_from"] == q1["queue_from"] == q1["agent_from"] == "arg"
    assert await store.fetch_all("SELECT uniqueid, linked_id FROM call_links") == [(UID, LINKED)]
    assert call.texts == ["SURVEY:q1", "SURVEY:q2"]
    prompts = [c for c in call.commands if c.startswith(("GET DATA", "STREAM FILE"))]
    assert prompts == [  # "&": the files before the last play interruptible by any key
        'STREAM FILE vm-press "0123456789*#"', 'STREAM FILE digits/1 "0123456789*#"',
        'STREAM FILE digits/2 "0123456789*#"', 'STREAM FILE digits/3 "0123456789*#"',
        'STREAM FILE digits/4 "0123456789*#"', "GET DATA digits/5 6000 1",
        'STREAM FILE if-correct-press "0123456789*#"', "GET DATA digits/1 6000 1",
        'STREAM FILE auth-thankyou ""']
    assert call.commands[-1] == 'STREAM FILE auth-thankyou ""'  # the thank-you, then goodbye
    assert call.closed_by_server


async def test_the_text_announces_each_try_right_before_its_get_data(serve, store):
    server = await serve()
    call = await run(caller(["9", "2", "1"]), server)
    asks = [c for c in call.commands if c.startswith(("SEND TEXT", "GET DATA"))]
    assert [c.split()[0] + c.split()[1] for c in asks] == ["SENDTEXT", "GETDATA"] * 3
    first_prompt = call.commands.index('STREAM FILE vm-press "0123456789*#"')
    assert call.commands[first_prompt - 1] == 'SEND TEXT "SURVEY:q1"'
    assert call.texts == ["SURVEY:q1", "SURVEY:q1", "SURVEY:q2"]


async def test_invalid_then_valid_is_answered_after_the_invalid_prompt(serve, store):
    server = await serve()
    call = await run(caller(["9", "3", "2"]), server)
    assert await brief(store) == [("q1", "3", "answered"), ("q2", "2", "answered")]
    assert (await answers(store))[0][8]["attempts"] == 2
    assert 'STREAM FILE pm-invalid-option ""' in call.commands


async def test_invalid_after_every_retry_is_invalid(serve, store):
    server = await serve()
    await run(caller(["9", "*", "#", "3"]), server)
    assert await brief(store) == [("q1", "*", "invalid"), ("q2", "3", "invalid")]


async def test_silence_after_every_retry_is_no_response(serve, store):
    server = await serve()
    call = await run(caller(["none", "none", "1"]), server)
    assert await brief(store) == [("q1", "", "no-response"), ("q2", "1", "answered")]
    assert 'STREAM FILE pm-invalid-option ""' not in call.commands  # silence replays the question


async def test_the_last_try_decides(serve, store):
    server = await serve()
    await run(caller(["*", "none", "none", "7"]), server)
    assert await brief(store) == [("q1", "", "no-response"), ("q2", "7", "invalid")]


@pytest.mark.parametrize("how", ["hangup", "hangup-first", "eof"])
async def test_hangup_mid_survey_keeps_earlier_answers(serve, store, how):
    server = await serve()
    call = await run(caller(["5", how]), server)
    assert await brief(store) == [("q1", "5", "answered"), ("q2", "", "hangup")]
    assert not any(c.startswith("STREAM FILE auth-thankyou") for c in call.commands)


async def test_hangup_at_the_first_question_stores_only_it(serve, store):
    server = await serve()
    await run(caller(["hangup"]), server)
    assert await brief(store) == [("q1", "", "hangup")]


async def test_a_key_pressed_during_the_prompt_is_the_answer(serve, store):
    server = await serve()
    call = await run(caller(["early4", "early9", "2"]), server)
    assert await brief(store) == [("q1", "4", "answered"), ("q2", "2", "answered")]
    assert call.commands.count("GET DATA digits/5 6000 1") == 0  # q1 ended in its prompt


async def test_an_impossible_key_code_ends_the_session(serve, store):
    server = await serve()
    await run(caller(["reply:200 result=99999999 endpos=10"]), server)
    assert await brief(store) == [] and server.stats.errors == 1


async def test_trying_lines_before_replies(serve, store):
    server = await serve()
    call = caller(["2", "1"])
    call.trying = True
    await run(call, server)
    assert await brief(store) == [("q1", "2", "answered"), ("q2", "1", "answered")]


@pytest.mark.parametrize("junk", ["junk", "usage", "broken-prompt"])
async def test_junk_ends_the_session_not_the_server(serve, store, junk, caplog):
    server = await serve()
    await run(caller(["3", junk]), server)
    assert await brief(store) == [("q1", "3", "answered")]  # the question cut short: nothing
    assert server.stats.errors == 1 and server.stats.answers == 1
    assert "survey ended" in caplog.text
    await run(caller(["4", "2"], uid="1795491290.8"), server)
    assert len(await brief(store)) == 3


async def test_malformed_environment_is_logged_with_the_peer_and_dropped(serve, store, caplog):
    server = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without a word
    writer.close()
    assert server.stats.dropped == 1
    assert "127.0.0.1:" in caplog.text and "dropped" in caplog.text
    assert await brief(store) == []


async def test_silent_and_vanishing_clients_time_out_without_blocking_others(serve, store):
    server = await serve(env_timeout_s=0.5)
    silent = await asyncio.open_connection("127.0.0.1", server.port)
    half = await asyncio.open_connection("127.0.0.1", server.port)
    half[1].write(b"agi_network: yes\n")  # part of an environment, then nothing
    gone = await asyncio.open_connection("127.0.0.1", server.port)
    gone[1].close()  # EOF before any header
    await caller(["5", "1"]).run("127.0.0.1", server.port, timeout_s=2)
    await asyncio.wait_for(server.stored_all(), 10)
    assert await brief(store) == [("q1", "5", "answered"), ("q2", "1", "answered")]
    for reader, writer in (silent, half):
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
    assert server.stats.dropped == 3


async def test_hundred_concurrent_sessions_do_not_block_each_other(serve, store):
    server = await serve()
    # a stuck Asterisk thread: the environment, then never a reply
    stuck_reader, stuck = await asyncio.open_connection("127.0.0.1", server.port)
    stuck.write("".join(f"{k}: {v}\n" for k, v in environment("1795400000.999", []).items())
                .encode() + b"\n")
    calls = [caller([str(1 + i % 5), str(1 + i % 2)], uid=f"17954{i:05d}.{i}") for i in range(100)]
    await asyncio.wait_for(asyncio.gather(*(c.run("127.0.0.1", server.port) for c in calls)), 20)
    assert server.running == 1  # the stuck one waits for its reply, alone
    await asyncio.wait_for(server.stored_all(), 5)
    rows = await answers(store)
    assert len(rows) == 200 and {r[5] for r in rows} == {"answered"}
    by_call = {(r[0], r[3]): r[4] for r in rows}
    for i in range(100):
        assert by_call[(f"17954{i:05d}.{i}", "q1")] == str(1 + i % 5)
        assert by_call[(f"17954{i:05d}.{i}", "q2")] == str(1 + i % 2)
    stuck.close()


async def test_allow_list_refuses_other_sources(serve, store, caplog, tmp_path):
    config = make_config()
    config.agi.allow = ["10.0.0.0/8"]
    server = await serve(config)
    call = await run(caller(["4", "1"]), server)
    assert call.commands == [] and call.closed_by_server
    assert server.stats.refused == 1 and "refused FastAGI connection" in caplog.text
    assert await brief(store) == []
    config = make_config()
    config.agi.allow = ["10.0.0.0/8", "127.0.0.1"]
    config.agi.spool = str(tmp_path / "second-spool")  # one spool per running server
    allowed = await serve(config)
    await run(caller(["4", "1"]), allowed)
    assert len(await brief(store)) == 2


async def test_non_loopback_bind_needs_an_allow_list(store, tmp_path):
    config = make_config()
    config.agi.spool = str(tmp_path / "spool")  # not ./callkpi.db-agi-spool
    config.agi.bind = "0.0.0.0"
    with pytest.raises(ConfigError, match="allow"):
        AgiServer(config, store)
    config.agi.allow = ["not-an-ip"]
    with pytest.raises(ConfigError, match="not-an-ip"):
        AgiServer(config, store)


async def test_missing_or_bad_arguments_are_completed_from_the_channel(serve, store):
    server = await serve()
    await run(caller(["3", "2"], args=["junk", "sup\x07port", ""],
                 variables={"CALLKPI_QUEUE": "support", "MEMBERNAME": "Agent 1002"}
                 ), server)
    rows = await answers(store)
    assert rows[0][:3] == (UID, "support", "Agent 1002")
    assert {k: rows[0][8][k] for k in ("call_id_from", "queue_from", "agent_from")} == {
        "call_id_from": "channel", "queue_from": "variable", "agent_from": "variable"}


async def test_a_call_with_no_uniqueid_anywhere_is_not_surveyed(serve, store, caplog):
    server = await serve()
    call = caller(["3", "2"], args=["x", "support", "Agent 1001"])
    call.env["agi_uniqueid"] = "junk"
    await run(call, server)
    assert await brief(store) == [] and not any(c.startswith("GET DATA") for c in call.commands)
    assert "no uniqueid" in caplog.text


async def test_language_is_set_when_the_survey_names_one(serve, store):
    server = await serve(make_config(language="fr"))
    call = await run(caller(["3", "2"]), server)
    assert 'SET VARIABLE CHANNEL(language) "fr"' in call.commands
    assert (await answers(store))[0][8]["language"] == "fr"


async def test_a_queue_can_have_its_own_survey_language(serve, store):
    """[survey] languages by queue, over [survey] language; "" leaves the channel's own
    (an IVR that set CHANNEL(language) per caller)."""
    server = await serve(make_config(language="", languages={"support": "fa"}))
    call = await run(caller(["3", "2"]), server)
    assert 'SET VARIABLE CHANNEL(language) "fa"' in call.commands
    assert (await answers(store))[0][8]["language"] == "fa"
    call = await run(caller(["3", "2"], uid="1795000000.77",
                            args=["1795000000.77", "sales", "Agent 1001"]), server)
    assert not [c for c in call.commands if "CHANNEL(language)" in c]  # the channel's: en
    assert (await answers(store))[-1][8]["language"] == "en"


async def test_a_bad_queue_language_is_refused_at_start():
    with pytest.raises(ConfigError, match="not a language code for queue 'support'"):
        load_questions(make_config(languages={"support": "fa;rm -rf"}).survey)


async def test_sampling_is_seedable(serve, store):
    server = await serve(make_config(sample_rate=0.5), rng=random.Random(7))
    rng = random.Random(7)
    picks = [rng.random() < 0.5 for _ in range(10)]
    for i in range(10):
        await run(caller(["3", "1"], uid=f"1795000000.{i}"), server)
    surveyed = {r[0] for r in await answers(store)}
    assert surveyed == {f"1795000000.{i}" for i, pick in enumerate(picks) if pick}
    assert 0 < len(surveyed) < 10 and server.stats.skipped == 10 - len(surveyed)


async def test_callers_who_answered_recently_are_skipped(serve, store):
    await store.write(Batch(events=[make_event(
        server="pbx1", kind=Kind.SURVEY_ANSWER, ts=time.time() - 86400, source=SOURCE_AGI,
        call_id="1.1", discr="q1", value="5", reason="answered", caller_number="5551234")]))
    server = await serve(make_config(skip_recent_days=30))
    skipped = await run(caller(["3", "1"]), server)
    other = await run(caller(["3", "1"], uid="1795491290.9", callerid="5559999"), server)
    assert not any(c.startswith("GET DATA") for c in skipped.commands)
    assert any(c.startswith("GET DATA") for c in other.commands)
    assert {r[0] for r in await answers(store)} == {"1.1", "1795491290.9"}


async def test_short_calls_are_skipped_by_their_stored_talk_time(serve, store, monkeypatch):
    monkeypatch.setattr(survey_module, "TALK_LOOKUP_S", 0.3)
    for uid, talk in (("1795491290.1", 3.0), ("1795491290.2", 30.0)):
        await store.write(Batch(events=[make_event(
            server="pbx1", kind=Kind.COMPLETE, ts=1795491280.0, source="ami", call_id=uid,
            queue="support", agent="Agent 1001", talk_s=talk, reason="agent")]))
    server = await serve(make_config(min_talk_s=10))
    for uid in ("1795491290.1", "1795491290.2", "1795491290.3"):  # .3: not in the store yet
        await run(caller(["3", "1"], uid=uid), server)
    assert {r[0] for r in await answers(store)} == {"1795491290.2", "1795491290.3"}
    assert server.stats.skipped == 1


async def test_stop_lets_running_surveys_finish(serve, store):
    server = await serve()
    call = caller(["none", "3", "1"])
    running = asyncio.create_task(call.run("127.0.0.1", server.port))
    async with asyncio.timeout(10):  # the survey is under way: its first question asked
        while not any(c.startswith("GET DATA") for c in call.commands):
            await asyncio.sleep(0.01)
    await server.stop(grace_s=5)
    await running
    assert await brief(store) == [("q1", "3", "answered"), ("q2", "1", "answered")]
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_a_failing_store_delays_the_answers_and_never_loses_them(serve, store, caplog):
    server = await serve()
    write = store.write

    async def broken(batch):
        raise OSError("disk full")

    store.write = broken
    call = await caller(["3", "1"]).run("127.0.0.1", server.port)
    assert call.commands[-1].startswith("STREAM FILE auth-thankyou")  # the caller never knew
    async with asyncio.timeout(10):  # the writer has tried
        while "survey answers wait in the spool" not in caplog.text:
            await asyncio.sleep(0.01)
    assert "disk full" in caplog.text
    assert server.writer.pending == 2 and await brief(store) == []
    store.write = write  # the store is back: the writer's next try takes them
    await finished(server, timeout_s=60)  # its tries back off (0.5 s, doubling)
    assert await brief(store) == [("q1", "3", "answered"), ("q2", "1", "answered")]
    assert server.writer.stored == 2


async def test_callers_never_wait_for_the_stores_write_lock(serve, store):
    """An ingest or a report holding the write lock for seconds delays the answers' arrival in
    the store, never the caller: the survey ends while the lock is still held."""
    server = await serve()
    async with write_lock_held(store.path):
        call = await caller(["4", "2"]).run("127.0.0.1", server.port)
        assert call.commands[-1].startswith("STREAM FILE auth-thankyou")
        assert server.writer.pending == 2 and await brief(store) == []
    await finished(server, timeout_s=60)
    assert await brief(store) == [("q1", "4", "answered"), ("q2", "2", "answered")]


async def test_a_call_is_surveyed_once(serve, store, caplog):
    caplog.set_level(logging.INFO)
    server = await serve()
    first = await run(caller(["4", "1"]), server)
    again = await run(caller(["2", "2"]), server)  # a second AGI() for the same call
    assert any(c.startswith("GET DATA") for c in first.commands)
    assert not any(c.startswith("GET DATA") for c in again.commands)
    assert "already surveyed (one survey per call)" in caplog.text
    both = [caller(["5", "1"], uid="1795491290.20"), caller(["1", "2"], uid="1795491290.20")]
    await asyncio.gather(*(c.run("127.0.0.1", server.port) for c in both))
    await finished(server)
    assert sum(any(c.startswith("GET DATA") for c in call.commands) for call in both) == 1
    assert len([r for r in await answers(store) if r[0] == "1795491290.20"]) == 2
    assert server.stats.skipped == 2


async def test_a_call_with_answers_in_the_store_is_not_surveyed_again(serve, store):
    """Answers from before a restart (or from another server) are in the store, not in this
    server's memory."""
    await store.write(Batch(events=[make_event(
        server="pbx1", kind=Kind.SURVEY_ANSWER, ts=1795491300.0, source=SOURCE_AGI,
        call_id=UID, discr="q1", value="5", reason="answered")]))
    server = await serve()
    call = await run(caller(["3", "1"]), server)
    assert not any(c.startswith("GET DATA") for c in call.commands)
    assert server.stats.skipped == 1


async def test_an_environment_over_16_kib_is_dropped(serve, store, caplog):
    server = await serve()
    call = caller(["4", "1"])
    for i in range(1, 11):
        call.env[f"agi_arg_{i + 3}"] = "x" * 2000  # 20 KB of arguments
    await run(call, server)
    assert call.commands == [] and server.stats.dropped == 1
    assert "bytes (at most 16384)" in caplog.text


@pytest.mark.parametrize("uid", ["pbx1-1795491290.7", "pbx-east-1-1795491290.7",
                                 "1795491290.-2147483648"])
async def test_uniqueids_as_asterisk_writes_them(serve, store, uid):
    """systemname in asterisk.conf prefixes every uniqueid; the counter can wrap negative."""
    server = await serve()
    await run(caller(["4", "1"], uid=uid), server)
    rows = await answers(store)
    assert {r[0] for r in rows} == {uid} and rows[0][8]["call_id_from"] == "arg"


@pytest.mark.parametrize("bad", ["12345678901234567890.1", "١٧٩٥٤٩١٢٩٠.٧", "1795491290.7 x",
                                 "pbx|1-1795491290.7"])
async def test_what_is_not_a_uniqueid_is_not_taken_for_one(serve, store, bad, caplog):
    """A 20-digit or non-ASCII "uniqueid" in the argument gives way to the channel's own;
    with min_talk_s the talk-time lookup then reads a valid second (it raised before)."""
    server = await serve(make_config(min_talk_s=5))
    await store.write(Batch(events=[make_event(
        server="pbx1", kind=Kind.COMPLETE, ts=1795491300.0, source="ami", call_id=UID,
        queue="support", agent="Agent 1001", talk_s=60.0, reason="agent")]))
    await run(caller(["4", "1"], args=[bad, "support", "Agent 1001"]), server)
    rows = await answers(store)
    assert {r[0] for r in rows} == {UID} and rows[0][8]["call_id_from"] == "channel"
    assert "Traceback" not in caplog.text and server.stats.errors == 0
    call = caller(["4", "1"], uid="1795491290.9", args=[bad, "support", "Agent 1001"])
    call.env["agi_uniqueid"] = bad
    await run(call, server)
    assert not any(c.startswith("GET DATA") for c in call.commands)
    assert "no uniqueid" in caplog.text


async def test_a_call_newer_than_the_server_is_not_looked_up_in_the_store(serve, store):
    """Only this server can have surveyed a call that began after it started: the caller
    does not wait for a store lookup (the memory of calls seen is enough)."""
    server = await serve()
    reads = []
    fetch_all = store.fetch_all

    async def counted(sql, params=()):
        reads.append(sql)
        return await fetch_all(sql, params)

    store.fetch_all = counted
    uid = f"{int(time.time()) + 1}.1"
    await run(caller(["4", "1"], uid=uid), server)
    await run(caller(["4", "1"], uid=uid), server)  # a second AGI(): known without a lookup
    assert reads == [] and server.stats.skipped == 1
    store.fetch_all = fetch_all
    assert {r[0] for r in await answers(store)} == {uid}
