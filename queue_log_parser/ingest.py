"""queue_log -> the store: `ingest_paths` (backfill) and `tail_path` (follow).

Every batch of lines is written with the checkpoint after its last line in one transaction
(`Batch.checkpoint`), so a kill -9 at any point and a rerun give the same store: the rerun
resumes at the durable checkpoint, and the natural key skips anything stored twice anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import os
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable

from callkpi.errors import UserError
from callkpi.events import (
    KEY_COLUMNS,
    MAX_RUN,
    SOURCE_QUEUE_LOG,
    CallEvent,
    Checkpoint,
    Key,
    Occurrences,
    Quarantined,
    number_occurrences,
)
from callkpi.store import Batch, BulkWriter, Store, WriteResult
from queue_log_parser.parser import BadLine, LineParser
from queue_log_parser.tailer import (
    HEAD_BYTES,
    LineBatch,
    LineReader,
    NotALog,
    disk_position,
    file_id,
    head_matches,
    is_gzip,
    lines_before,
    open_log,
    read_head,
    read_head_of,
)

log = logging.getLogger(__name__)

# A backfill with at least this much left to read goes through the store's bulk writer (on
# SQLite, a partner process): below it, its start-up would cost more than it saves
# (docs/queue_log.md, "Speed").
BULK_FROM_BYTES = 8 << 20


class LogFileError(UserError):
    """A file cannot be read (unreadable, not a regular file, a corrupt or cut-short .gz);
    the message names it. What was read before the error is stored."""


def resolve_named(path: str) -> str:
    """The file a path named by the admin stands for. Symbolic links in it are resolved once,
    here, and said so; every later open refuses a link (tailer.open_log), so a link swapped
    in for the log afterwards (to /etc/shadow, say) is never followed."""
    named = os.path.abspath(path)
    target = os.path.realpath(named)
    if target != named:
        log.info("%s leads to %s through a symbolic link: reading that file (resolved once, "
                 "now; a link put in its place later is not followed)", named, target)
    return target


@dataclass
class IngestStats:
    lines: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    held_back: int = 0  # incomplete last lines left for the next run

    def add(self, result: WriteResult) -> None:
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.quarantined += result.quarantined

    def summary(self) -> str:
        text = (f"lines read {self.lines}, events stored {self.stored}, "
                f"duplicates skipped {self.duplicates}, quarantined {self.quarantined}")
        if self.held_back:
            text += f", held back {self.held_back} partial line" + "s" * (self.held_back > 1)
        return text


Job = tuple[str, LineBatch, Checkpoint, Occurrences]  # origin, lines, checkpoint, numbering


class BatchParser:
    """Lines read from a file -> the batch to store (events, quarantined lines, checkpoint).
    Pickled by its server name alone: a bulk writer may parse in another process. A job
    carries where the numbering of repeated keys stands at its first line, so it is parsed
    alike wherever it is parsed."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.parser = LineParser(server)

    def __reduce__(self) -> tuple[type["BatchParser"], tuple[str]]:
        return BatchParser, (self.server,)

    def __call__(self, job: Job) -> Batch:
        origin, lines, checkpoint, occurrences = job
        events, quarantined = self.parse(lines, origin, occurrences)
        return Batch(events, quarantined, checkpoint=checkpoint)

    def parse(self, batch: LineBatch, origin: str, occurrences: Occurrences
              ) -> tuple[list[CallEvent], list[Quarantined]]:
        """The batch's events, numbered on from `occurrences` (advanced past them), and its
        quarantine."""
        events: list[CallEvent] = []
        bad: list[tuple[int, str]] = []
        append, parse = events.append, self.parser.parse
        for i, line in enumerate(batch.lines):
            if not line:
                continue  # an empty line carries nothing
            try:
                append(parse(line))
            except BadLine as exc:
                bad.append((i, exc.args[0]))
            except Exception as exc:  # a parser bug must not stop the ingest
                bad.append((i, f"parser error: {exc!r}"))
        return number_occurrences(events, occurrences), self.quarantine(batch, origin, bad)

    def quarantine(self, batch: LineBatch, origin: str,
                   bad: list[tuple[int, str]]) -> list[Quarantined]:
        if not (bad or batch.junk):
            return []
        now = time.time()
        junk = [Quarantined(SOURCE_QUEUE_LOG, origin, j.position, j.line_no, j.reason,
                            j.raw.decode("utf-8", "backslashreplace"), now) for j in batch.junk]
        if not bad:
            return junk
        offsets = batch.offsets()
        return junk + [Quarantined(SOURCE_QUEUE_LOG, origin, offsets[i], batch.first_line_no + i,
                                   reason, batch.lines[i], now) for i, reason in bad]


