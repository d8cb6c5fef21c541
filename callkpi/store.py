"""The store interface: what sources write and what the reports read.

`SqliteStore` (store_sqlite.py) implements it on one SQLite file. A PostgreSQL backend for
several PBXs feeding one central store is a second implementation of this protocol; nothing
above the store names SQLite.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol, Sequence

from callkpi.events import CallEvent, CallLink, Checkpoint, Quarantined


@dataclass
class Batch:
    """Everything one write stores atomically: a checkpoint is only ever durable together with
    the events read before it, so a crash at any point resumes exactly where the store is."""

    events: Sequence[CallEvent] = ()
    quarantined: Sequence[Quarantined] = ()
    links: Sequence[CallLink] = ()
    checkpoint: Checkpoint | None = None


@dataclass
class PreparedBatch:
    """A batch in the form its store binds, made by `Store.prepare`."""

    batch: Batch
    rows: Any  # the backend's own


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


class Store(Protocol):
    path: str  # where the store is: a file (a server address for a server backend)

    def prepare(self, batch: Batch) -> PreparedBatch:
        """Everything writing `batch` takes before it needs the database: a bulk writer
        prepares its next batch while another process holds the write turn."""

    async def write(self, batch: Batch | PreparedBatch) -> WriteResult:
        """Store a batch in one transaction; events already stored count as duplicates."""

    def bulk_writes(self) -> AbstractAsyncContextManager[None]:
        """While inside, the store does no upkeep of its own on the write path; the bulk
        writer calls `upkeep` when it has time (while another process writes)."""

    async def upkeep(self) -> None:
        """Do the store's deferred upkeep now, without blocking other writers."""

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

    async def close(self) -> None: ...
