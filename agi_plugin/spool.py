"""Survey answers reach the caller's next prompt before they reach the store.

A caller's key press is written to the spool (`Spool`: one line appended to a local file, a
few microseconds) and the survey goes on; `AnswerWriter`, a task of its own, moves what the
spool holds into the store behind the callers. So a store busy with an ingest or a report (its
write lock held for seconds) delays the answers' arrival in the store, never a caller.

Nothing is lost on the way:
- a line is one `os.write` on an O_APPEND file, done before the caller's next prompt: it
  survives a kill -9 of the process (the kernel holds it), the store's own promise with
  synchronous=NORMAL; only an OS crash can lose the last ones;
- the writer rolls to a new segment file, writes the closed segments to the store in one
  transaction, and only then deletes them; whatever a crash, a stop or an unreachable store
  leaves behind is written at the next start (an answer written twice is stored once: its
  natural key is the same);
- a line that cannot be read back (an OS crash cut it) is quarantined, never dropped.

Every file operation of the spool runs on one thread of its own, never on the event loop: on
a disk busy with an ingest, creating, extending or deleting a file can wait for the
filesystem's journal for a tenth of a second, and on the loop that wait stalled every caller;
on the spool's thread it delays only the answer being written.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar

from agi_plugin.ratelog import RateLimitedLog
from callkpi.config import Config, ConfigError
from callkpi.errors import UserError
from callkpi.events import COLUMNS, SOURCE_AGI, CallEvent, CallLink, Quarantined
from callkpi.store import Batch, Store, WriteResult

log = logging.getLogger(__name__)
T = TypeVar("T")

SUFFIX = ".jsonl"
LOCK = ".lock"
BATCH_ANSWERS = 5_000  # answers per store transaction when a backlog is written
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
# After the first answer of a quiet moment, the writer waits this long for others to join its
# transaction: they are safe in the spool meanwhile, and one commit per answer cost most of the
# server's CPU (and a turn at the store's write lock each) with callers answering one by one.
GATHER_S = 0.2


class SpoolInUse(UserError):
    """Another survey server holds the spool directory."""


def spool_dir(config: Config, env: Mapping[str, str] = os.environ) -> Path:
    """[agi] spool, else a directory beside a store file: `<db>-agi-spool`, as SQLite names
    its own -wal and -shm files. A store that is not a file (a PostgreSQL server) has its
    spool in the service's state directory (systemd's StateDirectory, /var/lib/callkpi),
    else needs [agi] spool."""
    if config.agi.spool:
        return Path(config.agi.spool)
    db = config.store.db
    if "://" not in db or db.startswith("sqlite://"):
        return Path(db.removeprefix("sqlite://") + "-agi-spool")
    if state := env.get("STATE_DIRECTORY", "").split(":")[0]:
        return Path(state) / "agi-spool"
    raise ConfigError("[agi] spool: set a local directory for survey answers on their way "
                      "to the store (the store is not a file, and no state directory is set)")


@dataclass
class Segment:
    """What one closed segment file holds."""

    path: Path
    events: list[CallEvent] = field(default_factory=list)
    links: list[CallLink] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)


class Spool:
    """Numbered segment files of one JSON line per answer, in a directory only the service can
    read (the lines hold caller numbers), locked against a second server."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_fd: int | None = None
        self._fd: int | None = None  # the segment being appended to, opened on first need
        self._number = 0  # the current segment's number

    def open(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                              0o600)
        except OSError as exc:
            raise ConfigError(f"[agi] spool {self.directory}: {exc.strerror}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise SpoolInUse(f"[agi] spool {self.directory} is in use by another survey server "
                             "(a second one needs its own [agi] spool)") from None
        self._lock_fd = lock_fd
        closed = self.closed()
        self._number = int(closed[-1].stem) + 1 if closed else 1

    def close(self) -> None:
        self._close_segment()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def append(self, lines: bytes) -> None:
        """Answers (encode()d), durable against a crash of this process when this returns:
        one write, so a crash never keeps half of them."""
        if self._fd is None:
            self._fd = os.open(self._path(self._number),
                               os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        while lines:
            lines = lines[os.write(self._fd, lines):]

    def roll(self) -> list[Path]:
        """Close the current segment (the next answer starts a new one); the closed ones."""
        if self._fd is not None:
            self._close_segment()
            self._number += 1
        return self.closed()

    def closed(self) -> list[Path]:
        """Segments no longer appended to, oldest first."""
        current = self._path(self._number) if self._fd is not None else None
        return sorted((p for p in self.directory.glob("*" + SUFFIX)
                       if p.stem.isdigit() and p != current), key=lambda p: int(p.stem))

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}{SUFFIX}"

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def encode(event: CallEvent, links: Sequence[CallLink]) -> bytes:
    """One answer as a spool line."""
    return json.dumps({"event": list(event), "links": [list(link) for link in links]},
                      separators=(",", ":")).encode() + b"\n"


