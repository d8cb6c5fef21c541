"""The survey answers' spool: what a caller answered is on disk before the next prompt, goes to
a real SQLite store behind the callers, and nothing in it is lost or doubled by a crash, a stop,
an unreachable store or a line an OS crash cut short."""

from __future__ import annotations

import asyncio
import logging
import stat

import pytest

from agi_plugin.ratelog import RateLimitedLog
from agi_plugin.spool import AnswerWriter, Spool, SpoolInUse, encode, read_segment, spool_dir
from callkpi.config import Config, ConfigError
from callkpi.events import SOURCE_AGI, CallLink, Kind, make_event

log = logging.getLogger("test")


def answer(n: int, value: str = "4"):
    return make_event(server="pbx1", kind=Kind.SURVEY_ANSWER, ts=1795491300.0 + n,
                      source=SOURCE_AGI, call_id=f"1795491290.{n}", queue="support",
                      agent="Agent 1001", discr="q1", value=value, reason="answered",
                      caller_number="5551234", extra={"session": f"s{n}"})


async def stored(store) -> list[tuple]:
    return await store.fetch_all("SELECT call_id, value FROM events ORDER BY call_id")


def test_where_the_spool_is():
    config = Config()
    config.store.db = "/var/lib/callkpi/callkpi.db"
    assert str(spool_dir(config)) == "/var/lib/callkpi/callkpi.db-agi-spool"
    config.store.db = "sqlite:///srv/kpi.db"
    assert str(spool_dir(config)) == "/srv/kpi.db-agi-spool"
    config.agi.spool = "/var/spool/callkpi"
    assert str(spool_dir(config)) == "/var/spool/callkpi"
    config.agi.spool, config.store.db = "", "postgresql://kpi@db/kpi"
    with pytest.raises(ConfigError, match=r"\[agi\] spool: set a local directory"):
        spool_dir(config)


