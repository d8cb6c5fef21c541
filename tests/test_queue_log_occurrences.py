"""The same line twice in one second is two events when the log really holds it twice (a
caller re-entering an empty queue: examples/recordings/reenter_empty.*, recorded on Asterisk
22.10.1 by tests/integration/test_queue_log_reenter.py); re-reading the log stores each event
once, however it is read: again, from the start, resumed mid-second, across a rotation, files
in any order, shared with a partner process, and beside the AMI listener's copies."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ami_listener.manager import AmiParser
from ami_listener.mapping import AmiMapper
from callkpi.events import (
    KEY_COLUMNS,
    OCCURRENCE,
    Kind,
    Occurrences,
    base_discr,
    number_occurrences,
)
from callkpi import store_sqlite_bulk
from callkpi.store import Batch, open_store
from log_fixture import generate_log, snapshot
from queue_log_parser import tailer
from queue_log_parser.ingest import Follower, IngestStats, LogSink, ingest_paths
from queue_log_parser.parser import LineParser

RECORDINGS = Path(__file__).parent.parent / "examples" / "recordings"
REENTER = (RECORDINGS / "reenter_empty.queue_log").read_text().splitlines(keepends=True)
AMI = (RECORDINGS / "reenter_empty.ami.txt").read_bytes()
CALL = REENTER[0].split("|")[1]
SAMPLE = (Path(__file__).parent.parent / "examples" / "queue_log.sample").read_text()
BEFORE = SAMPLE.splitlines(keepends=True)[:6]  # a few lines of other calls around it
WANT = {Kind.ENTER_QUEUE: 4, Kind.EXIT_EMPTY: 4}


def events_of(lines: list[str]):
    parser = LineParser("pbx")
    return [parser.parse(line.rstrip("\n")) for line in lines]


def keys(events) -> list[tuple]:
    return [tuple(e[:len(KEY_COLUMNS)]) for e in events]


# ---------------------------------------------------------------- the numbering itself
def test_each_repeat_within_the_second_gets_its_occurrence():
    seen = Occurrences()
    numbered = number_occurrences(events_of(REENTER), seen)
    assert [(e.kind, e.discr) for e in numbered] == [
        (Kind.ENTER_QUEUE, ""), (Kind.EXIT_EMPTY, ""),
        (Kind.ENTER_QUEUE, f"{OCCURRENCE}2"), (Kind.EXIT_EMPTY, f"{OCCURRENCE}2"),
        (Kind.ENTER_QUEUE, f"{OCCURRENCE}3"), (Kind.EXIT_EMPTY, f"{OCCURRENCE}3"),
        (Kind.ENTER_QUEUE, f"{OCCURRENCE}4"), (Kind.EXIT_EMPTY, f"{OCCURRENCE}4")]
    assert len(set(keys(numbered))) == 8
    assert (seen.tsec, seen.run, sorted(seen.counts.values())) == (numbered[0].tsec, 8, [4, 4])
    assert {base_discr(e.discr) for e in numbered} == {""}


def test_events_that_repeat_nothing_are_left_as_they_are():
    events = events_of(SAMPLE.splitlines())
    assert number_occurrences(events, Occurrences()) == events


def test_a_new_second_starts_the_count_again():
    first, second = events_of(REENTER[:2]), events_of(REENTER[2:4])
    later = [e._replace(tsec=e.tsec + 1, ts=e.ts + 1) for e in second]
    seen = Occurrences()
    number_occurrences(first, seen)
    assert [e.discr for e in number_occurrences(later, seen)] == ["", ""]


def numbered_in_parts(stream, cuts) -> list:
    parts, seen, start = [], Occurrences(), 0
    for cut in [*cuts, len(stream)]:
        parts += number_occurrences(stream[start:cut], seen)
        start = max(start, cut)
    return parts


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_cut_of_a_stream_into_parts_numbers_it_the_same(data):
    pool = events_of(REENTER) + events_of(SAMPLE.splitlines()[:20])
    stream = data.draw(st.lists(st.sampled_from(pool), max_size=40))
    stream.sort(key=lambda e: e.tsec)  # a log is in time order
    whole = number_occurrences(stream, Occurrences())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    assert numbered_in_parts(stream, cuts) == whole
    assert len(set(keys(whole))) == len(whole)  # nothing left to collapse in the store


def test_a_flood_in_one_second_is_counted_in_stretches_in_bounded_memory(monkeypatch):
    import callkpi.events
    monkeypatch.setattr(callkpi.events, "MAX_RUN", 4)
    enter = events_of(REENTER)[0]
    stream = [enter._replace(call_id=str(n % 3)) for n in range(11)]  # keys 0 1 2 0 1 2 ...
    numbered = number_occurrences(stream, seen := Occurrences())
    assert [e.discr.removeprefix(OCCURRENCE) for e in numbered] == [
        "", "", "", "2",  "", "", "", "2",  "", "", ""]  # counts start again every 4
    assert len(seen.counts) <= 4
    for cuts in ([1], [4], [5, 6], [3, 7, 9]):
        assert numbered_in_parts(stream, cuts) == numbered


def last_second(events) -> tuple:
    """What a reader tells `Occurrences.then` of `events`: their last second."""
    if not events:
        return -1, 0, [], True
    tsec = events[-1].tsec
    run = [e for e in events if e.tsec == tsec]
    whole = len(run) == len(events)
    return tsec, len(run), keys(run[::-1]), whole


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_then_knows_from_a_parts_last_second_what_numbering_it_leaves(data):
    import callkpi.events
    pool = events_of(REENTER) + events_of(SAMPLE.splitlines()[:12])
    stream = sorted(data.draw(st.lists(st.sampled_from(pool), max_size=30)),
                    key=lambda e: e.tsec)
    cut = data.draw(st.integers(0, len(stream)))
    original = callkpi.events.MAX_RUN
    callkpi.events.MAX_RUN = data.draw(st.sampled_from([2, 3, 5, 1 << 16]))
    try:
        before = Occurrences()
        number_occurrences(stream[:cut], before)
        told = before.copy().then(*last_second(stream[cut:]))
        number_occurrences(stream[cut:], before)
    finally:
        callkpi.events.MAX_RUN = original
    assert (told.tsec, told.run, told.counts) == (before.tsec, before.run, before.counts)


@pytest.mark.parametrize("cut", [2, 5, 9, 13])
async def test_resumed_in_a_flood_of_one_second_it_numbers_on_in_stretches(tmp_path, cut,
                                                                          make_store_url,
                                                                          monkeypatch):
    import callkpi.events
    monkeypatch.setattr(callkpi.events, "MAX_RUN", 3)
    flood = REENTER * 2  # 16 lines of one second, counted 3 at a time
    log, db, whole = tmp_path / "queue_log", make_store_url(), make_store_url()
    log.write_text("".join(BEFORE + flood))
    await ingest(whole, log)
    log.write_text("".join(BEFORE + flood[:cut]))
    await ingest(db, log, batch_lines=2)
    with log.open("a") as f:
        f.write("".join(flood[cut:]))
    await ingest(db, log, batch_lines=2)
    assert await store_keys(db) == await store_keys(whole)


def test_an_ami_peer_flooding_one_second_costs_each_event_alike():
    import gc
    import time

    from callkpi.events import MAX_RUN
    mapper, n = AmiMapper("pbx"), 30_000  # 2n within one stretch of MAX_RUN

    def join(i: int) -> None:  # no Timestamp: every event is stamped 0.0, one second
        mapper.map({"Event": "QueueCallerJoin", "Uniqueid": f"{i}.0", "Queue": "q"}, 0.0)

    gc.disable()  # CPU time of the mapping alone, not of the collector's passes
    try:
        started = time.process_time()
        for i in range(n):
            join(i)
        half = time.process_time() - started
        for i in range(n, 2 * n):
            join(i)
        both = time.process_time() - started
    finally:
        gc.enable()
    assert both < 3 * half  # linear: twice the first half (a count copied per event: 4x)
    assert len(mapper.occurrences.counts) < MAX_RUN  # and its memory bounded


# ---------------------------------------------------------------- reading back
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300).map(lambda b: b.replace(b"\x01", b"\n")),
       back=st.sampled_from([3, 7, 64]))
def test_lines_read_back_from_any_checkpoint_are_the_lines_read_forward(monkeypatch, data,
                                                                        back):
    monkeypatch.setattr(tailer, "MAX_LINE", 40)  # over-long lines within 300 bytes
    monkeypatch.setattr(tailer, "BACK_READ", back)
    reader, forward = tailer.LineReader(io.BytesIO(data)), []
    for batch in reader.batches(3):
        forward += [line for line in batch.lines if line]
        assert list(tailer.lines_before(io.BytesIO(data), reader.offset)) == forward[::-1]


# ---------------------------------------------------------------- ingest and tail
async def stored_kinds(url: str) -> Counter:
    store = await open_store(url)
    try:
        rows = await store.fetch_all("SELECT kind FROM events WHERE call_id = ?", (CALL,))
    finally:
        await store.close()
    return Counter(kind for (kind,) in rows)


async def ingest(url: str, *paths: Path, full: bool = False, batch_lines: int = 3,
                 bulk_from_bytes: int = 1 << 62) -> IngestStats:
    store = await open_store(url)
    try:
        return await ingest_paths(store, [str(p) for p in paths], server="pbx",
                                  batch_lines=batch_lines, full=full,
                                  bulk_from_bytes=bulk_from_bytes)
    finally:
        await store.close()


async def store_keys(url: str) -> list[tuple]:
    events, _, _ = await snapshot(url)
    return sorted(tuple(row[1:8]) for row in events)


async def test_ingest_stores_every_entry_once_and_a_rerun_nothing(tmp_path, store_url):
    log, db = tmp_path / "queue_log", store_url
    log.write_text("".join(BEFORE + REENTER))
    first = await ingest(db, log)
    assert (first.stored, first.duplicates) == (len(BEFORE) + 8, 0)
    assert await stored_kinds(db) == WANT
    assert (await ingest(db, log)).lines == 0
    full = await ingest(db, log, full=True)
    assert (full.stored, full.duplicates) == (0, len(BEFORE) + 8)
    assert await stored_kinds(db) == WANT


@pytest.mark.parametrize("cut", range(1, 8))
async def test_ingest_resumed_in_the_middle_of_the_second_numbers_on(tmp_path, cut,
                                                                    make_store_url):
    log, db, whole = tmp_path / "queue_log", make_store_url(), make_store_url()
    log.write_text("".join(BEFORE + REENTER))
    await ingest(whole, log)
    log.write_text("".join(BEFORE + REENTER[:cut]))  # Asterisk had written this much
    await ingest(db, log, batch_lines=2)
    with log.open("a") as f:
        f.write("".join(REENTER[cut:]))
    again = await ingest(db, log, batch_lines=2)
    assert again.lines == 8 - cut  # resumed at the checkpoint, mid-second
    assert await store_keys(db) == await store_keys(whole)
    assert await stored_kinds(db) == WANT


@pytest.mark.parametrize("cut", range(1, 8))
async def test_tail_restarted_in_the_middle_of_the_second_numbers_on(tmp_path, cut,
                                                                     make_store_url):
    log, whole, tailed = tmp_path / "queue_log", make_store_url(), make_store_url()
    log.write_text("".join(BEFORE + REENTER))
    await ingest(whole, log)
    log.write_text("".join(BEFORE + REENTER[:cut]))
    store = await open_store(tailed)
    try:
        for appended in (REENTER[cut:cut + 2], REENTER[cut + 2:]):
            follower = Follower(LogSink(store, "pbx", IngestStats()), str(log), batch_lines=1)
            await follower.start()
            await follower.poll()
            await follower.close()  # a restart, then more lines
            with log.open("a") as f:
                f.write("".join(appended))
        follower = Follower(LogSink(store, "pbx", IngestStats()), str(log), batch_lines=1)
        await follower.start()
        await follower.poll()
        await follower.close()
    finally:
        await store.close()
    assert await store_keys(tailed) == await store_keys(whole)


@pytest.mark.parametrize("cut", [1, 3, 4, 6])
async def test_a_second_split_by_a_rotation_read_in_any_order(tmp_path, cut, make_store_url):
    old, new, whole = tmp_path / "queue_log.1", tmp_path / "queue_log", make_store_url()
    old.write_text("".join(BEFORE + REENTER[:cut]))
    new.write_text("".join(REENTER[cut:]))
    both = tmp_path / "both"
    both.write_text("".join(BEFORE + REENTER))
    await ingest(whole, both)
    for name, order in (("newest first", (new, old)), ("oldest first", (old, new))):
        db = make_store_url()
        await ingest(db, *order)  # `ingest queue_log*` expands newest first
        assert await store_keys(db) == await store_keys(whole), name
        assert (await ingest(db, *order, full=True)).stored == 0


async def test_tail_across_a_rotation_in_the_middle_of_the_second(tmp_path, make_store_url):
    log, whole, tailed = tmp_path / "queue_log", make_store_url(), make_store_url()
    both = tmp_path / "both"
    both.write_text("".join(BEFORE + REENTER))
    await ingest(whole, both)
    log.write_text("".join(BEFORE + REENTER[:3]))
    store = await open_store(tailed)
    follower = Follower(LogSink(store, "pbx", IngestStats()), str(log), batch_lines=2)
    try:
        await follower.start()
        await follower.poll()
        log.rename(tmp_path / "queue_log.0")  # `logger rotate`, then Asterisk goes on
        log.write_text("".join(REENTER[3:]))
        await follower.poll()
    finally:
        await follower.close()
        await store.close()
    assert await store_keys(tailed) == await store_keys(whole)


# (on PostgreSQL: its bulk writer, COPY, numbers on the same way)
async def test_a_bulk_writers_partner_process_numbers_on_from_the_batch_before(tmp_path,
                                                                               make_store_url,
                                                                               monkeypatch):
    ready = store_sqlite_bulk.Partner.ready

    def ready_once_started(self):  # use the partner from the first batch (see its tests)
        self._conn.poll(120)
        return ready(self)

    monkeypatch.setattr(store_sqlite_bulk.Partner, "ready", ready_once_started)
    log = tmp_path / "queue_log"
    generate_log(log, 3_000, seed=11)
    lines = log.read_text().splitlines(keepends=True)
    for at in (5, 1_000, 2_001):  # the repeats cut by batches of 3, both processes' turns
        lines[at:at] = REENTER
    log.write_text("".join(lines))
    alone, shared = make_store_url(), make_store_url()
    await ingest(alone, log)
    await ingest(shared, log, bulk_from_bytes=0)
    assert await snapshot(shared) == await snapshot(alone)
    assert await stored_kinds(shared) == {Kind.ENTER_QUEUE: 4, Kind.EXIT_EMPTY: 4}


# ---------------------------------------------------------------- beside the AMI listener
def ami_events():
    messages, _ = AmiParser().feed(AMI)
    mapper, events = AmiMapper("pbx"), []
    for message in messages:
        if "Event" in message:
            events += mapper.map(message, 0.0).events
    return events


async def test_the_ami_listener_numbers_the_same_repeats_the_same_way(tmp_path):
    from_ami = [e for e in ami_events() if e.kind == Kind.ENTER_QUEUE]
    from_log = [e for e in events_of(REENTER) if e.kind == Kind.ENTER_QUEUE]
    numbered = number_occurrences(events_of(REENTER), Occurrences())
    assert [e.discr for e in from_ami] == [
        e.discr for e in numbered if e.kind == Kind.ENTER_QUEUE]
    assert len(from_ami) == len(from_log) == 4


@pytest.mark.parametrize("ami_first", [True, False])
async def test_queue_log_and_ami_copies_store_each_entry_once(tmp_path, ami_first, store_url):
    log, db = tmp_path / "queue_log", store_url
    log.write_text("".join(REENTER))
    store = await open_store(db)
    try:
        if ami_first:
            await store.write(Batch(events=ami_events()))
        await ingest_paths(store, [str(log)], server="pbx", batch_lines=3)
        if not ami_first:
            await store.write(Batch(events=ami_events()))
        rows = await store.fetch_all(
            "SELECT kind, source FROM events WHERE call_id = ? AND kind = ?",
            (CALL, Kind.ENTER_QUEUE))
    finally:
        await store.close()
    assert rows == [(Kind.ENTER_QUEUE, "queue_log")] * 4


async def test_a_repeated_pause_keeps_its_reason_in_the_facts(tmp_path, store_url):
    from callkpi.config import KpiConfig
    from reports.facts import refresh_facts
    log, db = tmp_path / "queue_log", store_url
    pauses = ["1795502700|NONE|support|Agent 1001|ADDMEMBER|\n",
              "1795502701|NONE|support|Agent 1001|PAUSE|\n",  # no reason, twice a second
              "1795502701|NONE|support|Agent 1001|UNPAUSE|\n",
              "1795502701|NONE|support|Agent 1001|PAUSE|\n",
              "1795502760|NONE|support|Agent 1001|UNPAUSE|\n"]
    log.write_text("".join(pauses))
    await ingest(db, log)
    store = await open_store(db)
    try:
        await refresh_facts(store, KpiConfig())
        labels = await store.fetch_all("SELECT reason FROM agent_pauses ORDER BY start_ts")
    finally:
        await store.close()
    assert labels == [("",), ("",)]  # two pauses, neither labelled with its occurrence


@pytest.mark.parametrize("ami_first", [True, False])
async def test_a_repeat_the_two_sources_stamp_in_different_seconds_is_stored_once(store_url,
                                                                                  ami_first):
    # queue_log wrote the two entries at .999 and .001 (two seconds, each a first occurrence);
    # AMI, a few ms later, stamped both in the second second (a first and a second one)
    from callkpi.events import SOURCE_AMI, SOURCE_QUEUE_LOG, make_event

    def entry(source: str, ts: float, discr: str = ""):
        return make_event(server="pbx", kind=Kind.ENTER_QUEUE, ts=ts, source=source,
                          call_id="1796184544.1", queue="reenter-empty", discr=discr)

    log = [entry(SOURCE_QUEUE_LOG, 1796184544.0), entry(SOURCE_QUEUE_LOG, 1796184545.0)]
    ami = [entry(SOURCE_AMI, 1796184545.001), entry(SOURCE_AMI, 1796184545.003, f"{OCCURRENCE}2")]
    store = await open_store(store_url)
    try:
        for batch in ([ami, log] if ami_first else [log, ami]):
            await store.write(Batch(events=batch))
        rows = await store.fetch_all("SELECT source, tsec FROM events ORDER BY tsec")
    finally:
        await store.close()
    assert rows == [("queue_log", 1796184544), ("queue_log", 1796184545)]