class LogSink:
    """Parses line batches and writes each with its checkpoint, in file order: directly, or
    through the store's bulk writer for a big backfill.

    It reads one stream of lines: the files of one log, in time order (a rotated file, then
    the file after it). Events that repeat a key within a second are numbered across batches
    and across that file boundary (`occurrences`, callkpi.events.number_occurrences); resuming
    inside a file, the count starts from what the file holds before the checkpoint."""

    def __init__(self, store: Store, server: str, stats: IngestStats) -> None:
        self.store = store
        self.server = server
        self.parse = BatchParser(server)
        self.stats = stats
        self.occurrences = Occurrences()  # where the stream is in its current second
        self.bulk: BulkWriter | None = None
        self._bulk = contextlib.AsyncExitStack()

    async def take_bulk_writer(self) -> None:
        if self.bulk is None:
            self.bulk = await self._bulk.enter_async_context(
                self.store.bulk_writer(self.parse))

    async def consume(self, stream: str, origin: str, fid: str, reader: LineReader,
                      batch_lines: int, progress: Callable[[], None] | None = None) -> None:
        """Store every complete line the reader has now. `stream` names the checkpoint,
        `origin` the file being read (a rotated file of the stream, when draining one)."""
        for batch in reader.batches(batch_lines):
            checkpoint = Checkpoint(stream, fid, reader.head, reader.offset, reader.line_no,
                                    time.time())
            if self.bulk is None:  # parsed here: the numbering advances as it goes
                await self.put(self.parse((origin, batch, checkpoint, self.occurrences)))
            else:  # parsed when its turn comes, maybe elsewhere: the numbering goes on now
                await self.bulk.put((origin, batch, checkpoint, self.occurrences.copy()))
                self.occurrences = self.occurrences_after(batch, self.occurrences)
            self.stats.lines += batch.count
            if progress:
                progress()

    async def flush(self) -> None:
        """Everything read so far is stored."""
        if self.bulk is not None:
            self.stats.add(await self.bulk.flush())

    async def close(self) -> None:
        self.bulk = None
        await self._bulk.aclose()

    def resume(self, f: BinaryIO, offset: int) -> None:
        """A file is read from `offset`: inside it, the occurrences go on from the lines it
        holds before (read back to the start of their second); at its start, from the file
        read before it (a rotation of the same log)."""
        if offset > 0:
            self.occurrences = self.occurrences_before(f, offset)

    def occurrences_before(self, f: BinaryIO, offset: int) -> Occurrences:
        """Where the stream is in its second at `offset` of f: that second's events before."""
        return Occurrences().then(*self._last_second(f, offset))

    def occurrences_after(self, batch: LineBatch, before: Occurrences) -> Occurrences:
        """Where the stream is after `batch`, going on from `before`, from the events of its
        last second alone (the bulk writer parses the rest): the next batch need not wait."""
        return before.then(*self._last_second(io.BytesIO(batch.data), len(batch.data)))

    def _last_second(self, f: BinaryIO, offset: int) -> tuple[int, int, list[Key], bool]:
        """The last second before `offset` in f: its tsec, how many events it has there,
        their keys newest first (the newest MAX_RUN: all a count needs), and whether they are
        all of f's events before `offset`."""
        tsec, run = -1, 0
        keys: list[Key] = []
        for line in lines_before(f, offset):
            try:
                event = self.parse.parser.parse(line)
            except Exception:  # quarantined when it was read: no event, as then
                continue
            if run and event.tsec != tsec:
                return tsec, run, keys, False
            tsec, run = event.tsec, run + 1
            if len(keys) < MAX_RUN:
                keys.append(tuple(event[:len(KEY_COLUMNS)]))
        return tsec, run, keys, True

    def quarantine_fragment(self, origin: str, reader: LineReader, why: str) -> Batch | None:
        """An incomplete last line that will never be completed (its file was rotated away
        or truncated): kept in quarantine, never silently dropped."""
        rest = reader.take_pending()
        if not rest:
            return None
        return Batch(quarantined=[Quarantined(
            SOURCE_QUEUE_LOG, origin, reader.offset, reader.line_no + 1, why,
            rest.decode("utf-8", "backslashreplace"), time.time())])

    async def put(self, batch: Batch) -> None:
        self.stats.add(await self.store.write(batch))


