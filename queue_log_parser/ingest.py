"""queue_log -> the store: `ingest_paths` (backfill) and `tail_path` (follow).

Every batch of lines is written with the checkpoint after its last line in one transaction
(`Batch.checkpoint`), so a kill -9 at any point and a rerun give the same store: the rerun
resumes at the durable checkpoint, and the natural key skips anything stored twice anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from dataclasses import dataclass
from typing import Callable

from callkpi.events import SOURCE_QUEUE_LOG, CallEvent, Checkpoint, Quarantined
from callkpi.store import Batch, BulkWriter, Store, WriteResult
from queue_log_parser.parser import BadLine, LineParser
from queue_log_parser.tailer import (
    HEAD_BYTES,
    LineBatch,
    LineReader,
    disk_position,
    file_id,
    head_matches,
    is_gzip,
    open_log,
    read_head,
    read_head_of,
)

# A backfill with at least this much left to read goes through the store's bulk writer (on
# SQLite, a partner process): below it, its start-up (~0.2 s) would cost more than it saves.
BULK_FROM_BYTES = 8 << 20


class LogFileError(Exception):
    """A file cannot be read (unreadable, a corrupt or cut-short .gz); the message names it.
    What was read before the error is stored."""


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


class BatchParser:
    """Lines read from a file -> the batch to store (events, quarantined lines, checkpoint).
    Pickled by its server name alone: a bulk writer may parse in another process."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.parser = LineParser(server)

    def __reduce__(self) -> tuple[type["BatchParser"], tuple[str]]:
        return BatchParser, (self.server,)

    def __call__(self, job: tuple[str, LineBatch, Checkpoint]) -> Batch:
        origin, lines, checkpoint = job
        events, quarantined = self.parse(lines, origin)
        return Batch(events, quarantined, checkpoint=checkpoint)

    def parse(self, batch: LineBatch, origin: str) -> tuple[list[CallEvent], list[Quarantined]]:
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
        return events, self.quarantine(batch, origin, bad)

    def quarantine(self, batch: LineBatch, origin: str,
                   bad: list[tuple[int, str]]) -> list[Quarantined]:
        if not bad:
            return []
        offsets, now = batch.offsets(), time.time()
        return [Quarantined(SOURCE_QUEUE_LOG, origin, offsets[i], batch.first_line_no + i,
                            reason, batch.lines[i], now) for i, reason in bad]


class LogSink:
    """Parses line batches and writes each with its checkpoint, in file order: directly, or
    through the store's bulk writer for a big backfill."""

    def __init__(self, store: Store, server: str, stats: IngestStats) -> None:
        self.store = store
        self.parse = BatchParser(server)
        self.stats = stats
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
            if self.bulk is None:
                await self.put(self.parse((origin, batch, checkpoint)))
            else:
                await self.bulk.put((origin, batch, checkpoint))
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
    # only rescan the millions of them a backfill allocates (~30 % of the parse time).
    gc.disable()
    try:
        for path in paths:
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


async def _ingest_file(sink: LogSink, path: str, batch_lines: int, full: bool,
                       progress: Callable[[int], None] | None, bulk_from_bytes: int) -> None:
    try:
        await _read_file(sink, path, batch_lines, full, progress, bulk_from_bytes)
    except OSError as exc:
        raise LogFileError(f"{path}: {exc.strerror or exc}") from None


async def _read_file(sink: LogSink, path: str, batch_lines: int, full: bool,
                     progress: Callable[[int], None] | None, bulk_from_bytes: int) -> None:
    stream = os.path.abspath(path)
    with open_log(path) as f:
        fid = file_id(os.fstat(f.fileno()))
        first = read_head(f)
        checkpoint = None if full else await sink.store.checkpoint(stream)
        offset, line_no = 0, 0
        if checkpoint and checkpoint.file_id == fid and head_matches(first, checkpoint.head):
            offset, line_no = checkpoint.offset, checkpoint.line_no
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

        await sink.consume(stream, stream, fid, reader, batch_lines, advance)
        if reader.cut_short:  # still being compressed? what came before it is stored
            raise LogFileError(f"{path}: compressed file ends early")
        sink.stats.held_back += 1 if reader.pending else 0


