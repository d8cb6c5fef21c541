"""The store, on every backend: natural-key dedupe, the queue_log/AMI twin rule, atomic
checkpoints, schema versions, the write sequence, concurrent callers and writers."""

from __future__ import annotations

import asyncio

import pytest

from callkpi.events import Checkpoint, Kind, Quarantined, make_event
from callkpi.schema import SCHEMA_VERSION
from callkpi.store import Batch
from callkpi.store import StoreError, open_store


def ev(kind=Kind.CONNECT, ts=100.0, source="queue_log", **kw):
    base = dict(server="pbx1", call_id="1700000000.1", queue="support", agent="Agent 1001")
    base.update(kw)
    return make_event(kind=kind, ts=ts, source=source, **base)


async def kinds_and_sources(store):
    return await store.fetch_all("SELECT kind, tsec, source FROM events ORDER BY id")


async def test_same_event_twice_is_stored_once(store):
    first = await store.write(Batch(events=[ev(), ev(Kind.COMPLETE, 110, talk_s=10)]))
    again = await store.write(Batch(events=[ev(), ev(Kind.COMPLETE, 110, talk_s=10)]))
    assert (first.stored, first.duplicates) == (2, 0)
    assert (again.stored, again.duplicates) == (0, 2)
    assert len(await kinds_and_sources(store)) == 2


async def test_ami_copy_in_same_second_as_queue_log_is_a_duplicate(store):
    await store.write(Batch(events=[ev(ts=100)]))
    result = await store.write(Batch(events=[ev(ts=100.4, source="ami")]))
    assert result.duplicates == 1
    assert await kinds_and_sources(store) == [("connect", 100, "queue_log")]


async def test_ami_copy_a_second_later_is_skipped_when_queue_log_came_first(store):
    await store.write(Batch(events=[ev(ts=100)]))
    result = await store.write(Batch(events=[ev(ts=101.01, source="ami")]))
    assert (result.stored, result.duplicates) == (0, 1)
    assert await kinds_and_sources(store) == [("connect", 100, "queue_log")]


async def test_queue_log_replaces_ami_copy_stamped_a_second_apart(store):
    await store.write(Batch(events=[ev(ts=99.98, source="ami")]))
    await store.write(Batch(events=[ev(ts=100)]))
    assert await kinds_and_sources(store) == [("connect", 100, "queue_log")]


async def test_queue_log_takes_the_place_of_an_ami_copy_of_the_same_second(store):
    await store.write(Batch(events=[ev(Kind.ENTER_QUEUE, 100.2, source="ami",
                                       caller_number="5550001", caller_name="Ann")]))
    result = await store.write(Batch(events=[ev(Kind.ENTER_QUEUE, 100, caller_number="5550001",
                                                position=1)]))
    assert (result.stored, result.duplicates) == (1, 0)
    rows = await store.fetch_all("SELECT source, ts, position, caller_name FROM events")
    assert rows == [("queue_log", 100.0, 1, "Ann")]  # queue_log's record, AMI's caller name
    again = await store.write(Batch(events=[ev(Kind.ENTER_QUEUE, 100, position=1)]))
    assert (again.stored, again.duplicates) == (0, 1)


async def test_distinct_events_of_the_same_second_are_kept(store):
    events = [
        ev(Kind.PAUSE, 50, call_id="", discr="break", reason="break"),
        ev(Kind.UNPAUSE, 50, call_id=""),
        ev(Kind.PAUSE, 50, call_id="", discr="training", reason="training"),
    ]
    assert (await store.write(Batch(events=events))).stored == 3


async def test_a_batch_holding_one_key_twice_keeps_the_first(store):
    """A line logged twice, or two lines of one key, in one batch: the first is stored."""
    twice = [ev(Kind.ENTER_QUEUE, 99, position=1), ev(position=1), ev(position=2),
             ev(Kind.COMPLETE, 110, talk_s=10)]
    result = await store.write(Batch(events=twice))
    assert (result.stored, result.duplicates) == (3, 1)
    assert await store.fetch_all("SELECT kind, position FROM events ORDER BY id") == [
        ("enter-queue", 1), ("connect", 1), ("complete", None)]


async def test_ami_only_kinds_are_never_replaced(store):
    await store.write(Batch(events=[ev(Kind.HOLD, 105.5, source="ami")]))
    await store.write(Batch(events=[ev(Kind.CONNECT, 105)]))
    assert await kinds_and_sources(store) == [("hold", 105, "ami"), ("connect", 105, "queue_log")]


async def test_same_source_events_a_second_apart_stay_distinct(store):
    # two ring-no-answers of one agent in one call, a second apart, are two events
    batch = [ev(Kind.RING_NO_ANSWER, 100, ring_s=1), ev(Kind.RING_NO_ANSWER, 101, ring_s=1)]
    assert (await store.write(Batch(events=batch))).stored == 2


