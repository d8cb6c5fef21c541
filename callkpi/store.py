"""The store interface: what sources write and what the reports read.

`SqliteStore` (store_sqlite.py) implements it on one SQLite file, `PostgresStore`
(store_postgres.py) on one PostgreSQL database that several PBXs write to at once. Nothing
above the store names a backend: `open_store(url)` is the one factory, and `StoreError` /
`StoreUnavailable` are the errors every backend raises. What both promise (one transaction a
batch, the write sequence, concurrent callers, the dialect of the SQL above):
docs/architecture.md, "Store".
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Protocol, Sequence

from callkpi.errors import UserError
from callkpi.events import CallEvent, CallLink, Checkpoint, Quarantined


class StoreError(UserError):
    """The store cannot be opened or used as asked; the message is meant for the user."""


class StoreUnavailable(StoreError):
    """The store is there but cannot be reached right now (a server down, a lock held past its
    timeout): worth retrying, unlike every other StoreError."""


@dataclass
class Batch:
    """Everything one write stores atomically: a checkpoint is only ever durable together with
    the events read before it, so a crash at any point resumes exactly where the store is."""

    events: Sequence[CallEvent] = ()
    quarantined: Sequence[Quarantined] = ()
    links: Sequence[CallLink] = ()
    checkpoint: Checkpoint | None = None


@dataclass
class WriteResult:
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def add(self, other: "WriteResult") -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined


@dataclass
class StoreInfo:
    path: str
    schema_version: int
    events: int
    events_by_kind: dict[str, int] = field(default_factory=dict)
    events_by_source: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    size_bytes: int = 0


# A bulk writer's job -> the batch to store (what is read -> what is written).
Parse = Callable[[Any], Batch]


class BulkWriter(Protocol):
    """Stores the batches of a run of jobs in the order they were put, each in one
    transaction with its checkpoint."""

    async def put(self, job: Any) -> None:
        """Store `parse(job)` after every job put before it (perhaps not yet on return)."""

    async def flush(self) -> WriteResult:
        """Wait until every job put so far is stored; what they stored since the last
        flush."""


class Transaction(Protocol):
    """The statements of one write transaction of a derived layer; each returns rows changed."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int: ...

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...


class Store(Protocol):
    path: str  # where the store is: a file (a server address for a server backend)

    async def write(self, batch: Batch) -> WriteResult:
        """Store a batch in one transaction; events already stored count as duplicates.
        Writes are serialised until they commit, whatever the number of writers, so
        `events.id` is handed out in commit order (an event queue_log's record replaces takes
        a new one): once `max(id)` is seen, every event up to it is visible, and what is new
        later has a greater id."""

    def bulk_writer(self, parse: Parse) -> AbstractAsyncContextManager["BulkWriter"]:
        """A writer for a long run of batches (a backfill), as fast as this backend takes
        them: the jobs put to it become batches by `parse`, possibly in another process, so
        `parse` must pickle (a module-level function, or an object of a module-level
        class). Leaving it does not flush: call `flush` for what must be stored."""

    async def checkpoint(self, stream: str) -> Checkpoint | None:
        """The last durable checkpoint of a followed file."""

    async def info(self) -> StoreInfo:
        """Counts and state for `callkpi db info`."""

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a read-only query (portable SQL, named by the layer that owns it)."""

    def iter_rows(
        self, sql: str, params: Sequence[Any] = (), size: int = 10_000
    ) -> AsyncIterator[tuple]:
        """Stream a read-only query's rows without holding them all in memory."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement of a derived layer (facts, roster) in its own transaction;
        returns the number of rows changed."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one write statement over many rows in one transaction."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """One write transaction of a derived layer (facts, roster), all or nothing."""

    async def schema_tables(self) -> dict[str, list[str]]:
        """Every table of the store's schema and its columns, in column order."""

    async def insert_rows(self, table: str, columns: Sequence[str],
                          rows: Sequence[Sequence[Any]], *, replace: bool = False) -> int:
        """Insert rows as they are, ids included (a copy of another store), in one
        transaction; with `replace`, the table's rows go first, in the same transaction."""

    async def close(self) -> None: ...

    async def __aenter__(self) -> "Store": ...

    async def __aexit__(self, *exc: object) -> None: ...


async def open_store(url: str | os.PathLike[str], *, create: bool = True) -> Store:
    """Open the store `url` names: a path or `sqlite:///path` (SQLite), or a
    `postgresql://user@host:port/dbname` URL. The one place that picks a backend. With
    `create=False` a store that does not exist yet is a StoreError ("database ... does not
    exist")."""
    text = os.fspath(url)
    if text.startswith(("postgresql://", "postgres://")):
        from callkpi.store_postgres import PostgresStore  # imported here: backends load on demand

        return await PostgresStore.open(text, create=create)
    path = text.removeprefix("sqlite://") if text.startswith("sqlite://") else text
    if not path:
        raise StoreError(f"{text!r} names no database file")
    from callkpi.store_sqlite import SqliteStore  # imported here: backends load on demand

    return await SqliteStore.open(path, create=create)


def redacted(url: str) -> str:
    """A URL as it may be shown: without a password, should one have been written in it."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return f"{scheme}{sep}{rest}"
