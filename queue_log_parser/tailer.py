"""Reading a queue_log incrementally: complete lines only, byte offsets, file identity.

A file is known by its identity (``dev:ino``) and its head (a digest of its first bytes, so a
new file that reuses an inode is not taken for the old one). Offsets are byte offsets after
the last complete line; a last line without its newline is never consumed: Asterisk may be
half-way through writing it, so it stays for the next read (or the next run).

Rotated ``.gz`` files are read through gzip; their offsets are offsets in the uncompressed
text.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate
from typing import BinaryIO, Iterator

HEAD_BYTES = 1024
READ_SIZE = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class LineBatch:
    """Complete lines read from one file, in order, kept as the bytes read: a batch handed to
    another process travels as one bytes object and is decoded where it is parsed."""

    data: bytes  # the lines, each ending with a newline
    start: int  # byte offset of the first line
    first_line_no: int  # 1-based line number of the first line
    count: int  # how many lines

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


def is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def open_log(path: str) -> BinaryIO:
    """The file as bytes: gzip-compressed rotations are decompressed on the fly."""
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb", buffering=0)


def read_head(f: BinaryIO) -> bytes:
    f.seek(0)
    return f.read(HEAD_BYTES)


@dataclass
class LineReader:
    """Reads complete lines from `f` starting at `offset` (a line boundary)."""

    f: BinaryIO
    offset: int = 0  # after the last complete line handed out
    line_no: int = 0  # complete lines handed out so far in this file
    first: bytes = b""  # the file's first bytes (up to HEAD_BYTES), for its head digest
    pending: bytes = field(default=b"", repr=False)  # read past `offset`, no newline yet
    eof: bool = False
    cut_short: bool = False  # a gzip stream ended before its end marker

    def __post_init__(self) -> None:
        self.f.seek(self.offset)

    @property
    def head(self) -> str:
        return head_digest(self.first, self.offset)

    def batches(self, batch_lines: int) -> Iterator[LineBatch]:
        """Every complete line up to the current end of the file, `batch_lines` at a time."""
        self.eof = False
        while not self.eof:
            block = self._read_block()
            if block:
                yield from self._split(block, batch_lines)

    def _read_block(self) -> bytes:
        """About READ_SIZE bytes of complete lines (ending with a newline), or b"" at the
        end of the file."""
        # read1: a gzip stream cut short yields what it has before its EOFError
        read = getattr(self.f, "read1", self.f.read)
        chunks, size = [self.pending], len(self.pending)
        newline = b"\n" in self.pending
        while size < READ_SIZE or not newline:  # a line longer than READ_SIZE: read on
            try:
                chunk = read(max(READ_SIZE - size, HEAD_BYTES))
            except EOFError:  # the lines before it are still good
                self.cut_short = True
                chunk = b""
            if not chunk:
                self.eof = True
                break
            if len(self.first) < HEAD_BYTES and len(self.first) == self.offset + size:
                self.first += chunk[: HEAD_BYTES - len(self.first)]  # the file's start
            chunks.append(chunk)
            size += len(chunk)
            newline = newline or b"\n" in chunk
        data = b"".join(chunks)
        cut = data.rfind(b"\n") + 1
        self.pending = data[cut:]
        return data[:cut]

    def _split(self, block: bytes, batch_lines: int) -> Iterator[LineBatch]:
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


def read_head_of(path: str) -> bytes:
    """The first bytes of a file, without disturbing any reader of it."""
    with open_log(path) as f:
        return f.read(HEAD_BYTES)


def disk_position(f: BinaryIO) -> int:
    """How far into the file on disk reading has got (for a gzip file: the compressed one)."""
    raw = getattr(f, "fileobj", None)
    return (raw or f).tell()
