"""The SQLite store's bulk writer: a backfill's batches shared with a partner process.

SQLite takes one writer at a time and a batch takes about as long to parse as to store, so
one process alone leaves the second core idle for half the ingest. With a partner, the two
processes take turns at the store and each parses its next batch while the other stores.
The batches still commit in the order they were put: the partner stores a batch only once
told that every batch before it is stored (`go`), and this process stores its own only once
the partner has reported the one before it. A checkpoint therefore never passes a batch that
is not stored, and a kill -9 of either process leaves what a one-process ingest would have
left. While one process writes, the other copies the WAL into the database (`upkeep`),
which would otherwise land on a commit.

Measured against the other design, one writer fed by a pool of parsing processes, the
partner is faster on two cores: a pool's parsed events must be unpickled by the writer,
~0.6 µs a row on the writer's critical path (docs/scaling.md).

On Linux the partner dies with its parent (PR_SET_PDEATHSIG), so an orphan never writes
after a rerun has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, AsyncIterator

from callkpi.store import Parse, StoreError, WriteResult

if TYPE_CHECKING:
    from callkpi.store_sqlite import SqliteStore, _Prepared

GO = "go"
PR_SET_PDEATHSIG = 1


class PartnerError(StoreError):
    """The partner process failed or died; everything before its batch is stored."""


class SqliteBulkWriter:
    """Takes turns at the store with a partner process once it is up (~0.2 s); until then,
    parses and writes alone."""

    def __init__(self, store: "SqliteStore", parse: Parse) -> None:
        self.store = store
        self.parse = parse
        self.partner = Partner(store.path, parse)
        self._partners_turn = True
        self._mine: _Prepared | None = None  # to be written after the partner's batch
        self._result = WriteResult()

    async def put(self, job: Any) -> None:
        if not self.partner.ready():
            self._result.add(await self.store.write(self.parse(job)))
            return
        if self._partners_turn:
            self.partner.hand(job)  # it parses while we write ours
            await self._write_mine()
            await self.partner.go()
            await self.store.upkeep()  # while the partner writes
        else:
            self._mine = self.store.prepare(self.parse(job))
        self._partners_turn = not self._partners_turn

    async def flush(self) -> WriteResult:
        await self._write_mine()
        await self._partner_done()
        result, self._result = self._result, WriteResult()
        return result

    async def _write_mine(self) -> None:
        """Write our parsed batch once the partner has stored the one before it."""
        if self._mine is not None:
            await self._partner_done()
            mine, self._mine = self._mine, None
            self._result.add(await self.store.write_prepared(mine))

    async def _partner_done(self) -> None:
        while self.partner.storing:
            self._result.add(await self.partner.stored())

    async def close(self) -> None:
        await self.partner.close()


@contextlib.asynccontextmanager
async def bulk_writer(store: "SqliteStore", parse: Parse) -> AsyncIterator[SqliteBulkWriter]:
    async with store.deferred_upkeep():
        writer = SqliteBulkWriter(store, parse)
        try:
            yield writer
        finally:
            await writer.close()


class Partner:
    """This side of the partner process: hands it jobs and takes turns with it."""

    def __init__(self, db_path: str, parse: Parse) -> None:
        # A fresh interpreter (not fork: this process has aiosqlite's threads running; not
        # multiprocessing's spawn: it would re-run the caller's __main__), talking pickled
        # messages over a socket pair. Its own session: a Ctrl-C stops this process, which
        # then stops the partner, rather than both at once.
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(theirs.fileno()), db_path, str(os.getpid())],
            pass_fds=(theirs.fileno(),), start_new_session=True)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send(parse)
        self._handing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handing.set_result(None)
        self._ready = False
        self.storing = 0  # batches the partner was told to store and has not reported

    def ready(self) -> bool:
        """Has the partner started? Does not wait: until then, this process goes on alone."""
        if not self._ready and self._conn.poll():
            self._receive("ready")  # (or why it could not start)
            self._ready = True
        return self._ready

    def hand(self, job: Any) -> None:
        """Give the partner the next job to parse (it stores it when told `go`). Sent from a
        thread: the partner reads it only when it has finished what it is doing."""
        self._handing = asyncio.ensure_future(asyncio.to_thread(self._send, job))

    async def go(self) -> None:
        """Every batch before the one handed last is stored: the partner may store it."""
        await self._handing  # one message at a time on the socket
        self._send(GO)
        self.storing += 1

    async def stored(self) -> WriteResult:
        """Wait for the partner's report of the oldest batch it was told to store."""
        # the partner answers in its own time: wait off the event loop
        result: WriteResult = await asyncio.to_thread(self._receive, "stored")
        self.storing -= 1
        return result

    def _receive(self, expected: str) -> Any:
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError):
            raise PartnerError(self._died()) from None
        if status == "failed":
            raise PartnerError(f"ingest partner process: {value}")
        if status != expected:  # a bug in the turn-taking: never write out of order
            raise PartnerError(f"ingest partner process said {status!r}, not {expected!r}")
        return value

    async def close(self) -> None:
        """Let the partner finish and exit (after every `stored` was awaited)."""
        with contextlib.suppress(PartnerError):
            await self._handing
        try:
            self._conn.send(None)
        except OSError:
            pass  # it has already gone
        try:
            await asyncio.to_thread(self._process.wait, 10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            await asyncio.to_thread(self._process.wait)
        self._conn.close()

    def _send(self, message: object) -> None:
        try:
            self._conn.send(message)
        except OSError:
            raise PartnerError(self._died()) from None

    def _died(self) -> str:
        """Why the partner is gone: its last word if it said one, else its exit code."""
        try:
            if self._conn.poll():
                status, value = self._conn.recv()
                if status == "failed":
                    return f"ingest partner process: {value}"
        except (EOFError, OSError):
            pass
        try:
            code = self._process.wait(1)
        except subprocess.TimeoutExpired:
            code = None
        return f"the ingest partner process died (exit code {code})"


# ---------------------------------------------------------------- the partner process
def serve(conn: Connection, db_path: str, parent: int) -> None:
    """The partner's whole life: parse each job handed over, store it on `go`."""
    _die_with(parent)
    gc.disable()  # as in a backfill: events are acyclic, freed by reference counting
    try:
        asyncio.run(_serve(conn, db_path))
    except (EOFError, OSError):
        pass  # the parent is gone: it reports, not us
    except Exception as exc:  # told to the parent, which prints it as one line
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))


async def _serve(conn: Connection, db_path: str) -> None:
    from callkpi.store_sqlite import SqliteStore

    parse: Parse = conn.recv()
    store = await SqliteStore.open(db_path)
    async with store, store.deferred_upkeep():
        conn.send(("ready", None))
        # Blocking receives are fine here: this process has nothing else to do meanwhile.
        while (job := conn.recv()) is not None:
            prepared = store.prepare(parse(job))
            if conn.recv() is None:  # the parent stopped before this batch's turn
                return
            result = await store.write_prepared(prepared)
            conn.send(("stored", result))
            await store.upkeep()  # while the parent writes


def main(argv: list[str]) -> None:
    fd, db_path, parent = argv
    serve(Connection(int(fd)), db_path, int(parent))


def _die_with(parent: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])

