"""Reading a queue_log incrementally: complete lines only, byte offsets, file identity.

A file is known by its identity (``dev:ino``) and its head (a digest of its first bytes, so a
new file that reuses an inode is not taken for the old one). Offsets are byte offsets after
the last complete line; a last line without its newline is never consumed: Asterisk may be
half-way through writing it, so it stays for the next read (or the next run).

Rotated ``.gz`` files are read through gzip; their offsets are offsets in the uncompressed
text. Bytes that are no line (an over-long line, a hole of NUL bytes) are handed out as junk
in their place (`LineReader`), never held in memory whole.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate
from typing import BinaryIO, Iterator, NamedTuple

HEAD_BYTES = 1024
READ_SIZE = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
# Asterisk formats a queue_log line into an 8 KiB buffer (main/logger.c, ast_queue_log()'s
# qlog_msg[8192]): a longer line is no line it wrote, and reading one to its end would take
# as much memory as the file has bytes before its next newline.
MAX_LINE = 16 * 1024  # bytes before the newline
KEEP = 1024  # bytes of an over-long line kept in quarantine
BACK_READ = 64 * 1024  # reading back from a checkpoint: about a second of a busy log
NEWLINE = 10
_ZEROS = memoryview(bytes(READ_SIZE))


class Junk(NamedTuple):
    """Bytes of the file that are no line: kept in quarantine with where they were and why."""

    position: int  # byte offset
    line_no: int  # the line it is (or was cut from); 0 for a run of NUL bytes
    reason: str
    raw: bytes  # what is kept of it (at most KEEP bytes of an over-long line)


@dataclass
class LineBatch:
    """Complete lines read from one file, in order, kept as the bytes read: a batch handed to
    another process travels as one bytes object and is decoded where it is parsed. A batch
    of junk (a hole, an over-long or cut line) has no data, only its `junk`."""

    data: bytes  # the lines, each ending with a newline
    start: int  # byte offset of the first line
    first_line_no: int  # 1-based line number of the first line
    count: int  # how many lines
    junk: tuple[Junk, ...] = ()

    @cached_property
    def lines(self) -> list[str]:
        """The lines, decoded, without their line ends (CRLF too: a log copied from another
        system would leave a \\r in the last field, a phantom queue or pause reason)."""
        data = self.data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        text = data.decode("utf-8", "backslashreplace").split("\n")
        text.pop()  # data ends with a newline: the last piece is empty
        return text

    def offsets(self) -> list[int]:
        """Byte offset of each line (only needed when a line is quarantined)."""
        raw = self.data.split(b"\n")
        raw.pop()
        return list(accumulate((len(b) + 1 for b in raw), initial=self.start))


def file_id(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


def head_digest(first: bytes, upto: int) -> str:
    """`n:sha1` of the first n bytes, n = min(HEAD_BYTES, upto, what exists): the length is
    part of the value so a head taken while the file was short can be checked later."""
    n = min(HEAD_BYTES, upto, len(first))
    return f"{n}:{hashlib.sha1(first[:n]).hexdigest()}"


def head_matches(first: bytes, head: str) -> bool:
    n_text, _, digest = head.partition(":")
    try:
        n = int(n_text)
    except ValueError:
        return False
    return len(first) >= n and hashlib.sha1(first[:n]).hexdigest() == digest


class NotALog(Exception):
    """The path names something that is not read as a log: a symbolic link swapped in after
    the path was resolved, a FIFO, a device, a directory. The message says which."""


# O_NOFOLLOW: a link swapped in for the file after its path was resolved is refused, not
# followed (to /etc/shadow, say); O_NONBLOCK: opening a FIFO returns at once instead of
# waiting for a writer (beyond SIGTERM); O_NOCTTY: a terminal device never becomes ours.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def open_log(path: str, dir_fd: int | None = None) -> BinaryIO:
    """A regular file as bytes, never through a symbolic link, never blocking; gzip-compressed
    rotations are decompressed on the fly. `path` is relative to `dir_fd` when given."""
    try:
        fd = os.open(path, OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotALog("a symbolic link, not followed") from None
        raise
    f = os.fdopen(fd, "rb", buffering=0)
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind:
            raise NotALog(f"{kind}, not a regular file: not read")
        if f.read(2) == GZIP_MAGIC:
            f.seek(0)
            return _GzipFile(f)  # type: ignore[return-value]
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return f


class _GzipFile(gzip.GzipFile):
    """A GzipFile that closes the file it reads (GzipFile leaves a given fileobj open)."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self.owned = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.owned.close()


def _kind(mode: int) -> str:
    """What a non-regular file is, in words; "" for a regular file."""
    if stat.S_ISREG(mode):
        return ""
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link")]
    return next((name for test, name in kinds if test(mode)), "a special file")


def read_head(f: BinaryIO) -> bytes:
    f.seek(0)
    return f.read(HEAD_BYTES)


