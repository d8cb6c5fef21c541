"""A partner process for a big backfill: it parses and stores every other batch of lines.

SQLite takes one writer at a time and a batch takes about as long to parse as to store, so
one process alone leaves the second core idle for half the ingest. With a partner, the two
processes take turns at the store and each parses its next batch while the other stores.
The batches still commit in file order: the partner stores a batch only once told that
every batch before it is stored (`go`), and this process stores its own only once the partner
has reported the one before it. A checkpoint therefore never passes a batch that is not
stored, and a kill -9 of either process leaves what a one-process ingest would have left.
Events that repeat a key within a second are numbered in file order across the two
(callkpi.events.number_occurrences): each batch goes with the occurrences before it, and this
process counts those after it from the batch's last second alone, without waiting.

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
from typing import Any

from callkpi.errors import UserError
from callkpi.events import Checkpoint, Occurrences
from callkpi.store import Batch, WriteResult
from callkpi.store import open_store
from queue_log_parser.tailer import LineBatch

GO = "go"
PR_SET_PDEATHSIG = 1


class PartnerError(UserError):
    """The partner process failed or died; everything before its batch is stored."""


class Partner:
    """This side of the partner process: hands it batches and takes turns with it."""

    def __init__(self, db_path: str, server: str) -> None:
        # A fresh interpreter (not fork: this process has aiosqlite's threads running; not
        # multiprocessing's spawn: it would re-run the caller's __main__), talking pickled
        # messages over a socket pair. Its own session: a Ctrl-C stops this process, which
        # then stops the partner, rather than both at once.
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "queue_log_parser.partner", str(theirs.fileno()),
             db_path, server, str(os.getpid())],
            pass_fds=(theirs.fileno(),), start_new_session=True)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._handing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handing.set_result(None)
        self._ready = False
        self.storing = 0  # batches the partner was told to store and has not reported

    def ready(self) -> bool:
        """Has the partner started? Does not wait: until then, this process goes on
        alone."""
        if not self._ready and self._conn.poll():
            self._receive("ready")  # (or why it could not start)
            self._ready = True
        return self._ready

    def hand(self, origin: str, batch: LineBatch, checkpoint: Checkpoint,
             occurrences: Occurrences) -> None:
        """Give the partner the next batch to parse, numbering its events on from
        `occurrences` (it stores it when told `go`). Sent from a thread: the partner reads it
        only when it has finished what it is doing."""
        self._handing = asyncio.ensure_future(
            asyncio.to_thread(self._send, (origin, batch, checkpoint, occurrences)))

    async def go(self) -> None:
        """Every batch before the one handed last is stored: the partner may store it."""
        await self._handing  # one message at a time on the socket
        self._send(GO)
        self.storing += 1

    async def stored(self) -> WriteResult:
        """Wait for the partner's report of the oldest batch it was told to store."""
        # the partner answers in its own time: wait off the event loop
        result = await asyncio.to_thread(self._receive, "stored")
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
def serve(conn: Connection, db_path: str, server: str, parent: int) -> None:
    """The partner's whole life: parse each batch handed over, store it on `go`."""
    _die_with(parent)
    gc.disable()  # as in the parent's ingest: events are acyclic, freed by refcount
    try:
        asyncio.run(_serve(conn, db_path, server))
    except (EOFError, OSError):
        pass  # the parent is gone: it reports, not us
    except Exception as exc:  # told to the parent, which prints it as one line
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))


async def _serve(conn: Connection, db_path: str, server: str) -> None:
    from queue_log_parser.ingest import IngestStats, LogSink  # ingest imports this module

    store = await open_store(db_path)
    async with store, store.bulk_writes():
        sink = LogSink(store, server, IngestStats())
        conn.send(("ready", None))
        # Blocking receives are fine here: this process has nothing else to do meanwhile.
        while (message := conn.recv()) is not None:
            origin, batch, checkpoint, occurrences = message
            events, quarantined = sink.parse(batch, origin, occurrences)
            prepared = store.prepare(Batch(events, quarantined, checkpoint=checkpoint))
            if conn.recv() is None:  # the parent stopped before this batch's turn
                return
            result = await store.write(prepared)
            conn.send(("stored", result))
            await store.upkeep()  # while the parent writes


def main(argv: list[str]) -> None:
    fd, db_path, server, parent = argv
    serve(Connection(int(fd)), db_path, server, int(parent))


def _die_with(parent: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