async def test_checkpoint_is_written_with_its_events(store):
    cp = Checkpoint("/var/log/asterisk/queue_log", "8:1234", "abc", 4096, 40, 1.0)
    await store.write(Batch(events=[ev()], checkpoint=cp))
    assert await store.checkpoint(cp.stream) == cp
    moved = cp._replace(offset=8192, line_no=80)
    await store.write(Batch(checkpoint=moved))
    assert await store.checkpoint(cp.stream) == moved
    assert await store.checkpoint("/other") is None


async def test_a_failed_batch_stores_nothing(store):
    cp = Checkpoint("/q", "1:1", "h", 10, 1, 1.0)
    broken = ev()._replace(reason=None)  # NOT NULL column: the whole batch must roll back
    with pytest.raises(StoreError, match="reason"):
        await store.write(Batch(events=[ev(Kind.ENTER_QUEUE, 90), broken], checkpoint=cp))
    assert await kinds_and_sources(store) == []
    assert await store.checkpoint("/q") is None


async def test_quarantine_is_idempotent_and_counted(store):
    bad = Quarantined("queue_log", "/q", 120, 3, "not a number: 'x'", "x|y", 1.0)
    assert (await store.write(Batch(quarantined=[bad]))).quarantined == 1
    assert (await store.write(Batch(quarantined=[bad]))).quarantined == 0
    assert (await store.info()).quarantined == 1


async def test_info_counts(store):
    await store.write(Batch(events=[ev(), ev(Kind.HOLD, 101, source="ami")]))
    info = await store.info()
    assert info.events == 2
    assert info.events_by_source == {"queue_log": 1, "ami": 1}
    assert info.schema_version == SCHEMA_VERSION
    assert (info.first_ts, info.last_ts) == (100.0, 101.0)
    assert info.size_bytes > 0


async def test_reader_is_not_blocked_by_an_open_write_transaction(store_url):
    writer = await open_store(store_url)
    await writer.write(Batch(events=[ev()]))
    reader = await open_store(store_url, create=False)
    async with writer.transaction() as tx:
        await tx.execute("DELETE FROM events")
        # the reader still sees the last committed state, without waiting
        rows = await asyncio.wait_for(reader.fetch_all("SELECT count(*) FROM events"), 2)
        assert rows == [(1,)]
    await reader.close()
    await writer.close()


async def test_two_writers_both_succeed(store_url):
    a, b = await open_store(store_url), await open_store(store_url)
    batches_a = [Batch(events=[ev(ts=1000 + i)]) for i in range(50)]
    batches_b = [Batch(events=[ev(Kind.HOLD, 1000 + i, source="ami")]) for i in range(50)]

    async def run(store, batches):
        for batch in batches:
            await store.write(batch)

    await asyncio.gather(run(a, batches_a), run(b, batches_b))
    assert (await a.info()).events == 100
    await a.close()
    await b.close()


SET_VERSION = {"sqlite": "PRAGMA user_version = {v}",
               "postgresql": "UPDATE callkpi_schema SET version = {v}"}