@dataclass
class LineReader:
    """Reads complete lines from `f` starting at `offset` (a line boundary).

    What is no line becomes junk, with its place and reason, and reading goes on after it:
    a line longer than MAX_LINE (only its first KEEP bytes are kept, the rest is skipped as
    it is read, so memory stays flat on a file that is one 2 GB line), and a run of NUL
    bytes (a crash can leave a hole of them; a text line never has one), which also cuts
    short a line it interrupts. Asterisk appends after a hole, so the line after it is read
    as the line it is."""

    f: BinaryIO
    offset: int = 0  # after the last complete line (or junk) handed out
    line_no: int = 0  # complete lines handed out so far in this file
    first: bytes = b""  # the file's first bytes (up to HEAD_BYTES), for its head digest
    pending: bytes = field(default=b"", repr=False)  # read past `offset`, no newline yet
    eof: bool = False
    cut_short: bool = False  # a gzip stream ended before its end marker
    skipping: bool = False  # inside an over-long line, its head already quarantined
    hole: int = 0  # NUL bytes read at `offset` so far
    over: int = 0  # bytes of the over-long line read so far, beyond what is being scanned
    position: int = field(default=0, repr=False)  # where reading has got to

    def __post_init__(self) -> None:
        self.f.seek(self.offset)
        self.position = self.offset

    @property
    def head(self) -> str:
        return head_digest(self.first, self.offset)

    def batches(self, batch_lines: int) -> Iterator[LineBatch]:
        """Every complete line up to the current end of the file, `batch_lines` at a time,
        and every piece of junk in its place."""
        self.eof = False
        while not self.eof:
            new = self._read()
            if not (self.skipping or self.hole) and b"\0" not in new:
                block = self.pending + new
                cut = block.rfind(b"\n") + 1
                if len(block) - cut <= MAX_LINE and _short_lines(block, cut):  # the usual
                    self.pending = block[cut:]
                    if cut:
                        yield from self._split(block[:cut], batch_lines)
                    continue
            yield from self._scan(new, batch_lines)

    def _read(self) -> bytes:
        """About READ_SIZE more bytes of the file (fewer at its end)."""
        # read1: a gzip stream cut short yields what it has before its EOFError
        read = getattr(self.f, "read1", self.f.read)
        chunks, size = [], 0
        while size < READ_SIZE:
            try:
                chunk = read(READ_SIZE - size)
            except EOFError:  # the lines before it are still good
                self.cut_short = True
                chunk = b""
            if not chunk:
                self.eof = True
                break
            if len(self.first) < HEAD_BYTES and len(self.first) == self.position:
                self.first += chunk[: HEAD_BYTES - len(self.first)]  # the file's start
            self.position += len(chunk)
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def _scan(self, new: bytes, batch_lines: int) -> Iterator[LineBatch]:
        """The slow path, for a read with junk in it: line by line, in file order."""
        data, self.pending = self.pending + new, b""
        pos, lines_from = 0, 0  # good lines not yet handed out: data[lines_from:pos]
        while pos < len(data):
            end = _line_end(data, pos)
            if self.skipping:  # the rest of an over-long line: skipped, not kept
                if end < 0:
                    self.over += len(data) - pos
                    pos = lines_from = len(data)
                    break
                size = self.over + end - pos + (data[end] == NEWLINE)
                self.skipping, self.over = False, 0
                yield self._consume(size, 1)
                pos = lines_from = end + (data[end] == NEWLINE)
            elif self.hole or data[pos] == 0:
                yield from self._split(data[lines_from:pos], batch_lines)
                end = _end_of_nuls(data, pos)
                self.hole += end - pos
                pos = lines_from = end
                if end < len(data):  # the hole ends here
                    yield self._junk_hole()
            elif end < 0 and len(data) - pos <= MAX_LINE:  # a last line, not complete yet
                break
            elif end < 0 or end - pos > MAX_LINE:
                yield from self._split(data[lines_from:pos], batch_lines)
                lines_from = pos
                self.skipping = True  # after its head, the same bytes again as the rest
                yield self._consume(0, 0, Junk(
                    self.offset, self.line_no + 1,
                    f"line longer than {MAX_LINE} bytes: its first {KEEP} kept, the rest skipped",
                    data[pos:pos + KEEP]))
            elif data[end] == 0:
                yield from self._split(data[lines_from:pos], batch_lines)
                yield self._consume(end - pos, 1, Junk(
                    self.offset, self.line_no + 1, "line cut short by NUL bytes", data[pos:end]))
                pos = lines_from = end
            else:
                pos = end + 1  # a good line
        yield from self._split(data[lines_from:pos], batch_lines)
        self.pending = data[pos:] if not (self.skipping or self.hole) else b""
        if self.hole and self.eof:
            yield self._junk_hole()

    def _junk_hole(self) -> LineBatch:
        size, self.hole = self.hole, 0
        return self._consume(size, 0, Junk(
            self.offset, 0, f"{size} NUL bytes skipped (a hole in the file, as a crash leaves)",
            b""))

    def _consume(self, size: int, lines: int, junk: Junk | None = None) -> LineBatch:
        """A batch of no data for `size` bytes that are `lines` lines, none to parse."""
        batch = LineBatch(b"", self.offset, self.line_no + 1, lines, (junk,) if junk else ())
        self.offset += size
        self.line_no += lines
        return batch

    def _split(self, block: bytes, batch_lines: int) -> Iterator[LineBatch]:
        if not block:
            return
        count = block.count(b"\n")
        if count <= batch_lines:  # the usual case: a block is about 16,000 lines
            yield self._batch(block, count)
            return
        pos = 0
        while pos < len(block):
            end = pos
            for _ in range(batch_lines):
                end = block.find(b"\n", end) + 1
                if not end:
                    end = len(block)
                    break
            part = block[pos:end]
            yield self._batch(part, part.count(b"\n"))
            pos = end

    def _batch(self, data: bytes, count: int) -> LineBatch:
        batch = LineBatch(data, self.offset, self.line_no + 1, count)
        self.offset += len(data)
        self.line_no += count
        return batch

    def take_pending(self) -> bytes:
        """The incomplete last line, handed over when the file will never be completed
        (rotated away or truncated); the caller quarantines it."""
        rest, self.pending = self.pending, b""
        return rest