def read_segment(path: Path) -> Segment:
    segment = Segment(path)
    position = 0
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                record = json.loads(raw)
                if len(record["event"]) != len(COLUMNS):  # fewer would take defaults
                    raise ValueError(f"{len(record['event'])} fields")
                event = CallEvent(*record["event"])
                links = [CallLink(*link) for link in record["links"]]
            except (ValueError, TypeError, KeyError) as exc:
                segment.quarantined.append(Quarantined(
                    SOURCE_AGI, str(path), position, line_no,
                    f"unreadable survey answer in the spool: {exc}",
                    raw.decode("utf-8", "backslashreplace"), time.time()))
            else:
                segment.events.append(event)
                segment.links.extend(links)
            position += len(raw)
    return segment


async def store_spool_files(store: Store, paths: Sequence[Path], server: str) -> WriteResult:
    """Survey answers in the spool's line format into the store (`callkpi ingest FILE.jsonl`):
    the segments of a spool no server will drain (its store moved: a SQLite spool sits beside
    the old file), or a copy of one. Every answer is stored as `server`'s, as an ingested
    queue_log line is; an answer stored already is skipped (its natural key), an unreadable
    line quarantined with its file and line number."""
    result = WriteResult()
    for path in paths:
        segment = read_segment(path)
        events = [e._replace(server=server) for e in segment.events]
        links = [link._replace(server=server) for link in segment.links]
        for lo in range(0, max(len(events), 1), BATCH_ANSWERS):
            result.add(await store.write(Batch(
                events=events[lo:lo + BATCH_ANSWERS], links=links if lo == 0 else (),
                quarantined=segment.quarantined if lo == 0 else ())))
    return result


