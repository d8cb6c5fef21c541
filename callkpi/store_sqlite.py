"""The SQLite implementation of the store (aiosqlite, one file, WAL).

Why these settings:
- WAL: a reader (the report job) never blocks the writer (the listener, an ingest).
- synchronous=NORMAL: in WAL mode a committed transaction survives a crash or kill -9 of
  the process; only an OS crash can lose the last few, and queue_log re-ingest repairs that.
- BEGIN IMMEDIATE + busy_timeout: the listener and a CLI ingest may write at the same time;
  the second waits for the first instead of failing half-way through a batch.
- page_size 16 KiB (new stores): the events table is an append-mostly log and its rows are
  read in long runs (facts, reports); larger pages mean fewer pages written per batch and
  visited per scan.
- Reads go to a small pool of read-only connections: in WAL each reads its own snapshot, so
  the report's independent queries, awaited together, run side by side on the cores (sqlite3
  lets go of the GIL while SQLite works) and never wait behind a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Iterator, NamedTuple, Sequence, cast

import aiosqlite

from callkpi.events import (
    COLUMNS,
    KEY_COLUMNS,
    SOURCE_QUEUE_LOG,
    CallEvent,
    Checkpoint,
)
from callkpi.schema import MIGRATIONS, SCHEMA_VERSION
from callkpi.store import (
    Batch, BulkWriter, Parse, StoreError, StoreInfo, StoreUnavailable, WriteResult)

BUSY_TIMEOUT_MS = 30_000
WAL_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default
PAGE_SIZE = 16_384
READERS = 2  # read connections: one per core of the small machines callkpi runs on

# sqlite3 binds int, float and str directly but sends None through its adapter lookup, which
# ends by raising and clearing an AttributeError, and most events carry four NULL numbers. A
# registered adapter for None is found by one dict lookup instead. The adapter is a dict's
# `get`, which returns None for any key: a C function, so no Python frame per NULL either.
# None maps to None, so no connection in the process sees a different value. (What it saves:
# docs/queue_log.md, "Speed".)
_NONE_TO_NONE: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NONE_TO_NONE.get)

_COLS = ", ".join(COLUMNS)
_QMARKS = ", ".join("?" * len(COLUMNS))
_NUMBERED = ", ".join(f"?{i}" for i in range(1, len(COLUMNS) + 1))

# queue_log is the source of truth: its events are stored by exact key, taking the place of
# an AMI copy stamped the same second (AMI's caller name is kept: queue_log has none) under
# a new id, as a new row would be (ids are in commit order: schema migration 4) ...
_NON_KEY = [c for c in COLUMNS if c not in KEY_COLUMNS and c != "caller_name"]
INSERT_AUTHORITATIVE = f"""
INSERT INTO events ({_COLS}) VALUES ({_QMARKS})
ON CONFLICT ({", ".join(KEY_COLUMNS)}) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _NON_KEY)},
    caller_name = CASE WHEN excluded.caller_name = '' THEN events.caller_name
                       ELSE excluded.caller_name END,
    id = (SELECT max(id) + 1 FROM events)
WHERE events.source = 'ami'
"""
# ... and replace an AMI copy of the same event that Asterisk stamped one second apart (the
# AMI event is published a few ms after the queue_log line is written, so the two can
# straddle a second boundary). Straddling, a repeat's occurrence number (callkpi.events) can
# differ between the two: an AMI repeat is a copy of a queue_log event of its key's base too.
_BASE = "substr({0}, 1, instr({0} || char(10), char(10)) - 1)"  # base_discr() in SQL
DELETE_AMI_TWINS = f"""
DELETE FROM events WHERE source = 'ami' AND tsec BETWEEN ? AND ? AND EXISTS (
    SELECT 1 FROM events q
    WHERE q.server = events.server AND q.call_id = events.call_id AND q.kind = events.kind
      AND q.queue = events.queue AND q.agent = events.agent
      AND q.tsec BETWEEN events.tsec - 1 AND events.tsec + 1
      AND q.discr IN (events.discr, {_BASE.format("events.discr")}) AND q.source = 'queue_log')
"""
# A live source's event is stored unless queue_log already has it within a second.
INSERT_LIVE = f"""
INSERT INTO events ({_COLS}) SELECT {_NUMBERED}
WHERE NOT EXISTS (
    SELECT 1 FROM events q
    WHERE q.server = ?1 AND q.call_id = ?2 AND q.kind = ?3 AND q.queue = ?4 AND q.agent = ?5
      AND q.tsec BETWEEN ?6 - 1 AND ?6 + 1 AND q.discr IN (?7, {_BASE.format("?7")})
      AND q.source = 'queue_log')
