"""The PostgreSQL implementation of the store (psycopg 3, async): one database that the
collectors of several PBXs write to at once, and the reports read.

Why this shape:
- psycopg 3 rather than asyncpg (bench/pg_driver.py, docs/scaling.md): where the store spends
  its time the two are level or psycopg leads. A bulk write waits on the server (its insert,
  not the client's COPY, is the ingest's bound: asyncpg's ~0.3 µs less client CPU a row
  buys nothing there), and psycopg reads rows back as the tuples the store returns ~25 %
  faster than asyncpg's records converted (the facts layer streams millions). asyncpg's
  quicker round trip (~0.1 ms) is small beside a commit's. And libpq, under psycopg, finds
  the password (PGPASSWORD, ~/.pgpass), TLS and service settings exactly as psql does.
- One write connection per store object, its transactions one at a time (an asyncio lock),
  whoever the callers are; reads go to a small pool of read-only connections, each its own
  snapshot, so the report's independent queries run side by side on the server.
- A batch of events goes in by COPY into a temporary table of the session, then one INSERT ...
  SELECT per source rule: the rules of store_sqlite.py (queue_log's record replaces an AMI
  copy of the same key, same second or one apart; a live event is kept unless queue_log has
  it) as statements over the whole batch instead of per row.
- Every write of events first takes the next number of the one-row `write_seq` counter: its
  row lock serialises writers from any number of processes and hosts until commit, so ids
  (drawn from the identity inside the write) are in commit order, as on SQLite, and the twin
  rule sees every committed queue_log row.
- The dialect differences from SQLite are here and in schema_postgres.py: placeholders (`?`
  in the SQL of the layers above becomes `%s`), numeric results (an integer sum comes back
  an int, an average a float, as from SQLite), NUL in text (PostgreSQL refuses it: stored as
  the four characters `\\x00`), upserts on a whole batch (one row per key).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import typing
from typing import Any, AsyncIterator, Iterable, Iterator, Sequence

import psycopg
import psycopg.errors
from psycopg.adapt import Buffer, Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from callkpi.events import COLUMNS, KEY_COLUMNS, SOURCE_QUEUE_LOG, CallEvent, Checkpoint
from callkpi.schema_postgres import MIGRATIONS, SCHEMA_VERSION
from callkpi.store import (
    Batch, Parse, StoreError, StoreInfo, StoreUnavailable, WriteResult, redacted)

READERS = 4  # read connections: the report awaits its independent queries together
CONNECT_TIMEOUT_S = 10
PASSWORD_ENV = "CALLKPI_STORE_PASSWORD"
MIGRATION_LOCK = 0x63616C6C6B7069  # pg_advisory_xact_lock key: "callkpi"

_COLS = ", ".join(COLUMNS)
_KEY_LEN = len(KEY_COLUMNS)
assert COLUMNS[:_KEY_LEN] == KEY_COLUMNS  # an event's key is its first fields
_KEY = ", ".join(KEY_COLUMNS)
_PG_TYPES = {str: "text", int: "int8", float: "float8"}
# the COPY's binary types, from CallEvent's annotations (`float | None` -> float8)
COPY_TYPES = [_PG_TYPES[next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))]
              for hint in typing.get_type_hints(CallEvent).values()]

CREATE_INCOMING = f"""
CREATE TEMP TABLE incoming ON COMMIT DELETE ROWS AS SELECT {_COLS} FROM events WITH NO DATA;
ALTER TABLE incoming ADD COLUMN ord BIGINT GENERATED ALWAYS AS IDENTITY;
"""
COPY_INCOMING = f"COPY incoming ({_COLS}) FROM STDIN (FORMAT BINARY)"
NEXT_SEQ = "UPDATE write_seq SET seq = seq + 1"

# queue_log's events by exact key, in file order (the ids follow it), taking an AMI row's
# place under the id the insert drew, as a new row would (the batch holds each key once:
# PostgreSQL cannot update a row twice in one statement) ...
_NON_KEY = [c for c in COLUMNS if c not in KEY_COLUMNS and c != "caller_name"]
STORE_AUTHORITATIVE = f"""
INSERT INTO events ({_COLS})
SELECT {_COLS} FROM incoming WHERE source = 'queue_log' ORDER BY ord
ON CONFLICT ({_KEY}) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _NON_KEY)},
    caller_name = CASE WHEN excluded.caller_name = '' THEN events.caller_name
                       ELSE excluded.caller_name END,
    id = excluded.id