# ---------------------------------------------------------------- checkpoints
def checkpoint_stream(server: str, path: str) -> str:
    """The name of a queue_log's checkpoint: the file as one PBX reads it. Several PBXs that
    write to one store all log to /var/log/asterisk/queue_log, each its own."""
    return f"queue_log://{server}{os.path.abspath(path)}"


async def resume_checkpoint(store: Store, server: str, path: str) -> tuple[str, Checkpoint | None]:
    """(the stream, its checkpoint). A store written before checkpoints were named per PBX
    holds the file's bare path: the first PBX that reads that path adopts it (one UPDATE, so
    a second PBX starting at the same moment finds it gone and starts from its own file)."""
    stream = checkpoint_stream(server, path)
    checkpoint = await store.checkpoint(stream)
    if checkpoint is None and await store.execute(
            "UPDATE checkpoints SET stream = ? WHERE stream = ?", (stream, os.path.abspath(path))):
        checkpoint = await store.checkpoint(stream)
    return stream, checkpoint


# ---------------------------------------------------------------- backfill
async def ingest_paths(store: Store, paths: list[str], *, server: str, batch_lines: int,
                       full: bool = False,
                       progress: Callable[[int], None] | None = None,
                       bulk_from_bytes: int = BULK_FROM_BYTES) -> IngestStats:
    """Store the events of each file (plain or .gz), resuming where the store's checkpoint
    for that path says unless `full`. `progress` gets the on-disk bytes read since its
    last call. From a file with `bulk_from_bytes` or more left to read on, batches go
    through the store's bulk writer."""
    stats = IngestStats()
    sink = LogSink(store, server, stats)
    # Events are acyclic tuples freed by reference counting; the cyclic collector would
    # only rescan the millions of them a backfill allocates, again and again.
    gc.disable()
    try:
        for path in in_time_order(paths):
            try:
                await _ingest_file(sink, path, batch_lines, full, progress,
                                   bulk_from_bytes)
            except LogFileError:
                await sink.flush()  # what was read before the error is stored
                raise
        await sink.flush()
    finally:
        gc.enable()
        await sink.close()
    return stats


def in_time_order(paths: list[str]) -> list[str]:
    """The files by the time of their first line: the files of one log (`queue_log*` expands
    newest first) are then read as the one stream they are, a rotated file before the file
    after it. A file whose first line says no time keeps its place after those that do."""
    def first_time(path: str) -> float:
        try:
            with open_log(os.path.realpath(path)) as f:
                head = f.read(HEAD_BYTES)
        except (OSError, NotALog):
            return float("inf")  # its error is told when its turn comes
        for line in head.split(b"\n")[:-1]:
            try:
                return LineParser("").parse(line.decode("utf-8", "replace")).ts
            except Exception:
                continue
        return float("inf")

    return sorted(paths, key=first_time)  # stable: ties keep the order given


