"""A backfill through the store's bulk writer (SQLite: a partner process taking turns at the
store; PostgreSQL: COPY, parsing beside the server's work) stores exactly what plain writes
store: the same events in the same (file) order, the same quarantine and checkpoints;
and on SQLite a partner that dies leaves a store a rerun completes."""

from __future__ import annotations


import pytest

from callkpi import store_sqlite_bulk
from callkpi.store import open_store
from callkpi.store_sqlite_bulk import PartnerError
from log_fixture import generate_log, snapshot
from queue_log_parser.ingest import ingest_paths

PLAIN = 1 << 62  # no file is this big: no bulk writer
BATCH = 500  # many small batches: many turns


async def ingest(url, paths, bulk_from_bytes, **options):
    store = await open_store(url)
    try:
        return await ingest_paths(store, [str(p) for p in paths], server="pbx",
                                  batch_lines=BATCH, bulk_from_bytes=bulk_from_bytes,
                                  **options)
    finally:
        await store.close()


@pytest.fixture(autouse=True)
def partner_up_at_once(monkeypatch):
    """The SQLite partner process is waited for before the first batch (it takes ~0.2 s,
    longer on a busy machine), so that every batch of these small files takes turns."""
    ready = store_sqlite_bulk.Partner.ready

    def ready_at_once(self):
        self._conn.poll(60)
        return ready(self)

    monkeypatch.setattr(store_sqlite_bulk.Partner, "ready", ready_at_once)


@pytest.fixture
def logs(tmp_path):
    """Two logs with junk lines among real ones, the second ending in a partial line."""
    first, second = tmp_path / "queue_log.1", tmp_path / "queue_log"
    generate_log(first, 12_000, seed=5)
    generate_log(second, 9_000, seed=6)
    with first.open("ab") as f:
        f.write(b"junk line\n1795000001|1.1|q|NONE|ABANDON|x|1|2\n")
    data = second.read_bytes().splitlines(keepends=True)
    data.insert(4_000, b"\xff\xfe not a line\n")
    second.write_bytes(b"".join(data) + b"1795999999|9.9|support|NONE|ENTERQ")
    return [first, second]


async def test_the_bulk_writer_stores_what_plain_writes_store(make_store_url, logs):
    plain_url, bulk_url = make_store_url(), make_store_url()
    plain = await ingest(plain_url, logs, PLAIN)
    bulk = await ingest(bulk_url, logs, 0)
    assert bulk.summary() == plain.summary()
    assert (bulk.lines, bulk.quarantined, bulk.held_back) == (21_000 + 3, 3, 1)
    assert await snapshot(bulk_url) == await snapshot(plain_url)


async def test_a_rerun_with_the_bulk_writer_resumes_and_stores_nothing_twice(make_store_url,
                                                                            logs):
    url, plain_url = make_store_url(), make_store_url()
    await ingest(url, logs, 0)
    again = await ingest(url, logs, 0)
    assert (again.lines, again.stored) == (0, 0)
    full = await ingest(url, logs, 0, full=True)
    assert (full.stored, full.duplicates) == (0, 21_000)  # every event again: skipped
    await ingest(plain_url, logs, PLAIN)
    assert await snapshot(url) == await snapshot(plain_url)


@pytest.mark.backends("sqlite")  # the partner process is SQLite's bulk writer alone
async def test_a_partner_that_dies_stops_the_ingest_and_a_rerun_completes(make_store_url,
                                                                          logs, monkeypatch):
    go = store_sqlite_bulk.Partner.go
    turns, killed = 0, False

    async def go_after_its_death(self):
        nonlocal turns, killed
        turns += 1
        if turns == 2:  # it has stored one batch; it dies before its second
            self._process.kill()
            self._process.wait()
            killed = True
        await go(self)

    monkeypatch.setattr(store_sqlite_bulk.Partner, "go", go_after_its_death)
    url, plain_url = make_store_url(), make_store_url()
    with pytest.raises(PartnerError, match="partner process died"):
        await ingest(url, logs, 0)
    monkeypatch.setattr(store_sqlite_bulk.Partner, "go", go)
    assert killed
    events, _, checkpoints = await snapshot(url)
    assert 0 < len(events) < 21_000 and checkpoints  # part of it, durably
    await ingest(url, logs, 0)
    await ingest(plain_url, logs, PLAIN)
    assert await snapshot(url) == await snapshot(plain_url)


@pytest.mark.backends("postgresql")  # SQLite's own order is the reference
async def test_postgresql_stores_what_sqlite_stores_in_the_same_order(make_store_url, logs,
                                                                      tmp_path):
    """File order survives COPY and set-wise inserts: the events come back in the order a
    row-by-row SQLite ingest gives them ids."""
    url, sqlite_url = make_store_url(), f"sqlite://{tmp_path / 'ref.db'}"
    await ingest(url, logs, 0)
    await ingest(sqlite_url, logs, PLAIN)
    assert await snapshot(url) == await snapshot(sqlite_url)
