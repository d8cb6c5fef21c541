"""`callkpi db copy SRC DST`: every table, row for row (ids, checkpoints, the roster),
from SQLite to PostgreSQL and back; an interrupted copy (kill -9) finished by a rerun,
nothing lost or doubled; a destination that is not a copy refused; the collectors resume on
the copy where they stopped on the original."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callkpi.events import CallLink, Kind, Quarantined, make_event
from callkpi.store import Batch, open_store
from callkpi.store_copy import CopyError, copy_store
from log_fixture import durable_checkpoint, generate_log
from queue_log_parser.ingest import ingest_paths

CALLKPI = Path(sys.executable).parent / "callkpi"


async def fill(url: str, log: Path) -> None:
    """A store with something in every table, the way its writers put it there."""
    store = await open_store(url)
    async with store:
        await ingest_paths(store, [str(log)], server="pbx", batch_lines=1000)
        hold = make_event(server="pbx", kind=Kind.HOLD, ts=1795000100.5, source="ami",
                          call_id="1795000100.9", queue="support", agent="Agent 1001")
        await store.write(Batch(
            events=[hold],
            quarantined=[Quarantined("ami", "127.0.0.1:5038", 7, 0, "no Event", "x", 1.0)],
            links=[CallLink("pbx", "1795000100.9", "1795000100.8", 1795000100.0)]))
        tables = await store.schema_tables()
        await store.insert_rows("agent_employment", ["name", "hired_on", "left_on"],
                                [("Agent 1001", "2026-01-05", None),
                                 ("Ann", "2026-02-01", "2026-06-30"),
                                 ("Ann", "2026-09-01", None)])
        await store.insert_rows("reports_sent", ["day", "recipients", "sent_at"],
                                [("2026-11-24", "m@example.com", 1.5)])
        await store.insert_rows("report_claims", ["day", "recipients", "owner", "claimed_at"],
                                [("2026-11-25", "m@example.com", "pbx:7:boot:1.0", 2.5)])
        await store.insert_rows("agent_aliases", ["server", "interface", "name"],
                                [("pbx", "PJSIP/1001", "Agent 1001")])
        await store.insert_rows("ivr_paths", tables["ivr_paths"],
                                [(1, "pbx", "1795000300.1", 1795000300.0, 1795000310.0,
                                  1795000310, "1>2", "sales", "queue", "support")])
        calls = [tuple(row.get(c, 0) for c in tables["queue_calls"]) for row in _queue_calls(200)]
        await store.insert_rows("queue_calls", tables["queue_calls"], calls)
        await store.insert_rows("agent_sessions", tables["agent_sessions"],
                                [("pbx", "Agent 1001", "support", 10.0, None)])
        await store.insert_rows("agent_pauses", tables["agent_pauses"],
                                [("pbx", "Agent 1001", "lunch", 10.0, 70.5)])
        answer = {"id": 5, "server": "pbx", "call_id": "17950001.1", "queue_call": 1,
                  "queue": "support", "agent": "Agent 1001", "entered_tsec": 1795000001,
                  "answered": 1, "question": "q1", "kind": "score", "value": "5",
                  "status": "answered", "ts": 1795000100.0, "session": "s1", "counted": 1}
        await store.insert_rows("survey_answers", tables["survey_answers"],
                                [tuple(answer[c] for c in tables["survey_answers"])])
        await store.insert_rows("facts_state", ["name", "value"], [("events_id", "3")])
    missing = [t for t in tables if t not in FILLED]
    assert not missing, f"fill() puts nothing in {missing}: add rows for them"


FILLED = {"events", "quarantine", "checkpoints", "call_links", "agent_employment",
          "reports_sent", "report_claims", "agent_aliases", "ivr_paths", "queue_calls",
          "agent_sessions", "agent_pauses", "facts_state", "write_seq", "survey_answers"}


def _queue_calls(n: int) -> list[dict[str, object]]:
    """Rows by column name: a column a later schema adds is 0 unless named here."""
    return [{"id": i, "server": "pbx", "call_id": f"1795000{i}.{i}", "queue": "support",
             "entered_ts": 1795000000.0 + i, "entered_tsec": 1795000000 + i,
             "ended_ts": 1795000060.0 + i, "outcome": "answered", "wait_s": 4.5,
             "connect_ts": 1795000004.5 + i, "agent": "Agent 1001", "bridged_s": 55.5,
             "talk_s": 50.0, "hold_s": 5.5, "acw_s": 12.0, "caller_number": "5551234",
             "disposition": "sale", "transferred": 0, "prev_gap_s": None, "next_gap_s": None,
             "unsettled": 0, "entered_bucket": (1795000000 + i) // 900, "fcr_contact": 1,
             "fcr_prev_gap_s": 3600.0 if i % 2 else None}
            for i in range(1, n + 1)]


async def contents(url: str) -> dict[str, list[tuple]]:
    """Every table's rows, in a stable order."""
    store = await open_store(url)
    async with store:
        tables = await store.schema_tables()
        return {t: await store.fetch_all(
            f"SELECT {quoted(cols)} FROM {t} ORDER BY {quoted(cols)}")
            for t, cols in tables.items()}