# ---------------------------------------------------------------- follow
class Follower:
    """Follows one path across restarts, logrotate by rename and by copytruncate."""

    def __init__(self, sink: LogSink, path: str, batch_lines: int) -> None:
        self.sink = sink
        self.path = path
        self.stream = os.path.abspath(path)
        self.batch_lines = batch_lines
        self.reader: LineReader | None = None
        self.fid = ""
        self.origin = self.stream  # the file being read: the path, or a rotation of it

    async def start(self) -> None:
        """Resume from the checkpoint: in the same file, or first in the rotated file the
        checkpoint names (moved aside while we were not running)."""
        checkpoint = await self.sink.store.checkpoint(self.stream)
        if not os.path.exists(self.path):
            return
        self._open(self.path)
        if checkpoint is None:
            return
        assert self.reader is not None
        if checkpoint.file_id == self.fid and head_matches(self.reader.first, checkpoint.head):
            self._open(self.path, checkpoint.offset, checkpoint.line_no)
            return
        rotated = find_rotated(self.path, checkpoint)
        if rotated:
            await self._drain(rotated, checkpoint.offset, checkpoint.line_no)

    async def poll(self) -> None:
        """Store what was appended, following a rotation if there was one. The file is
        checked before it is read: a truncated file that grew past our offset again must
        not be read from the middle of a line."""
        if self.reader is None:
            if not os.path.exists(self.path):
                return
            self._open(self.path)
        assert self.reader is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or file_id(st) != self.fid:
            await self._consume()  # renamed: drain the old file to its end (our fd)
            await self._close("incomplete last line of a rotated file")
            if st is not None:
                self._open(self.path)
        elif st.st_size < self.reader.offset or not self._same_head():
            # copytruncate: the lines logged between our last read and the copy are in
            # the copy; read them there when we can find it.
            checkpoint = Checkpoint(self.stream, self.fid, self.reader.head,
                                    self.reader.offset, self.reader.line_no, 0.0)
            await self._close("incomplete last line of a truncated file")
            rotated = find_rotated(self.path, checkpoint)
            if rotated:
                await self._drain(rotated, checkpoint.offset, checkpoint.line_no)
            self._open(self.path)
        if self.reader is not None:
            await self._consume()

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.f.close()
            self.reader = None

    def _open(self, path: str, offset: int = 0, line_no: int = 0) -> None:
        if self.reader is not None:
            self.reader.f.close()
        f = open_log(path)
        self.fid = file_id(os.fstat(f.fileno()))
        self.origin = os.path.abspath(path)
        self.reader = LineReader(f, offset, line_no, read_head(f))

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

    async def _drain(self, path: str, offset: int, line_no: int) -> None:
        self._open(path, offset, line_no)
        await self._consume()
        await self._close("incomplete last line of a rotated file")

    def _same_head(self) -> bool:
        assert self.reader is not None
        n = min(self.reader.offset, HEAD_BYTES, len(self.reader.first))
        try:
            return read_head_of(self.path)[:n] == self.reader.first[:n]
        except OSError:
            return False


def find_rotated(path: str, checkpoint: Checkpoint) -> str | None:
    """The file beside `path` that holds the checkpoint's lines: the same inode (renamed
    by logrotate) or, for copytruncate, a plain copy with the same head and at least as
    long. Compressed rotations are not searched (run `callkpi ingest` on them)."""
    directory, name = os.path.split(os.path.abspath(path))
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.name.startswith(name) or entry.name == name or not entry.is_file():
            continue
        st = entry.stat()
        if file_id(st) != checkpoint.file_id and st.st_size < checkpoint.offset:
            continue
        try:
            if not is_gzip(entry.path) and head_matches(read_head_of(entry.path),
                                                        checkpoint.head):
                return entry.path
        except OSError:
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