WHERE events.source = 'ami'
"""
# ... and AMI copies stamped one second apart. Straddling, a repeat's occurrence number
# (callkpi.events) can differ between the two: an AMI repeat is a copy of a queue_log event of
# its key's base too.
_BASE = "split_part({0}, chr(10), 1)"  # base_discr() in SQL
DELETE_AMI_TWINS = f"""
DELETE FROM events WHERE source = 'ami'
  AND tsec BETWEEN (SELECT min(tsec) - 1 FROM incoming WHERE source = 'queue_log')
               AND (SELECT max(tsec) + 1 FROM incoming WHERE source = 'queue_log')
  AND EXISTS (
    SELECT 1 FROM events q
    WHERE q.server = events.server AND q.call_id = events.call_id AND q.kind = events.kind
      AND q.queue = events.queue AND q.agent = events.agent
      AND q.tsec BETWEEN events.tsec - 1 AND events.tsec + 1
      AND q.discr IN (events.discr, {_BASE.format("events.discr")})
      AND q.source = 'queue_log')
"""
# A live source's event is stored unless queue_log already has it within a second.
STORE_LIVE = f"""
INSERT INTO events ({_COLS})
SELECT {_COLS} FROM incoming i
WHERE source <> 'queue_log' AND NOT EXISTS (
    SELECT 1 FROM events q
    WHERE q.server = i.server AND q.call_id = i.call_id AND q.kind = i.kind
      AND q.queue = i.queue AND q.agent = i.agent AND q.tsec BETWEEN i.tsec - 1 AND i.tsec + 1
      AND q.discr IN (i.discr, {_BASE.format("i.discr")}) AND q.source = 'queue_log')