def quoted(columns: list[str]) -> str:
    return ", ".join('"' + c + '"' for c in columns)


@pytest.fixture
def log(tmp_path) -> Path:
    path = tmp_path / "queue_log"
    generate_log(path, 30_000, seed=11)
    with path.open("ab") as f:
        f.write(b"junk line\n")
    return path


@pytest.mark.parametrize("direction", ["from sqlite", "to sqlite"])
async def test_a_copy_holds_every_row_of_every_table(tmp_path, make_store_url, log, direction):
    sqlite_url, other = f"sqlite://{tmp_path / 'old.db'}", make_store_url()
    src, dst = (sqlite_url, other) if direction == "from sqlite" else (other, sqlite_url)
    await fill(src, log)
    async with await open_store(src) as source, await open_store(dst) as target:
        stats = await copy_store(source, target)
        events = (await source.info()).events
    assert events > 29_000 and (stats.copied["events"], stats.copied["quarantine"]) == (
        events, 2)
    assert await contents(dst) == await contents(src)


async def test_the_collectors_resume_on_the_copy_where_they_stopped(tmp_path, make_store_url,
                                                                    log):
    src, dst = f"sqlite://{tmp_path / 'old.db'}", make_store_url()
    await fill(src, log)
    async with await open_store(src) as source, await open_store(dst) as target:
        await copy_store(source, target)
        ((last,),) = await source.fetch_all("SELECT max(id) FROM events")
    with log.open("a") as f:
        f.write("1795999000|1795999000.1|support|NONE|ENTERQUEUE||5551234|1\n")
    store = await open_store(dst)
    async with store:
        result = await ingest_paths(store, [str(log)], server="pbx", batch_lines=1000)
        assert (result.lines, result.stored) == (1, 1)  # only the new line: the checkpoint
        ((new,),) = await store.fetch_all("SELECT id FROM events WHERE call_id = ?",
                                          ("1795999000.1",))
        assert new > last  # the copy's ids go on after the original's


async def test_a_rerun_copies_nothing_twice_and_a_foreign_destination_is_refused(
        tmp_path, make_store_url, log):
    src, dst = f"sqlite://{tmp_path / 'old.db'}", make_store_url()
    await fill(src, log)
    async with await open_store(src) as source, await open_store(dst) as target:
        await copy_store(source, target)
        again = await copy_store(source, target)
        assert (again.copied["events"], again.kept["events"]) == (
            0, (await source.info()).events)
        await source.write(Batch(events=[make_event(server="other", kind=Kind.INFO, ts=5.0,
                                                    source="manual")]))
        await target.write(Batch(events=[make_event(server="mine", kind=Kind.INFO, ts=6.0,
                                                    source="manual")]))
        with pytest.raises(CopyError, match="not a copy"):
            await copy_store(source, target)


async def test_a_copy_killed_mid_way_is_finished_by_a_rerun(tmp_path, make_store_url):
    big = tmp_path / "queue_log"
    generate_log(big, 150_000, seed=12)
    src, dst = f"sqlite://{tmp_path / 'old.db'}", make_store_url()
    await fill(src, big)
    env = {**os.environ, "CALLKPI_CONFIG": os.devnull}
    watch = await open_store(dst)
    proc = subprocess.Popen([str(CALLKPI), "db", "copy", src, dst], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not await _events_in(watch) >= 40_000:  # two chunks and more, of 150,000
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the copy never got going"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = await _events_in(watch)
    await watch.close()
    async with await open_store(src) as source:
        events = (await source.info()).events
    assert partial < events
    done = subprocess.run([str(CALLKPI), "db", "copy", src, dst], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"events: {events - partial} copied ({partial} already there)" in done.stdout
    assert await contents(dst) == await contents(src)
    assert durable_checkpoint(dst, "offset") == big.stat().st_size


async def _events_in(store) -> int:
    return (await store.fetch_all("SELECT count(*) FROM events"))[0][0]
