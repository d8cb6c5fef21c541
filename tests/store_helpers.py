"""What tests on both backends need of a store they know by its URL (conftest's `store_url`/
`make_store_url`): its rows, the error a command gives when it holds no store, its write lock
held from outside, where the survey server's spool goes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import psycopg

from callkpi.store import open_store
from callkpi.store_postgres import connection_params


async def fetch(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """The rows of one query on the existing store at `url`."""
    async with await open_store(url, create=False) as store:
        return await store.fetch_all(sql, params)


def created(url: str) -> str:
    """`url`, once a store is there (for a test outside an event loop)."""
    async def create() -> None:
        await (await open_store(url)).close()

    asyncio.run(create())
    return url


def fetch_now(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """`fetch` for a test outside an event loop."""
    return asyncio.run(fetch(url, sql, params))


def no_store_error(url: str) -> str:
    """The one line a command that only reads prints for `url` before anything recorded
    there: a SQLite file that does not exist, a PostgreSQL database without the schema."""
    if url.startswith("postgresql://"):
        return (f"Error: database {url} holds no callkpi store"
                " (ingest or listen first, or check --db)")
    return (f"Error: database {url.removeprefix('sqlite://')} does not exist"
            " (ingest or listen first, or check --db)")


@contextlib.asynccontextmanager
async def write_lock_held(url: str) -> AsyncIterator[None]:
    """What a big ingest batch does to the store at `url` (a URL or a SQLite path): it holds
    SQLite's write lock, or PostgreSQL's write-sequence row, until the block ends."""
    if not url.startswith("postgresql://"):
        blocker = sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    params = {**connection_params(url), "autocommit": False}
    async with await psycopg.AsyncConnection.connect(**params) as conn:
        await conn.execute("SELECT seq FROM write_seq FOR UPDATE")
        try:
            yield
        finally:
            await conn.rollback()


def agi_spool(url: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Where `callkpi agi --db url` keeps its answers' spool, and the environment it runs in:
    beside a SQLite file, as by default; for a PostgreSQL store, which is not a file, the
    test's own directory given in CALLKPI_AGI_SPOOL."""
    if url.startswith("postgresql://"):
        spool = tmp_path / "agi-spool"
        return spool, {**os.environ, "CALLKPI_AGI_SPOOL": str(spool)}
    return Path(url.removeprefix("sqlite://") + "-agi-spool"), dict(os.environ)


def store_exists(url: str) -> bool:
    """Whether a process has created its store at `url` yet (read without opening the store,
    whose migration must not race the other process's own)."""
    if not url.startswith("postgresql://"):
        return Path(url.removeprefix("sqlite://")).exists()
    with psycopg.connect(**connection_params(url)) as conn:
        ((found,),) = conn.execute("SELECT to_regclass('callkpi_schema') IS NOT NULL").fetchall()
    return bool(found)