def test_answers_are_on_disk_at_once_and_private(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.open()
    links = [CallLink("pbx1", "1795491290.1", "1795491290.0", 1795491301.0)]
    spool.append(encode(answer(1), links))
    spool.append(encode(answer(2), []))
    # what a kill -9 now leaves: read by another reader, without closing anything
    [segment] = (tmp_path / "spool").glob("*.jsonl")
    got = read_segment(segment)
    assert got.events == [answer(1), answer(2)] and got.links == links
    assert got.quarantined == []
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600  # caller numbers
    spool.close()


def test_one_server_per_spool(tmp_path):
    first = Spool(tmp_path / "spool")
    first.open()
    with pytest.raises(SpoolInUse, match="in use by another survey server"):
        Spool(tmp_path / "spool").open()
    first.close()
    second = Spool(tmp_path / "spool")
    second.open()  # the lock went with the first
    second.close()


async def test_the_writer_stores_what_an_earlier_run_left_once(store, tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.open()
    spool.append(b"".join(encode(answer(n), []) for n in (1, 2, 3)))
    spool.close()  # a crash: nothing was written to the store
    writer = AnswerWriter(Spool(tmp_path / "spool"), store, RateLimitedLog(log))
    writer.start()
    assert writer.pending == 3
    await writer.record(answer(3), [])  # the same answer again (a replay): stored once
    await writer.record(answer(4), [])
    await asyncio.wait_for(writer.stored_all(), 10)
    assert await stored(store) == [(f"1795491290.{n}", "4") for n in (1, 2, 3, 4)]
    assert writer.stored == 4 and writer.pending == 0
    await writer.stop(5)
    assert list((tmp_path / "spool").glob("*.jsonl")) == []  # emptied once stored


async def test_a_line_cut_short_is_quarantined_and_the_rest_stored(store, tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.open()
    spool.append(encode(answer(1), []) + encode(answer(2), []))
    spool.close()
    [segment] = (tmp_path / "spool").glob("*.jsonl")
    whole = segment.read_bytes()
    segment.write_bytes(whole[:-20])  # an OS crash cut the last line
    writer = AnswerWriter(Spool(tmp_path / "spool"), store, RateLimitedLog(log))
    writer.start()
    await asyncio.wait_for(writer.stored_all(), 10)
    assert await stored(store) == [("1795491290.1", "4")]
    [(source, origin, line_no, reason)] = await store.fetch_all(
        "SELECT source, origin, line_no, reason FROM quarantine")
    assert (source, origin, line_no) == ("agi", str(segment), 2)
    assert reason.startswith("unreadable survey answer in the spool")
    await writer.stop(5)


async def test_a_stop_while_the_store_refuses_keeps_the_answers_for_the_next_start(
        store, tmp_path, caplog):
    writer = AnswerWriter(Spool(tmp_path / "spool"), store, RateLimitedLog(log))
    write = store.write

    async def refused(batch):
        raise OSError("database is locked")

    store.write = refused
    writer.start()
    await writer.record(answer(1), [])
    await writer.record(answer(2), [])
    await writer.stop(1)
    assert "2 survey answers are kept in" in caplog.text
    store.write = write
    again = AnswerWriter(Spool(tmp_path / "spool"), store, RateLimitedLog(log))
    again.start()
    await asyncio.wait_for(again.stored_all(), 10)
    assert await stored(store) == [("1795491290.1", "4"), ("1795491290.2", "4")]
    await again.stop(5)


async def test_a_spool_that_cannot_be_written_keeps_answers_in_memory(store, tmp_path, caplog):
    writer = AnswerWriter(Spool(tmp_path / "spool"), store, RateLimitedLog(log))
    writer.start()

    def full(lines):
        raise OSError(28, "No space left on device")

    writer.spool.append = full
    await writer.record(answer(1), [])
    await asyncio.wait_for(writer.stored_all(), 10)
    assert await stored(store) == [("1795491290.1", "4")]
    assert "cannot write survey answers to the spool" in caplog.text
    await writer.stop(5)


def test_ingest_stores_a_left_spools_answers_once_as_this_pbxs(tmp_path):
    """`callkpi ingest FILE.jsonl`: a spool no server drains (the store moved) goes into the
    store under [server] name, as a queue_log does; again, nothing is doubled; a cut line is
    quarantined with its place; a missing file is one line."""
    from click.testing import CliRunner

    from callkpi.cli import cli

    segment = tmp_path / "000000000001.jsonl"
    links = [CallLink("pbx1", "1795491290.1", "1795491290.1", 1795491301.0)]
    segment.write_bytes(encode(answer(1), links) + encode(answer(2), []) + b'{"event": ["pb')
    db = tmp_path / "callkpi.db"
    env = {"CALLKPI_SERVER_NAME": "pbx7"}
    first = CliRunner().invoke(cli, ["ingest", "--db", str(db), str(segment)], env=env)
    assert first.exit_code == 0, first.output
    assert first.output == "survey answers stored 2, duplicates skipped 0, quarantined 1\n"
    again = CliRunner().invoke(cli, ["ingest", "--db", str(db), str(segment)], env=env)
    # the cut line is in the quarantine already
    assert again.output == "survey answers stored 0, duplicates skipped 2, quarantined 0\n"

    async def rows() -> tuple[list[tuple], ...]:
        from callkpi.store import open_store

        async with await open_store(str(db)) as store:
            return (await store.fetch_all("SELECT server, call_id, value, source FROM events"
                                          " ORDER BY call_id"),
                    await store.fetch_all("SELECT server, uniqueid FROM call_links"),
                    await store.fetch_all("SELECT origin, line_no FROM quarantine"))

    events, stored_links, quarantined = asyncio.run(rows())
    assert events == [("pbx7", "1795491290.1", "4", "agi"), ("pbx7", "1795491290.2", "4", "agi")]
    assert stored_links == [("pbx7", "1795491290.1")]
    assert {q[1] for q in quarantined} == {3}
    missing = CliRunner().invoke(cli, ["ingest", "--db", str(db), str(tmp_path / "x.jsonl")])
    assert missing.exit_code != 0 and "x.jsonl: no such file" in missing.output
