"""A realistic queue_log for tests (the benchmark's generator) and a store's whole content."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from callkpi.events import COLUMNS
from callkpi.store import open_store

ROOT = Path(__file__).parent.parent


def generate_log(path: Path, lines: int, seed: int) -> None:
    """`lines` lines of an Asterisk 22 call center's queue_log (bench/ingest.py)."""
    spec = importlib.util.spec_from_file_location("bench_ingest", ROOT / "bench" / "ingest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(path, lines, seed)


async def snapshot(db: Path) -> tuple[list, list, list]:
    """Every event (ids included), quarantined line and checkpoint of the store at `db`.
    Not the events' write sequence: it numbers writes, and a resumed run cuts its batches
    elsewhere."""
    store = await open_store(db)
    try:
        return (await store.fetch_all(f"SELECT id, {', '.join(COLUMNS)} FROM events ORDER BY id"),
                await store.fetch_all("SELECT source, origin, position, line_no, reason, raw"
                                      " FROM quarantine ORDER BY id"),
                await store.fetch_all('SELECT stream, file_id, head, "offset", line_no'
                                      " FROM checkpoints ORDER BY stream"))
    finally:
        await store.close()
