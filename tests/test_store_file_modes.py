"""Files holding caller data are not world-readable: the store, its -wal and -shm (caller
numbers, names, quarantined log text), and what the services create under their UMask.
SQLite alone: a PostgreSQL store's files are the server's, under its own data directory."""

from __future__ import annotations

import os
import stat

import pytest

from callkpi.events import SOURCE_QUEUE_LOG, Kind, Quarantined, make_event
from callkpi.store import Batch, open_store
from systemd_units import UNITS, read_unit


@pytest.fixture
def umask_022():
    """The usual interactive umask, which would leave a file 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def write_something(db) -> None:
    store = await open_store(db)
    try:
        await store.write(Batch(
            events=[make_event(server="pbx", kind=Kind.ENTER_QUEUE, ts=1.0,
                               source=SOURCE_QUEUE_LOG, call_id="1.1", queue="q",
                               caller_number="5551234", caller_name="Jane Doe")],
            quarantined=[Quarantined(SOURCE_QUEUE_LOG, "queue_log", 0, 1, "bad", "x", 1.0)]))
        files = {name: mode(f"{db}{name}") for name in ("", "-wal", "-shm")}
    finally:
        await store.close()
    assert files == {"": 0o640, "-wal": 0o640, "-shm": 0o640}


async def test_a_new_store_its_wal_and_shm_are_0640(tmp_path, umask_022):
    await write_something(tmp_path / "callkpi.db")


async def test_a_world_readable_store_loses_the_worlds_access_when_opened(tmp_path, umask_022):
    import sqlite3
    db = tmp_path / "old.db"
    sqlite3.connect(db).close()  # as an older callkpi created it
    os.chmod(db, 0o644)
    await write_something(db)


async def test_a_report_opening_a_world_readable_store_takes_the_world_access_away(
        tmp_path, umask_022):
    """Every command opens the store to write (a report refreshes the facts first), so a
    report too closes a store an older callkpi, or a careless copy, left world-readable."""
    db = tmp_path / "callkpi.db"
    await write_something(db)
    os.chmod(db, 0o644)
    store = await open_store(db, create=False)
    await store.close()
    assert mode(db) == 0o640


@pytest.mark.parametrize("unit", sorted(UNITS.glob("*.service")), ids=lambda p: p.name)
def test_every_service_creates_its_files_without_world_access(unit):
    umask = int(read_unit(unit)["Service"]["UMask"], 8)
    assert umask & 0o007 == 0o007