def _line_end(data: bytes, pos: int) -> int:
    """Where the line at `pos` ends: its newline, or a NUL that cuts it; -1 if neither."""
    newline, nul = data.find(b"\n", pos), data.find(b"\0", pos)
    return newline if nul < 0 or 0 <= newline < nul else nul


def _end_of_nuls(data: bytes, pos: int) -> int:
    """Where the run of NUL bytes at `pos` ends (len(data) if it goes on to the end)."""
    # bytes.lstrip(b"\0") looks at a byte at a time (~6 ms a MB, 12 s on a 2 GB hole); a
    # prefix compared with zeros is a memcmp, and the longest all-zero prefix is found by
    # halving, as "the first n bytes are NUL" holds for every n up to the answer.
    while pos < len(data):
        lo, hi = 0, min(len(data) - pos, len(_ZEROS))
        if not data.startswith(_ZEROS[:hi], pos):
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if data.startswith(_ZEROS[:mid], pos) else (lo, mid)
            return pos + lo
        pos += hi
    return pos


def _short_lines(block: bytes, end: int) -> bool:
    """No line of block[:end] is longer than MAX_LINE, checked cheaply: each window of half
    that size holds a newline (a longer line would cover a whole window). A False may still
    be short lines; the slow path then looks line by line."""
    step = MAX_LINE // 2
    return all(block.find(b"\n", i, i + step) >= 0 for i in range(0, end - step, step))


def lines_before(f: BinaryIO, offset: int) -> Iterator[str]:
    """The lines that end at or before `offset` (a line boundary), the last first, as
    LineReader hands them out: decoded, without their line end, and only what can be a line
    (the text after a run of NUL bytes; nothing of an over-long line or an empty one). Read
    back BACK_READ bytes at a time; memory stays flat whatever the lines are."""
    end, carry, skip = offset, b"", False  # carry: the end of the line being put together
    while end > 0:
        start = max(0, end - BACK_READ)
        f.seek(start)
        data = f.read(end - start)
        if end == offset:  # not after a newline: a line a NUL cut short ends here, no line
            skip = not data.endswith(b"\n")
        parts = data.split(b"\n")
        end = start
        if len(parts) > 1:
            if not skip and (line := _as_line(parts[-1] + carry)) is not None:
                yield line
            for part in reversed(parts[1:-1]):
                if (line := _as_line(part)) is not None:
                    yield line
            carry, skip = b"", False
        if skip:
            continue
        carry = parts[0] + carry
        if b"\0" in carry or len(carry) > MAX_LINE:  # what is left of it is decided already
            if (line := _as_line(carry.rpartition(b"\0")[2])) is not None:
                yield line
            carry, skip = b"", True
    if not skip and (line := _as_line(carry)) is not None:
        yield line


def _as_line(raw: bytes) -> str | None:
    """What the reader makes of one line (its newline cut off): the text after its last NUL,
    decoded without a CRLF's \\r; None where that is nothing (empty, over-long)."""
    text = raw.rpartition(b"\0")[2]
    if len(text) > MAX_LINE:
        return None
    text = text.removesuffix(b"\r")
    return text.decode("utf-8", "backslashreplace") if text else None


def read_head_of(path: str, dir_fd: int | None = None) -> bytes:
    """The first bytes of a file, without disturbing any reader of it."""
    with open_log(path, dir_fd) as f:
        return f.read(HEAD_BYTES)


def is_gzip(f: BinaryIO) -> bool:
    return isinstance(f, gzip.GzipFile)


def disk_position(f: BinaryIO) -> int:
    """How far into the file on disk reading has got (for a gzip file: the compressed one)."""
    raw = getattr(f, "fileobj", None)
    return (raw or f).tell()
