"""A backfill shared with a partner process stores exactly what one process alone stores:
the same events under the same ids (file order), the same quarantine and checkpoints; and a
partner that dies leaves a store a rerun completes."""

from __future__ import annotations

import pytest

from callkpi.store import open_store
from log_fixture import generate_log, snapshot
from queue_log_parser import partner as partner_module
from queue_log_parser.ingest import ingest_paths
from queue_log_parser.partner import PartnerError

ALONE = 1 << 62  # no file is this big: no partner
BATCH = 500  # many small batches: many turns


async def ingest(db, paths, partner_from_bytes, **options):
    store = await open_store(db)
    try:
        return await ingest_paths(store, [str(p) for p in paths], server="pbx",
                                  batch_lines=BATCH, partner_from_bytes=partner_from_bytes,
                                  **options)
    finally:
        await store.close()


@pytest.fixture(autouse=True)
def partner_used_from_the_first_batch(monkeypatch):
    """The product goes on alone until its partner has started (~0.2 s); under load that can
    be after the last batch of these small logs, and a test of the partner would test nothing.
    Each test waits for that state instead."""
    ready = partner_module.Partner.ready

    def ready_once_started(self):
        self._conn.poll(120)
        return ready(self)

    monkeypatch.setattr(partner_module.Partner, "ready", ready_once_started)


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


async def test_a_partner_stores_what_one_process_stores(tmp_path, logs):
    alone = await ingest(tmp_path / "alone.db", logs, ALONE)
    shared = await ingest(tmp_path / "shared.db", logs, 0)
    assert shared.summary() == alone.summary()
    assert (shared.lines, shared.quarantined, shared.held_back) == (21_000 + 3, 3, 1)
    assert await snapshot(tmp_path / "shared.db") == await snapshot(tmp_path / "alone.db")


async def test_a_rerun_with_a_partner_resumes_and_stores_nothing_twice(tmp_path, logs):
    db = tmp_path / "callkpi.db"
    await ingest(db, logs, 0)
    again = await ingest(db, logs, 0)
    assert (again.lines, again.stored) == (0, 0)
    full = await ingest(db, logs, 0, full=True)
    assert (full.stored, full.duplicates) == (0, 21_000)  # every event again: skipped
    await ingest(tmp_path / "alone.db", logs, ALONE)
    assert await snapshot(db) == await snapshot(tmp_path / "alone.db")


async def test_a_partner_that_dies_stops_the_ingest_and_a_rerun_completes(tmp_path, logs,
                                                                          monkeypatch):
    go = partner_module.Partner.go
    turns, killed = 0, False

    async def go_after_its_death(self):
        nonlocal turns, killed
        turns += 1
        if turns == 2:  # it has stored one batch; it dies before its second
            self._process.kill()
            self._process.wait()
            killed = True
        await go(self)

    monkeypatch.setattr(partner_module.Partner, "go", go_after_its_death)
    db = tmp_path / "callkpi.db"
    with pytest.raises(PartnerError, match="partner process died"):
        await ingest(db, logs, 0)
    monkeypatch.setattr(partner_module.Partner, "go", go)
    assert killed
    events, _, checkpoints = await snapshot(db)
    assert 0 < len(events) < 21_000 and checkpoints  # part of it, durably
    await ingest(db, logs, 0)
    await ingest(tmp_path / "alone.db", logs, ALONE)
    assert await snapshot(db) == await snapshot(tmp_path / "alone.db")
