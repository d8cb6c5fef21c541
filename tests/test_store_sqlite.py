"""What only the SQLite store has: one file in WAL mode, its reader pool, its migrations'
table rebuild, a file that is not a database."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from callkpi.events import COLUMNS, Kind, make_event
from callkpi.schema import MIGRATIONS, SCHEMA_VERSION
from callkpi.store import Batch, StoreError, StoreUnavailable, open_store
from callkpi.store_sqlite import READERS, _statements

pytestmark = pytest.mark.backends("sqlite")  # the SQLite store's own file, pool and migrations


def ev(kind=Kind.CONNECT, ts=100.0, source="queue_log", **kw):
    base = dict(server="pbx1", call_id="1700000000.1", queue="support", agent="Agent 1001")
    base.update(kw)
    return make_event(kind=kind, ts=ts, source=source, **base)


async def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot use database"):
        await open_store(path)


async def test_a_bare_path_and_a_sqlite_url_are_the_same_store(tmp_path):
    async with await open_store(tmp_path / "a.db") as store:
        await store.write(Batch(events=[ev()]))
    async with await open_store(f"sqlite://{tmp_path / 'a.db'}") as store:
        assert (await store.info()).events == 1


async def test_wal_mode(store):
    assert await store.fetch_all("PRAGMA journal_mode") == [("wal",)]


async def test_reads_share_a_bounded_pool(store):
    results = await asyncio.gather(*(store.fetch_all("SELECT 1") for _ in range(10)))
    assert results == [[(1,)]] * 10
    assert len(store._opened_readers) == READERS  # ten reads at once, a bounded pool


async def test_a_lock_held_past_the_busy_timeout_is_unavailable_not_broken(tmp_path):
    path = tmp_path / "locked.db"
    store = await open_store(path)
    await store._conn.execute("PRAGMA busy_timeout = 50")  # not 30 s
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.write(Batch(events=[ev()]))
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.write(Batch(events=[ev()]))  # and it goes through once the lock is free
    await store.close()


async def test_migration_3_rebuilds_events_keeping_every_row_and_id(tmp_path):
    """A version-2 store (natural key led by call_id, a separate tsec index) is rebuilt with
    the tsec-led key: same rows, same ids (the facts' watermark), and the key still dedupes."""

    path = tmp_path / "v2.db"
    con = sqlite3.connect(path, isolation_level=None)
    for version in (1, 2):
        for statement in _statements(MIGRATIONS[version]):
            con.execute(statement)
    con.execute("PRAGMA user_version = 2")
    old = [ev(ts=100), ev(Kind.HOLD, 105, source="ami"), ev(Kind.COMPLETE, 110, talk_s=10)]
    con.executemany(f"INSERT INTO events ({', '.join(COLUMNS)})"
                    f" VALUES ({', '.join('?' * len(COLUMNS))})", [tuple(e) for e in old])
    con.execute("DELETE FROM events WHERE kind = 'connect'")  # a gap in the ids
    before = con.execute("SELECT * FROM events ORDER BY id").fetchall()
    con.close()
    store = await open_store(path)
    async with store:
        assert await store.fetch_all(
            f"SELECT id, {', '.join(COLUMNS)} FROM events ORDER BY id") == before
        assert (await store.info()).schema_version == SCHEMA_VERSION
        indexes = {name for (name,) in await store.fetch_all(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")}
        assert indexes == {"events_key", "events_ami_tsec", "events_survey_callers"}
        again = await store.write(Batch(events=[ev(Kind.COMPLETE, 110, talk_s=10)]))
        assert (again.stored, again.duplicates) == (0, 1)
        plan = await store.fetch_all("EXPLAIN QUERY PLAN SELECT * FROM events WHERE tsec >= 1")
        assert "events_key" in str(plan)
