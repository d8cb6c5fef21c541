"""A realistic queue_log for tests (the benchmark's generator) and a store's whole content."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import psycopg

from callkpi.events import COLUMNS
from callkpi.store import open_store

ROOT = Path(__file__).parent.parent


def generate_log(path: Path, lines: int, seed: int) -> None:
    """`lines` lines of an Asterisk 22 call center's queue_log (bench/ingest.py)."""
    spec = importlib.util.spec_from_file_location("bench_ingest", ROOT / "bench" / "ingest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(path, lines, seed)


async def snapshot(url: str) -> tuple[list, list, list]:
    """Every event in id order (file order for a queue_log), quarantined line and checkpoint
    of the store at `url`. Not the ids themselves: a PostgreSQL identity does not hand back
    the numbers of a transaction killed mid-way."""
    store = await open_store(url)
    try:
        return (await store.fetch_all(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY id"),
                await store.fetch_all("SELECT source, origin, position, line_no, reason, raw"
                                      " FROM quarantine ORDER BY id"),
                await store.fetch_all('SELECT stream, file_id, head, "offset", line_no'
                                      " FROM checkpoints ORDER BY stream"))
    finally:
        await store.close()


def durable_checkpoint(url: str, column: str) -> int:
    """A column ("offset", line_no) of the one checkpoint another process has committed to
    the store at `url`, 0 before there is one; read without the store, whose migration must
    not race the other process's own."""
    query = f'SELECT "{column}" FROM checkpoints'
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as conn:
            found = conn.execute(query).fetchall()
        return found[0][0] if found else 0
    db = Path(url.removeprefix("sqlite://"))
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            found = conn.execute(query).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return 0
    return found[0][0] if found else 0