ON CONFLICT DO NOTHING
"""
INSERT_QUARANTINE = """
INSERT INTO quarantine (source, origin, position, line_no, reason, raw, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
"""
INSERT_LINK = """
INSERT INTO call_links (server, uniqueid, linked_id, ts) VALUES (?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""
UPSERT_CHECKPOINT = """
INSERT INTO checkpoints (stream, file_id, head, "offset", line_no, updated_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (stream) DO UPDATE SET file_id = excluded.file_id, head = excluded.head,
    "offset" = excluded."offset", line_no = excluded.line_no, updated_at = excluded.updated_at
"""
# SQLite's own lock already serialises writers; the counter keeps one design with PostgreSQL
NEXT_SEQ = "UPDATE write_seq SET seq = seq + 1"


# every connection, writer and readers
CONNECTION_PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA cache_size = -65536",
)


def _tuples(rows: Iterable[sqlite3.Row]) -> list[tuple[Any, ...]]:
    """Rows as they are: no connection sets a row_factory, so sqlite3 returns plain tuples
    (aiosqlite's types say Row because one could)."""
    return cast(list[tuple[Any, ...]], list(rows))


def _require_file(path: str) -> None:
    try:
        os.stat(path)
    except FileNotFoundError:
        raise StoreError(f"database {path} does not exist"
                         " (ingest or listen first, or check --db)") from None
    except OSError as exc:
        raise StoreError(f"cannot open database {path}: {exc.strerror}") from None


def _access_problem(path: str) -> str | None:
    """Why SQLite could not open or create the database at `path`, if it could not. A
    missing directory is never created: a mistyped --db must not start a second, empty
    store (the install script and systemd's StateDirectory make the real directory)."""
    directory = Path(path).absolute().parent
    if not directory.is_dir():
        return f"cannot create database {path}: directory {directory} does not exist"
    if os.path.isdir(path):
        return f"cannot open database {path}: it is a directory (name a file in it)"
    exists = os.path.exists(path)
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return (f"cannot {'open' if exists else 'create'} database {path}: {directory} is on "
                "a read-only file system")
    writable = os.access(directory, os.W_OK)
    if not exists:
        return None if writable else (
            f"cannot create database {path}: directory {directory} is not writable")
    if not os.access(path, os.R_OK | os.W_OK):
        return (f"cannot open database {path}: permission denied (it is read and written "
                "by its owner: run callkpi as that user)")
    if not writable and not all(os.path.exists(path + end) for end in ("-wal", "-shm")):
        return (f"cannot open database {path}: directory {directory} is not writable (SQLite "
                f"keeps its {Path(path).name}-wal and -shm files beside the database)")
    return None


class SqliteStore:
    """One SQLite file. Open with `await SqliteStore.open(path)`; use as an async context manager."""

    def __init__(self, path: str, conn: aiosqlite.Connection) -> None:
        self.path = path
        self._conn = conn
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._opened_readers: list[aiosqlite.Connection] = []
        self._reader_slots = READERS
        # One write connection: its transactions must not interleave, whoever the callers are
        # (the survey's sessions, the listener's writer and a facts refresh in one process).
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> "SqliteStore":
        path = str(path)
        if not create:
            _require_file(path)
        # Checked first: SQLite says only "unable to open database file" for each of these,
        # and aiosqlite (0.22) leaves its worker thread to print a traceback when its
        # connect fails.
        if problem := _access_problem(path):
            raise StoreError(problem)
        try:
            _keep_private(path)
            conn = await aiosqlite.connect(path, isolation_level=None)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        store = cls(path, conn)
        try:
            await store._configure()
            await store._migrate()
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, (sqlite3.DatabaseError, OSError)):
                raise StoreError(f"cannot use database {path}: {exc}") from None
            raise
        return store

    async def _configure(self) -> None:
        for pragma in (
            f"PRAGMA page_size = {PAGE_SIZE}",  # takes effect only on a new, empty file
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = NORMAL",
            "PRAGMA foreign_keys = ON",
            *CONNECTION_PRAGMAS,
        ):
            await self._conn.execute(pragma)

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read-only connection of the pool, opened on first need."""
        if self._readers.empty() and self._reader_slots > 0:
            self._reader_slots -= 1  # taken before the await: concurrent callers see it
            conn = await aiosqlite.connect(self.path, isolation_level=None)
            for pragma in (*CONNECTION_PRAGMAS, "PRAGMA query_only = ON"):
                await conn.execute(pragma)
            self._opened_readers.append(conn)
            self._readers.put_nowait(conn)
        conn = await self._readers.get()
        try:
            with _translated(self.path):
                yield conn
        finally:
            self._readers.put_nowait(conn)

    async def _migrate(self) -> None:
        async with self._conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = row[0] if row else 0  # it always answers; 0 is a new database
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {version}, newer than this callkpi "
                f"({SCHEMA_VERSION}); upgrade callkpi"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            async with self._transaction() as conn:
                # another process may have migrated while this one waited for the lock
                ((now,),) = await conn.fetch_all("PRAGMA user_version")
                if now >= target:
                    continue
                await conn.executescript_in_tx(MIGRATIONS[target])
                await conn.execute(f"PRAGMA user_version = {target}")

    async def __aenter__(self) -> "SqliteStore":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for conn in self._opened_readers:
            await conn.close()
        await self._conn.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator["_Tx"]:
        async with self._write_lock:
            with _translated(self.path):
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _Tx(self._conn)
                except BaseException:
                    await self._conn.execute("ROLLBACK")
                    raise
                await self._conn.execute("COMMIT")

    def transaction(self) -> contextlib.AbstractAsyncContextManager["_Tx"]:
        """A write transaction for a derived layer (facts, roster): execute/executemany."""
        return self._transaction()

    # ---------------------------------------------------------------- writes
    async def write(self, batch: Batch) -> WriteResult:
        return await self.write_prepared(self.prepare(batch))

    def prepare(self, batch: Batch) -> "_Prepared":
        """Everything writing `batch` takes before it needs the database (the bulk writer's
        processes do it while the other one writes)."""
        authoritative = [e for e in batch.events if e.source == SOURCE_QUEUE_LOG]
        return _Prepared(
            batch,
            # plain tuples: sqlite3 binds a NamedTuple through the slow sequence path
            authoritative=[tuple(e) for e in authoritative],
            window=_window(authoritative) if authoritative else None,
            live=[e for e in batch.events if e.source != SOURCE_QUEUE_LOG])

    async def write_prepared(self, prepared: "_Prepared") -> WriteResult:
        batch = prepared.batch
        async with self._transaction() as tx:
            await tx.execute(NEXT_SEQ)
            before = self._conn.total_changes
            if prepared.authoritative:
                await tx.executemany(INSERT_AUTHORITATIVE, prepared.authoritative)
            stored = self._conn.total_changes - before
            if prepared.window:
                await tx.execute(DELETE_AMI_TWINS, prepared.window)
            before = self._conn.total_changes
            if prepared.live:
                await tx.executemany(INSERT_LIVE, prepared.live)
            stored += self._conn.total_changes - before
            before = self._conn.total_changes
            if batch.quarantined:
                await tx.executemany(INSERT_QUARANTINE, batch.quarantined)
            quarantined = self._conn.total_changes - before
            if batch.links:
                await tx.executemany(INSERT_LINK, batch.links)
            if batch.checkpoint is not None:
                await tx.execute(UPSERT_CHECKPOINT, batch.checkpoint)
        return WriteResult(
            stored=stored, duplicates=len(batch.events) - stored, quarantined=quarantined
        )

    def bulk_writer(self, parse: Parse) -> contextlib.AbstractAsyncContextManager[BulkWriter]:
        from callkpi.store_sqlite_bulk import bulk_writer

        return bulk_writer(self, parse)

    @contextlib.asynccontextmanager
    async def deferred_upkeep(self) -> AsyncIterator[None]:
        """While inside, WAL checkpoints wait for `upkeep` calls instead of landing on a
        commit: a commit that fills the WAL past the limit copies it into the database file
        before it returns, on a bulk writer's critical path."""
        await self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            yield
        finally:
            await self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            await self.upkeep()

    async def upkeep(self) -> None:
        # PASSIVE: copies what no reader still needs, never waits for a reader or a writer
        async with self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)") as cur:
            await cur.fetchall()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._transaction() as tx:
            return await tx.execute(sql, params)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        async with self._transaction() as tx:
            return await tx.executemany(sql, rows)

    async def insert_rows(self, table: str, columns: Sequence[str],
                          rows: Sequence[Sequence[Any]], *, replace: bool = False) -> int:
        async with self._transaction() as tx:
            if replace:
                await tx.execute(f"DELETE FROM {table}")
            return await tx.executemany(
                f"INSERT INTO {table} ({_quoted(columns)})"
                f" VALUES ({', '.join('?' * len(columns))})", rows)

    # ---------------------------------------------------------------- reads
    async def schema_tables(self) -> dict[str, list[str]]:
        names = [n for (n,) in await self.fetch_all(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {n: [c[1] for c in await self.fetch_all(f"PRAGMA table_info({n})")]
                for n in names}

    async def checkpoint(self, stream: str) -> Checkpoint | None:
        rows = await self.fetch_all(
            'SELECT stream, file_id, head, "offset", line_no, updated_at FROM checkpoints'
            " WHERE stream = ?",
            (stream,),
        )
        return Checkpoint(*rows[0]) if rows else None

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        async with self._reader() as conn, conn.execute(sql, params) as cur:
            return _tuples(await cur.fetchall())

    async def iter_rows(
        self, sql: str, params: Sequence[Any] = (), size: int = 10_000
    ) -> AsyncIterator[tuple]:
        async with self._reader() as conn, conn.execute(sql, params) as cur:
            while rows := await cur.fetchmany(size):
                for row in _tuples(rows):
                    yield row

    async def info(self) -> StoreInfo:
        (version,) = (await self.fetch_all("PRAGMA user_version"))[0]
        by_kind = dict(await self.fetch_all("SELECT kind, count(*) FROM events GROUP BY kind"))
        by_source = dict(
            await self.fetch_all("SELECT source, count(*) FROM events GROUP BY source")
        )
        first, last = (await self.fetch_all("SELECT min(ts), max(ts) FROM events"))[0]
        (quarantined,) = (await self.fetch_all("SELECT count(*) FROM quarantine"))[0]
        checkpoints = [
            Checkpoint(*row)
            for row in await self.fetch_all(
                'SELECT stream, file_id, head, "offset", line_no, updated_at FROM checkpoints'
                " ORDER BY stream"
            )
        ]
        return StoreInfo(
            path=self.path,
            schema_version=version,
            events=sum(by_kind.values()),
            events_by_kind=by_kind,
            events_by_source=by_source,
            quarantined=quarantined,
            first_ts=first,
            last_ts=last,
            checkpoints=checkpoints,
            size_bytes=_size_on_disk(self.path),
        )


class _Prepared(NamedTuple):
    """A batch in the form the store binds it."""

    batch: Batch
    authoritative: list[tuple]  # queue_log events, as plain tuples
    window: tuple[int, int] | None  # their seconds, widened by one each side
    live: list[CallEvent]  # events of the live sources


class _Tx:
    """The statements allowed inside a transaction; each returns the rows it changed."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        before = self._conn.total_changes
        await self._conn.execute(sql, params)
        return self._conn.total_changes - before

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        before = self._conn.total_changes
        await self._conn.executemany(sql, rows)
        return self._conn.total_changes - before

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        async with self._conn.execute(sql, params) as cur:
            return _tuples(await cur.fetchall())

    async def executescript_in_tx(self, script: str) -> None:
        # sqlite3's executescript() would COMMIT first; run the statements one by one so a
        # migration is all-or-nothing.
        for statement in _statements(script):
            await self._conn.execute(statement)


@contextlib.contextmanager
def _translated(path: str) -> Iterator[None]:
    """sqlite3's errors as the store's: StoreUnavailable for a lock held past the busy
    timeout (worth retrying), StoreError otherwise."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreUnavailable(f"database {path}: {exc}") from exc
        raise StoreError(f"database {path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"database {path}: {exc}") from exc


def _window(events: Sequence[CallEvent]) -> tuple[int, int]:
    tsecs = [e.tsec for e in events]
    return min(tsecs) - 1, max(tsecs) + 1


def _statements(script: str) -> list[str]:
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


def _keep_private(path: str) -> None:
    """The store holds caller numbers, names and quarantined log text: a new one is created
    0640 (less if the umask says so) before SQLite opens it, and SQLite gives its -wal and
    -shm the database file's mode; a store an older callkpi made world-readable loses the
    world's access (its -wal and -shm too) when it is next opened for writing."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640))
        return
    except FileExistsError:
        pass
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError, PermissionError):  # not ours to change
            mode = stat.S_IMODE(os.stat(name).st_mode)
            if mode & 0o007:
                os.chmod(name, mode & ~0o007)


def _size_on_disk(path: str) -> int:
    return sum(
        os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)
    )


def _quoted(columns: Sequence[str]) -> str:
    """Column names as identifiers (one of them, "offset", is a keyword)."""
    return ", ".join(f'"{c}"' for c in columns)