async def test_refuses_a_newer_schema(store, store_url, backend):
    await store.execute(SET_VERSION[backend].format(v=SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="newer than this callkpi"):
        await open_store(store_url)


async def test_processes_opening_a_new_database_at_once_migrate_it_once(make_store_url):
    import subprocess
    import sys

    url = make_store_url(empty=True)
    code = ("import asyncio, sys\nfrom callkpi.store import open_store\n"
            "async def main():\n    store = await open_store(sys.argv[1])\n"
            "    await store.close()\nasyncio.run(main())\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE)
             for _ in range(12)]
    errors = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 12, errors
    store = await open_store(url, create=False)
    async with store:
        assert (await store.info()).schema_version == SCHEMA_VERSION


async def test_reads_see_committed_data_only_and_run_beside_an_open_write(store):
    """Reads use the store's read connections: never a write transaction's uncommitted rows,
    and never queued behind it."""
    count = "SELECT count(*) FROM events"
    async with store.transaction() as tx:
        await tx.execute("INSERT INTO events (server, call_id, kind, queue, agent, tsec, discr,"
                         " ts, source, reason, caller_number, caller_name, value, extra)"
                         " VALUES ('p', 'c', 'connect', 'q', 'a', 1, '', 1, 'queue_log',"
                         " '', '', '', '', '')")
        assert await asyncio.wait_for(store.fetch_all(count), 2) == [(0,)]
    assert await store.fetch_all(count) == [(1,)]
    results = await asyncio.gather(*(store.fetch_all(count) for _ in range(10)))
    assert results == [[(1,)]] * 10


async def test_portable_sql_reads_alike_on_every_backend(store):
    """The layers above write `?` placeholders and read integer sums as ints, averages as
    floats, whatever the backend."""
    await store.write(Batch(events=[ev(ts=100, wait_s=3), ev(Kind.HOLD, 101, source="ami",
                                                            wait_s=4)]))
    rows = await store.fetch_all(
        "SELECT count(*), sum(tsec), avg(tsec), sum(wait_s), min(ts), max(tsec) / 7,"
        " sum(CASE WHEN source = ? THEN 1 ELSE 0 END), 'a%b?' FROM events WHERE kind <> ?",
        ("ami", "x"))
    assert rows == [(2, 201, 100.5, 7.0, 100.0, 14, 1, "a%b?")]
    assert [type(v) for v in rows[0]] == [int, int, float, float, float, int, int, str]
    async with store.transaction() as tx:
        assert await tx.executemany("INSERT INTO facts_state (name, value) VALUES (?, ?)",
                                    [("a", "1"), ("b", "2")]) == 2
        assert await tx.fetch_all("SELECT value FROM facts_state WHERE name = ?", ("b",)) == [
            ("2",)]
    rows = [r async for r in store.iter_rows("SELECT name FROM facts_state WHERE value <> ?"
                                             " ORDER BY name", ("0",), size=1)]
    assert rows == [("a",), ("b",)]


# ---------------------------------------------------------------- ids in commit order
async def ids(store):
    return await store.fetch_all("SELECT id, kind, source FROM events ORDER BY id")


async def test_queue_log_taking_an_ami_rows_place_takes_a_new_id(store):
    """A reader that has seen every event up to max(id) must notice that queue_log's record
    replaced an AMI row, in place (same second) or a second apart: it comes after."""
    await store.write(Batch(events=[ev(Kind.ENTER_QUEUE, 99.2, source="ami"),
                                    ev(Kind.COMPLETE, 100.3, source="ami", talk_s=9.7)]))
    ((seen,),) = await store.fetch_all("SELECT max(id) FROM events")
    await store.write(Batch(events=[ev(Kind.COMPLETE, 100, talk_s=10),
                                    ev(Kind.ENTER_QUEUE, 100)]))
    rows = await store.fetch_all("SELECT id, kind, source, talk_s FROM events ORDER BY id")
    assert [r[1:] for r in rows] == [("complete", "queue_log", 10.0),
                                     ("enter-queue", "queue_log", None)]
    assert all(r[0] > seen for r in rows)
    await store.write(Batch(events=[ev(Kind.DISPOSITION, 130, value="sale")]))
    ((last,),) = await store.fetch_all("SELECT max(id) FROM events")
    assert last > rows[-1][0]  # and no id is ever handed out twice


async def test_concurrent_writes_on_one_store_object_are_serialised_by_the_store(store):
    """Callers sharing one store (the survey's sessions, the listener) need no lock of their
    own: writes and derived-layer transactions started at once all go through."""
    async def derived(i):
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO facts_state (name, value) VALUES (?, ?)", (f"k{i}", "v"))
            await asyncio.sleep(0)  # another caller gets the loop mid-transaction
            await tx.execute("UPDATE facts_state SET value = ? WHERE name = ?", ("w", f"k{i}"))

    writes = [store.write(Batch(events=[ev(ts=1000 + i)])) for i in range(30)]
    await asyncio.gather(*writes, *(derived(i) for i in range(10)))
    assert (await store.info()).events == 30
    assert await store.fetch_all("SELECT seq FROM write_seq") == [(30,)]
    assert await store.fetch_all("SELECT count(*) FROM facts_state WHERE value = 'w'") == [(10,)]


async def test_ids_are_in_commit_order_with_several_writers(store_url):
    """Whatever max(id) a reader sees, every event up to it is already visible then:
    nothing with a lower id commits later. Four stores (four processes' worth of
    connections) write at once while a reader keeps checking."""
    writers = [await open_store(store_url) for _ in range(4)]
    reader = await open_store(store_url)
    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def write(store, n):
        for i in range(25):
            await store.write(Batch(events=[ev(ts=2000 + i, call_id=f"w{n}.{i}"),
                                            ev(Kind.COMPLETE, 2010 + i, call_id=f"w{n}.{i}")]))

    async def watch():
        while not done.is_set():
            ((last, count),) = await reader.fetch_all(
                "SELECT max(id), count(*) FROM events WHERE id <= (SELECT max(id) FROM events)")
            seen.append((last or 0, count))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(write(s, n) for n, s in enumerate(writers)))
    done.set()
    await watcher
    final = [i for (i,) in await reader.fetch_all("SELECT id FROM events")]
    assert len(final) == 200 and len(seen) > 1
    for last, count in seen:
        assert count == sum(1 for i in final if i <= last)
    for s in (*writers, reader):
        await s.close()