class AnswerWriter:
    """`record()` an answer (to the spool, at once); a background task writes the spool to the
    store, retrying while the store refuses. `start()` first writes what an earlier run left."""

    def __init__(self, spool: Spool, store: Store, limited: RateLimitedLog) -> None:
        self.spool = spool
        self._files = ThreadPoolExecutor(1, thread_name_prefix="spool")  # one: in order
        self.store = store
        self.limited = limited
        self.recorded = 0  # answers given to record()
        self.stored = 0  # answer events the store took (a replayed duplicate is not counted)
        self.pending = 0  # answers in the spool (or memory) and not yet in the store
        self._idle = asyncio.Event()  # set while nothing is pending
        self._unspooled: list[tuple[CallEvent, Sequence[CallLink]]] = []  # the spool failed
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # answers waiting for the spool's thread: those that come while it writes go together
        # in its next write (200 callers answering at once queued 200 hops to it)
        self._to_append: list[tuple[CallEvent, Sequence[CallLink], asyncio.Future[None]]] = []
        self._appending: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.spool.open()
        self.pending = sum(len(read_segment(p).events) for p in self.spool.closed())
        if self.pending:
            log.info("%d survey answers left in %s by an earlier run go to the store now",
                     self.pending, self.spool.directory)
        self._update_idle()
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="survey answer writer")

    async def record(self, event: CallEvent, links: Sequence[CallLink]) -> None:
        """Into the spool; on return the answer survives a crash of this process."""
        self.recorded += 1
        self.pending += 1
        self._idle.clear()
        appended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_append.append((event, links, appended))
        if self._appending is None:
            self._appending = asyncio.create_task(self._append_waiting())
        await asyncio.shield(appended)  # a caller gone meanwhile does not unwrite it

    async def _append_waiting(self) -> None:
        try:
            while self._to_append:
                batch, self._to_append = self._to_append, []
                try:
                    await self._on_files(self.spool.append,
                                         b"".join(encode(e, links) for e, links, _ in batch))
                except OSError as exc:  # kept in memory: written unless the process dies first
                    self.limited.log(logging.ERROR, "spool-failed",
                                     "cannot write survey answers to the spool %s (%s): "
                                     "keeping them in memory until the store takes them",
                                     self.spool.directory, exc.strerror)
                    self._unspooled.extend((e, links) for e, links, _ in batch)
                for *_, appended in batch:
                    appended.set_result(None)
                self._wake.set()
        finally:
            self._appending = None

    async def stored_all(self) -> None:
        """Return once every answer recorded so far is in the store."""
        await self._idle.wait()

    async def stop(self, timeout_s: float) -> None:
        """Write what is pending (within timeout_s), then close the spool; what the store did
        not take by then stays in the spool for the next start, and the log says so."""
        if self._stopping.is_set():
            return  # stopped already
        if self._appending is not None:  # a cut-short session's last answer
            await self._appending
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            _, late = await asyncio.wait({self._task}, timeout=timeout_s)
            if late:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        left = await self._on_files(self._close_spool)  # after any file work in flight
        if left:
            log.warning("%d survey answers are kept in %s: they go to the store at the next "
                        "start", left, self.spool.directory)
        for event, _ in self._unspooled:
            log.error("survey answer lost (neither the spool nor the store took it): %s", event)
        self._files.shutdown()

    def _close_spool(self) -> int:
        """Close the spool; the answers it keeps for the next start."""
        left = sum(len(read_segment(p).events) for p in self.spool.roll())
        self.spool.close()
        return left

    async def _run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            await self._wake.wait()
            await self._pause(GATHER_S)
            self._wake.clear()
            try:
                await self._write_spool()
            except Exception as exc:  # the answers stay in the spool: retry, never drop
                if self._stopping.is_set():
                    return
                self.limited.log(logging.WARNING, "store-refused",
                                 "survey answers wait in the spool %s: the store did not take "
                                 "them (%s: %s); retrying", self.spool.directory,
                                 type(exc).__name__, exc)
                await self._pause(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self._wake.set()
                continue
            delay = RETRY_FIRST_S
            if self._stopping.is_set() and not self._wake.is_set():
                return

    async def _pause(self, delay: float) -> None:
        """Wait before writing, unless the server is stopping (then its last try is now)."""
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            pass

    async def _write_spool(self) -> None:
        """Every closed segment (the current one closed first) and the answers the spool did
        not take, into the store; each group of segments deleted once stored."""
        closed = await self._on_files(self.spool.roll)
        if self._unspooled:
            unspooled, self._unspooled = self._unspooled, []
            try:
                await self._write([e for e, _ in unspooled],
                                  [link for _, links in unspooled for link in links], [])
            except BaseException:
                self._unspooled[:0] = unspooled
                raise
            self._written(len(unspooled))
        group: list[Segment] = []
        for path in closed:
            group.append(await self._on_files(read_segment, path))
            if sum(len(s.events) for s in group) >= BATCH_ANSWERS:
                await self._write_segments(group)
                group = []
        if group:
            await self._write_segments(group)

    async def _write_segments(self, segments: list[Segment]) -> None:
        await self._write([e for s in segments for e in s.events],
                          [link for s in segments for link in s.links],
                          [q for s in segments for q in s.quarantined])
        for segment in segments:
            await self._on_files(segment.path.unlink)
        self._written(sum(len(s.events) for s in segments))  # once: a retry rewrites them

    async def _write(self, events: list[CallEvent], links: list[CallLink],
                     quarantined: list[Quarantined]) -> None:
        result = await self.store.write(Batch(events=events, links=links,
                                              quarantined=quarantined))
        self.stored += result.stored
        if quarantined:
            log.warning("%d unreadable lines of the spool quarantined", len(quarantined))

    def _written(self, answers: int) -> None:
        self.pending -= answers
        self._update_idle()

    def _update_idle(self) -> None:
        if self.pending == 0:
            self._idle.set()
        else:
            self._idle.clear()

    async def _on_files(self, work: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._files, work, *args)
