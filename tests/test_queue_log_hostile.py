"""Hostile and broken queue_log input, on `ingest` and on `tail`: every bad piece is one
located quarantine row (or one clear error) with its reason, and the good lines around it
are stored exactly once, whether the file is read once, twice, or again from the start."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from callkpi.events import KEY_COLUMNS
from callkpi.store import open_store
from queue_log_parser.ingest import Follower, IngestStats, LogSink, ingest_paths
from queue_log_parser.parser import LineParser

SAMPLE = Path(__file__).parent.parent / "examples" / "queue_log.sample"
GOOD = SAMPLE.read_bytes().splitlines(keepends=True)[:20]  # IVR exits, calls, ACW pauses


@dataclass
class Hostile:
    """A file of good lines with bad pieces among them, and what must come of it."""

    pieces: list[bytes]  # the file, piece by piece
    good: list[bytes]  # the lines that must be stored, once each (as Asterisk wrote them)
    quarantined: list[tuple[int, int, str]] = field(default_factory=list)
    # (byte offset, line number, the start of the reason) of each quarantine row, in order

    @property
    def data(self) -> bytes:
        return b"".join(self.pieces)

    def offset(self, piece: int) -> int:
        return sum(len(p) for p in self.pieces[:piece])


def expected_keys(lines: list[bytes]) -> list[tuple]:
    parser = LineParser("pbx")
    events = [parser.parse(line.decode().rstrip("\r\n")) for line in lines]
    return sorted(tuple(getattr(e, c) for c in KEY_COLUMNS) for e in events)


async def ingest_it(db: Path, log: Path, full: bool = False) -> IngestStats:
    store = await open_store(db)
    try:
        return await ingest_paths(store, [str(log)], server="pbx", batch_lines=4, full=full)
    finally:
        await store.close()


async def tail_it(db: Path, log: Path) -> IngestStats:
    store = await open_store(db)
    follower = Follower(LogSink(store, "pbx", IngestStats()), str(log), batch_lines=4)
    try:
        await follower.start()
        await follower.poll()
        return follower.sink.stats
    finally:
        await follower.close()
        await store.close()


async def assert_stored_once(db: Path, log: Path, case: Hostile) -> None:
    store = await open_store(db)
    try:
        keys = await store.fetch_all(f"SELECT {', '.join(KEY_COLUMNS)} FROM events")
        rows = await store.fetch_all(
            "SELECT origin, position, line_no, reason FROM quarantine ORDER BY position")
    finally:
        await store.close()
    assert sorted(keys) == expected_keys(case.good)
    assert len(rows) == len(case.quarantined), rows
    for (origin, position, line_no, reason), (at, number, why) in zip(rows, case.quarantined):
        assert (origin, position, line_no) == (str(log), at, number), reason
        assert reason.startswith(why), reason


async def check_ingest_and_tail(tmp_path: Path, case: Hostile) -> None:
    log = tmp_path / "queue_log"
    log.write_bytes(case.data)
    for name, read in (("ingest", ingest_it), ("tail", tail_it)):
        db = tmp_path / f"{name}.db"
        first = await read(db, log)
        assert first.quarantined == len(case.quarantined)
        assert first.stored == len(case.good)
        again = await read(db, log)  # resumes at the checkpoint: nothing more
        assert (again.stored, again.quarantined) == (0, 0)
        await assert_stored_once(db, log, case)
    full = await ingest_it(tmp_path / "ingest.db", log, full=True)  # all of it again
    assert (full.stored, full.quarantined) == (0, 0)
    await assert_stored_once(tmp_path / "ingest.db", log, case)


# ---------------------------------------------------------------- numbers
OVERFLOWING = [
    b"1795502600|1795502600.1|support|NONE|ABANDON|99999999999999999999|1|4\n",
    b"1795502600|1795502600.2|support|NONE|ENTERQUEUE||5551234|44444444444444444444\n",
    b"1795502600|1795502600.3|support|NONE|EXITWITHKEY|1|1|-5|4\n",
    b"\xd9\xa1\xd9\xa7|1795502600.4|support|NONE|ABANDON|1|1|4\n",  # Arabic-Indic digits
    b"1795502600|1795502600.5|support|NONE|ABANDON|\xd9\xa3|1|4\n",
]


# a caller name of digits no position can hold is a caller name (22.4+ layout)
NUMERIC_NAME = b"1795502600|1795502600.6|support|NONE|ENTERQUEUE||55|12|3|44444444444444444444\n"


async def test_numbers_out_of_range_or_not_ascii_are_quarantined_not_a_crash(tmp_path):
    pieces = [*GOOD[:3], *OVERFLOWING, NUMERIC_NAME, *GOOD[3:]]
    case = Hostile(pieces, [*GOOD, NUMERIC_NAME], [])
    reasons = ["position '99999999999999999999' is out of range",
               "position '44444444444444444444' is out of range",
               "original position '-5' is out of range",
               "timestamp '\u0661\u0667' is not a number",
               "position '\u0663' is not a whole number"]
    case.quarantined = [(case.offset(3 + i), 4 + i, why) for i, why in enumerate(reasons)]
    await check_ingest_and_tail(tmp_path, case)


@pytest.mark.parametrize("line", OVERFLOWING)
def test_no_parsed_line_holds_a_number_sqlite_cannot(line):
    from queue_log_parser.parser import BadLine
    with pytest.raises(BadLine):
        LineParser("pbx").parse(line.decode().rstrip("\n"))


# ---------------------------------------------------------------- CRLF
async def test_crlf_line_ends_leave_no_carriage_return_in_any_field(tmp_path):
    crlf = [line.replace(b"\n", b"\r\n") for line in GOOD]
    mixed = [*crlf[:6], *GOOD[6:], b"\r\n"]  # a log appended to from two systems
    await check_ingest_and_tail(tmp_path, Hostile(mixed, GOOD))
    store = await open_store(tmp_path / "tail.db")
    try:
        rows = await store.fetch_all("SELECT kind, queue, reason, discr, value FROM events")
    finally:
        await store.close()
    assert not any("\r" in str(value) for row in rows for value in row)
    assert ("ivr-exit", "support", "", "main", "to-queue") in rows  # no queue "support\r"
    assert ("pause", "support", "ACW", "ACW", "") in rows  # the ACW pause is still ACW