async def _ingest_file(sink: LogSink, path: str, batch_lines: int, full: bool,
                       progress: Callable[[int], None] | None, bulk_from_bytes: int) -> None:
    try:
        await _read_file(sink, path, batch_lines, full, progress, bulk_from_bytes)
    except NotALog as exc:
        raise LogFileError(f"{path}: {exc}") from None
    except OSError as exc:
        raise LogFileError(f"{path}: {exc.strerror or exc}") from None


async def _read_file(sink: LogSink, path: str, batch_lines: int, full: bool,
                     progress: Callable[[int], None] | None, bulk_from_bytes: int) -> None:
    with open_log(resolve_named(path)) as f:
        fid = file_id(os.fstat(f.fileno()))
        first = read_head(f)
        if full:
            stream, checkpoint = checkpoint_stream(sink.server, path), None
        else:
            stream, checkpoint = await resume_checkpoint(sink.store, sink.server, path)
        offset, line_no = 0, 0
        if checkpoint and checkpoint.file_id == fid and head_matches(first, checkpoint.head):
            offset, line_no = checkpoint.offset, checkpoint.line_no
        sink.resume(f, offset)
        reader = LineReader(f, offset, line_no, first)
        done = disk_position(f)
        if os.fstat(f.fileno()).st_size - done >= bulk_from_bytes:  # .gz: compressed size
            await sink.take_bulk_writer()

        def advance() -> None:
            nonlocal done
            if progress:
                now = disk_position(f)
                progress(now - done)
                done = now

        await sink.consume(stream, os.path.abspath(path), fid, reader, batch_lines, advance)
        if reader.cut_short:  # still being compressed? what came before it is stored
            raise LogFileError(f"{path}: compressed file ends early")
        sink.stats.held_back += 1 if reader.pending else 0