ORDER BY ord
ON CONFLICT DO NOTHING
"""
INSERT_QUARANTINE = """
INSERT INTO quarantine (source, origin, position, line_no, reason, raw, received_at)
VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""
INSERT_LINK = """
INSERT INTO call_links (server, uniqueid, linked_id, ts) VALUES (%s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""
UPSERT_CHECKPOINT = """
INSERT INTO checkpoints (stream, file_id, head, "offset", line_no, updated_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (stream) DO UPDATE SET file_id = excluded.file_id, head = excluded.head,
    "offset" = excluded."offset", line_no = excluded.line_no, updated_at = excluded.updated_at
"""
CHECKPOINT_COLUMNS = 'stream, file_id, head, "offset", line_no, updated_at'

# psycopg cannot tell a server that is down from one that refuses us by an error code when
# the connection is not made yet: these are libpq's words for "down, starting or stopping".
_UNREACHABLE = re.compile(
    r"Connection refused|No such file or directory|timeout expired|Connection timed out"
    r"|starting up|shutting down|in recovery mode|too many clients|connection slots"
    r"|server closed the connection|Connection reset|could not (?:receive|send) data"
    r"|Network is unreachable|No route to host|terminating connection", re.I)
_TRANSIENT_STATES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01", "55P03")


class PostgresStore:
    """One PostgreSQL database. Open with `await PostgresStore.open(url)`; use as an async
    context manager."""

    def __init__(self, url: str, params: dict[str, Any]) -> None:
        self.path = url  # shown to the user: has no password (open refuses one)
        self._params = params
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._write_lock = asyncio.Lock()
        # check: a connection the server dropped (a restart) is replaced before it is used
        self._readers = AsyncConnectionPool(
            kwargs=params, min_size=1, max_size=READERS, open=False,
            configure=_configure_reader, check=AsyncConnectionPool.check_connection,
            timeout=CONNECT_TIMEOUT_S, name="callkpi-readers")

    @classmethod
    async def open(cls, url: str, *, create: bool = True) -> "PostgresStore":
        store = cls(url, connection_params(url))
        try:
            conn = await _connect(store._params, url)
            try:
                await _migrate(conn, url, create=create)
            finally:
                await conn.close()
            await store._readers.open(wait=False)
        except BaseException:
            await store.close()
            raise
        return store

    async def __aenter__(self) -> "PostgresStore":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            await self._readers.close()
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None

    async def _writer(self) -> psycopg.AsyncConnection[Any]:
        """The write connection, opened again after the server dropped it (a restart)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = None
            conn = await _connect(self._params, self.path)
            await conn.execute(CREATE_INCOMING)
            self._conn = conn
        return self._conn

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator["_Tx"]:
        async with self._write_lock:
            with _translated(self.path):
                conn = await self._writer()
                async with conn.transaction():
                    yield _Tx(conn)

    def transaction(self) -> contextlib.AbstractAsyncContextManager["_Tx"]:
        """A write transaction for a derived layer (facts, roster): execute/executemany."""
        return self._transaction()

    # ---------------------------------------------------------------- writes
    async def write(self, batch: Batch) -> WriteResult:
        try:
            return await self._write(batch)
        except _NulInText:
            return await self._write(_without_nul(batch))

    async def _write(self, batch: Batch) -> WriteResult:
        events, authoritative = _first_of_each_key(batch.events)
        live = len(events) - authoritative
        stored = quarantined = 0
        async with self._transaction() as tx:
            await tx.execute_pg(NEXT_SEQ)  # first: the lock (see the module doc)
            if events:
                await tx.copy_events(events)
            if authoritative:
                stored += await tx.execute_pg(STORE_AUTHORITATIVE)
                await tx.execute_pg(DELETE_AMI_TWINS)
            if live:
                stored += await tx.execute_pg(STORE_LIVE)
            if batch.quarantined:
                quarantined = await tx.executemany_pg(INSERT_QUARANTINE, batch.quarantined)
            if batch.links:
                await tx.executemany_pg(INSERT_LINK, batch.links)
            if batch.checkpoint is not None:
                await tx.execute_pg(UPSERT_CHECKPOINT, batch.checkpoint)
        return WriteResult(stored=stored, duplicates=len(batch.events) - stored,
                           quarantined=quarantined)

    @contextlib.asynccontextmanager
    async def bulk_writer(self, parse: Parse) -> AsyncIterator["PostgresBulkWriter"]:
        writer = PostgresBulkWriter(self, parse)
        try:
            yield writer
        finally:
            await writer.close()

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
                await tx.execute_pg(f"DELETE FROM {table}")
            await tx.copy_rows(f"COPY {table} ({_quoted(columns)}) FROM STDIN", rows)
            if "id" in columns:  # an identity numbers on from the highest id copied
                await tx.execute_pg(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id))"
                    f" FROM {table} HAVING max(id) IS NOT NULL")
        return len(rows)

    # ---------------------------------------------------------------- reads
    async def schema_tables(self) -> dict[str, list[str]]:
        tables: dict[str, list[str]] = {}
        for table, column in await self._fetch_pg(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name <> 'callkpi_schema'"
                " ORDER BY table_name, ordinal_position"):
            tables.setdefault(table, []).append(column)
        return tables

    async def checkpoint(self, stream: str) -> Checkpoint | None:
        rows = await self._fetch_pg(
            f"SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE stream = %s", (stream,))
        return Checkpoint(*rows[0]) if rows else None

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return await self._fetch_pg(*dialect(sql, params))

    async def _fetch_pg(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        with _translated(self.path):
            async with self._reader() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()

    async def iter_rows(
        self, sql: str, params: Sequence[Any] = (), size: int = 10_000
    ) -> AsyncIterator[tuple]:
        pg_sql, pg_params = dialect(sql, params)
        with _translated(self.path):
            async with self._reader() as conn, conn.transaction():
                # a server-side cursor: rows come `size` at a time, never all in memory
                async with conn.cursor(name="callkpi_rows") as cur:
                    cur.itersize = size
                    await cur.execute(pg_sql, pg_params)
                    async for row in cur:
                        yield row

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with self._readers.connection() as conn:
                yield conn
        except PoolTimeout:
            raise StoreUnavailable(
                f"{self.path}: no connection to the database within {CONNECT_TIMEOUT_S} s"
            ) from None

    async def info(self) -> StoreInfo:
        ((version,),) = await self._fetch_pg("SELECT version FROM callkpi_schema")
        by_kind = dict(await self._fetch_pg("SELECT kind, count(*) FROM events GROUP BY kind"))
        by_source = dict(
            await self._fetch_pg("SELECT source, count(*) FROM events GROUP BY source"))
        ((first, last),) = await self._fetch_pg("SELECT min(ts), max(ts) FROM events")
        ((quarantined,),) = await self._fetch_pg("SELECT count(*) FROM quarantine")
        checkpoints = [Checkpoint(*row) for row in await self._fetch_pg(
            f"SELECT {CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY stream")]
        ((size,),) = await self._fetch_pg("SELECT pg_database_size(current_database())")
        return StoreInfo(
            path=self.path, schema_version=version, events=sum(by_kind.values()),
            events_by_kind=by_kind, events_by_source=by_source, quarantined=quarantined,
            first_ts=first, last_ts=last, checkpoints=checkpoints, size_bytes=size)


class PostgresBulkWriter:
    """Each job is parsed in a thread while the batch before it is in the server (the
    server's work is on another core), then written by `write`, one batch at a time in the
    order put."""

    def __init__(self, store: PostgresStore, parse: Parse) -> None:
        self.store = store
        self.parse = parse
        self._writing: asyncio.Task[WriteResult] | None = None
        self._result = WriteResult()

    async def put(self, job: Any) -> None:
        batch = await asyncio.to_thread(self.parse, job)
        await self._written()
        self._writing = asyncio.create_task(self.store.write(batch))

    async def flush(self) -> WriteResult:
        await self._written()
        result, self._result = self._result, WriteResult()
        return result

    async def _written(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            self._result.add(await writing)

    async def close(self) -> None:
        """A write still under way is let finish (a cancelled one would leave its
        connection mid-transaction); its failure, if any, was or will be told by flush."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await self._writing


class _Tx:
    """The statements allowed inside a transaction; each returns the rows it changed. The
    plain methods take the portable SQL of the layers above; the `_pg` ones the store's own."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self.execute_pg(*dialect(sql, params))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return await self.executemany_pg(_placeholders(sql), rows)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return await self.fetch_pg(*dialect(sql, params))

    async def execute_pg(self, sql: str, params: Any = None) -> int:
        cur = await self._conn.execute(sql, params)
        return max(cur.rowcount, 0)

    async def executemany_pg(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        async with self._conn.cursor() as cur:
            await cur.executemany(sql, rows)
            return max(cur.rowcount, 0)

    async def fetch_pg(self, sql: str, params: Any = None) -> list[tuple]:
        cur = await self._conn.execute(sql, params)
        return await cur.fetchall()

    async def copy_events(self, events: Iterable[CallEvent]) -> None:
        async with self._conn.cursor() as cur, cur.copy(COPY_INCOMING) as copy:
            copy.set_types(COPY_TYPES)
            for event in events:
                await copy.write_row(event)

    async def copy_rows(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._conn.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                await copy.write_row(row)


# ---------------------------------------------------------------- connecting
def connection_params(url: str) -> dict[str, Any]:
    """libpq's parameters for `url`, the password from CALLKPI_STORE_PASSWORD if set (else
    libpq reads PGPASSWORD or ~/.pgpass). A password written in the URL is refused: a URL is
    seen on command lines and in process lists."""
    try:
        params: dict[str, Any] = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"{redacted(url)}: not a PostgreSQL URL ({exc})") from None
    if "password" in params:
        raise StoreError(
            f"{redacted(url)}: the URL holds a password; give it in {PASSWORD_ENV}, "
            "PGPASSWORD or ~/.pgpass instead")
    if password := os.environ.get(PASSWORD_ENV):
        params["password"] = password
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    params.setdefault("application_name", "callkpi")
    params["autocommit"] = True
    return params


async def _connect(params: dict[str, Any], shown: str) -> psycopg.AsyncConnection[Any]:
    with _translated(shown):
        conn = await psycopg.AsyncConnection.connect(**params)
        conn.adapters.register_loader("numeric", _NumericLoader)
        return conn


async def _configure_reader(conn: psycopg.AsyncConnection[Any]) -> None:
    conn.adapters.register_loader("numeric", _NumericLoader)
    await conn.execute("SET default_transaction_read_only = on")


async def _migrate(conn: psycopg.AsyncConnection[Any], shown: str, *, create: bool) -> None:
    with _translated(shown):
        async with conn.transaction():
            # one process migrates; the others wait here, then find it done
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            cur = await conn.execute("SELECT to_regclass('callkpi_schema') IS NOT NULL")
            ((exists,),) = await cur.fetchall()
            if not exists and not create:
                raise StoreError(f"database {shown} holds no callkpi store"
                                 " (ingest or listen first, or check --db)")
            if not exists:
                await conn.execute("CREATE TABLE callkpi_schema (version INTEGER NOT NULL);"
                                   " INSERT INTO callkpi_schema VALUES (0)")
            cur = await conn.execute("SELECT version FROM callkpi_schema")
            ((version,),) = await cur.fetchall()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {shown} has schema version {version}, newer than this callkpi "
                    f"({SCHEMA_VERSION}); upgrade callkpi")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                await conn.execute(MIGRATIONS[target])
                await conn.execute("UPDATE callkpi_schema SET version = %s", (target,))


# ---------------------------------------------------------------- the dialect
@functools.lru_cache(maxsize=1024)
def _placeholders(sql: str) -> str:
    """SQLite's `?` -> psycopg's `%s` (a literal `%` doubled), outside quoted text."""
    out = []
    for i, part in enumerate(re.split(r"('(?:[^']|'')*'|\"[^\"]*\")", sql)):
        if i % 2:  # a quoted string or identifier
            out.append(part.replace("%", "%%"))
        else:
            out.append(part.replace("%", "%%").replace("?", "%s"))
    return "".join(out)


def dialect(sql: str, params: Sequence[Any]) -> tuple[str, Sequence[Any] | None]:
    """The portable SQL of the layers above, as psycopg takes it."""
    return (_placeholders(sql), params) if params else (sql, None)


class _NumericLoader(Loader):
    """PostgreSQL's `numeric` (a sum of integers, an average) as SQLite would return it: an
    int when it is one, else a float. Never a Decimal: the layers above do float math."""

    def load(self, data: Buffer) -> int | float:
        text = bytes(data)
        return float(text) if b"." in text or b"N" in text or b"n" in text else int(text)


class _NulInText(StoreError):
    """A text value holds a NUL character, which PostgreSQL cannot store."""


@contextlib.contextmanager
def _translated(shown: str) -> Iterator[None]:
    """psycopg's errors as the store's: StoreUnavailable when the server is down, restarting
    or refusing more connections (worth retrying), StoreError otherwise."""
    try:
        yield
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, psycopg.DataError) and "0x00" in message:  # client or server side
            raise _NulInText(f"{shown}: {message}") from exc
        if _transient(exc):
            raise StoreUnavailable(f"{shown}: {message}") from exc
        raise StoreError(f"{shown}: {message}") from exc


def _transient(exc: psycopg.Error) -> bool:
    state = exc.sqlstate or ""
    if state.startswith(_TRANSIENT_STATES):
        return True
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) and not state:
        return bool(_UNREACHABLE.search(str(exc))) or "connection is" in str(exc)
    return False


