"""What tests on both backends say about a store they only know by its URL (conftest's
`store_url`/`make_store_url`): its rows, and the error a command gives when it holds no store."""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from callkpi.store import open_store


async def fetch(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """The rows of one query on the existing store at `url`."""
    async with await open_store(url, create=False) as store:
        return await store.fetch_all(sql, params)


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