# ---------------------------------------------------------------- follow
class Follower:
    """Follows one path across restarts, logrotate by rename and by copytruncate.

    The path is resolved once (`resolve_named`) and its directory opened once: every later
    look at the log and its rotations goes through that directory, without following links,
    so what is read is the file the admin named or a regular file put in its place, never
    what a link swapped in points to, and never a FIFO or device (each refused with a
    warning, once, while waiting for a regular file to come back)."""

    def __init__(self, sink: LogSink, path: str, batch_lines: int) -> None:
        self.sink = sink
        self.path = path
        self.stream = checkpoint_stream(sink.server, path)
        self.directory, self.name = os.path.split(resolve_named(path))
        self.batch_lines = batch_lines
        self.dir_fd: int | None = None
        self.reader: LineReader | None = None
        self.fid = ""
        self.named = os.path.abspath(path)
        self.origin = self.named  # the file being read: the path, or a rotation of it
        self.refused = ""  # identity of the entry last refused (warned about once)

    async def start(self) -> None:
        """Resume from the checkpoint: in the same file, or first in the rotated file the
        checkpoint names (moved aside while we were not running)."""
        self.dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _, checkpoint = await resume_checkpoint(self.sink.store, self.sink.server, self.path)
        if self._lstat() is None:
            return
        self._open(self.name)
        if checkpoint is None or self.reader is None:
            return
        if checkpoint.file_id == self.fid and head_matches(self.reader.first, checkpoint.head):
            self._open(self.name, checkpoint.offset, checkpoint.line_no)
            return
        rotated = self._find_rotated(checkpoint)
        if rotated:
            await self._drain(rotated, checkpoint.offset, checkpoint.line_no)

    async def poll(self) -> None:
        """Store what was appended, following a rotation if there was one. The file is
        checked before it is read: a truncated file that grew past our offset again must
        not be read from the middle of a line."""
        if self.reader is None:
            if self._lstat() is None:
                return
            self._open(self.name)
            if self.reader is None:
                return
        st = self._lstat()
        if st is None or file_id(st) != self.fid:
            await self._consume()  # renamed: drain the old file to its end (our fd)
            await self._close("incomplete last line of a rotated file")
            if st is not None:
                self._open(self.name)
        elif st.st_size < self.reader.offset or not self._same_head():
            # copytruncate: the lines logged between our last read and the copy are in
            # the copy; read them there when we can find it.
            checkpoint = Checkpoint(self.stream, self.fid, self.reader.head,
                                    self.reader.offset, self.reader.line_no, 0.0)
            await self._close("incomplete last line of a truncated file")
            rotated = self._find_rotated(checkpoint)
            if rotated:
                await self._drain(rotated, checkpoint.offset, checkpoint.line_no)
            self._open(self.name)
        if self.reader is not None:
            await self._consume()

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.f.close()
            self.reader = None
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def _lstat(self) -> os.stat_result | None:
        """The log's directory entry itself (a link is a link), or None when there is none."""
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _open(self, name: str, offset: int = 0, line_no: int = 0) -> None:
        """Read `name` (the log, or a rotation of it) from `offset`; refused, nothing is."""
        if self.reader is not None:
            self.reader.f.close()
            self.reader = None
        try:
            f = open_log(name, self.dir_fd)
        except NotALog as exc:
            self._refuse(name, str(exc))
            return
        self.fid = file_id(os.fstat(f.fileno()))
        self.origin = self.named if name == self.name else os.path.join(self.directory, name)
        self.sink.resume(f, offset)
        self.reader = LineReader(f, offset, line_no, read_head(f))

    def _refuse(self, name: str, why: str) -> None:
        try:
            entry = file_id(os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False))
        except OSError:
            entry = ""
        if entry != self.refused:
            self.refused = entry
            log.warning("%s: %s; waiting for a regular file there",
                        os.path.join(self.directory, name), why)

    async def _consume(self) -> None:
        assert self.reader is not None
        await self.sink.consume(self.stream, self.origin, self.fid, self.reader,
                                self.batch_lines)

    async def _close(self, why: str) -> None:
        assert self.reader is not None
        fragment = self.sink.quarantine_fragment(self.origin, self.reader, why)
        if fragment:
            await self.sink.put(fragment)
        self.reader.f.close()
        self.reader = None

    async def _drain(self, name: str, offset: int, line_no: int) -> None:
        self._open(name, offset, line_no)
        if self.reader is not None:
            await self._consume()
            await self._close("incomplete last line of a rotated file")

    def _same_head(self) -> bool:
        assert self.reader is not None
        n = min(self.reader.offset, HEAD_BYTES, len(self.reader.first))
        try:
            return read_head_of(self.name, self.dir_fd)[:n] == self.reader.first[:n]
        except (OSError, NotALog):
            return False

    def _find_rotated(self, checkpoint: Checkpoint) -> str | None:
        """The file beside the log that holds the checkpoint's lines: the same inode
        (renamed by logrotate) or, for copytruncate, a plain copy with the same head and at
        least as long. Links are not looked through. Compressed rotations are not searched
        (run `callkpi ingest` on them)."""
        assert self.dir_fd is not None
        for entry in sorted(os.scandir(self.dir_fd), key=lambda e: e.name):
            if (not entry.name.startswith(self.name) or entry.name == self.name
                    or not entry.is_file(follow_symlinks=False)):
                continue
            st = entry.stat(follow_symlinks=False)
            if file_id(st) != checkpoint.file_id and st.st_size < checkpoint.offset:
                continue
            try:
                with open_log(entry.name, self.dir_fd) as f:
                    if not is_gzip(f) and head_matches(f.read(HEAD_BYTES), checkpoint.head):
                        return entry.name
            except (OSError, NotALog):
                continue
        return None


async def tail_path(store: Store, path: str, *, server: str, batch_lines: int,
                    poll_s: float, stop: asyncio.Event) -> IngestStats:
    """Follow `path` until `stop` is set; everything read is stored before returning."""
    stats = IngestStats()
    follower = Follower(LogSink(store, server, stats), path, batch_lines)
    try:
        await follower.start()
        while not stop.is_set():
            await follower.poll()
            try:
                await asyncio.wait_for(stop.wait(), poll_s)
            except asyncio.TimeoutError:
                pass
    except OSError as exc:
        raise LogFileError(f"{exc.filename or path}: {exc.strerror or exc}") from None
    finally:
        await follower.close()
    return stats