def _first_of_each_key(events: Sequence[CallEvent]) -> tuple[Sequence[CallEvent], int]:
    """The events without a queue_log event whose key came earlier in the batch (a line
    logged twice: SQLite's row-by-row upsert keeps the first too), and how many queue_log
    events are left. Checked here rather than in SQL, where it took half the insert's time."""
    keys = {e[:_KEY_LEN] for e in events if e.source == SOURCE_QUEUE_LOG}
    authoritative = sum(1 for e in events if e.source == SOURCE_QUEUE_LOG)
    if len(keys) == authoritative:
        return events, authoritative
    first = []
    for event in events:
        if event.source == SOURCE_QUEUE_LOG:
            key = event[:_KEY_LEN]
            if key not in keys:
                continue  # its key came earlier
            keys.remove(key)
        first.append(event)
    return first, sum(1 for e in first if e.source == SOURCE_QUEUE_LOG)


def _without_nul(batch: Batch) -> Batch:
    """The batch with every NUL in its text as the four characters `\\x00`."""
    def clean(row: Any) -> Any:
        values = [v.replace("\0", "\\x00") if isinstance(v, str) else v for v in row]
        return row._make(values) if hasattr(row, "_make") else tuple(values)

    return Batch(events=[clean(e) for e in batch.events],
                 quarantined=[clean(q) for q in batch.quarantined],
                 links=[clean(link) for link in batch.links],
                 checkpoint=clean(batch.checkpoint) if batch.checkpoint else None)


def _quoted(columns: Sequence[str]) -> str:
    """Column names as identifiers (one of them, "offset", is a keyword)."""
    return ", ".join(f'"{c}"' for c in columns)
