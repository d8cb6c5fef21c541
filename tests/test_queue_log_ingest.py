"""`callkpi ingest`: backfill into the real store, resume, partial lines, .gz, quarantine,
kill -9 mid-ingest, and the queue_log/AMI twins."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ami_listener.manager import AmiParser
from ami_listener.mapping import AmiMapper
from callkpi.cli import cli
from callkpi.events import KEY_COLUMNS, Kind
from callkpi.store import Batch
from callkpi.store import open_store
from log_fixture import durable_checkpoint, generate_log, snapshot
from queue_log_parser.ingest import BULK_FROM_BYTES, checkpoint_stream, ingest_paths
from store_helpers import fetch_now

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
SAMPLE = EXAMPLES / "queue_log.sample"
CALLKPI = Path(sys.executable).parent / "callkpi"


async def ingest(store, *paths, full=False, batch_lines=20_000):
    return await ingest_paths(store, [str(p) for p in paths], server="pbx",
                              batch_lines=batch_lines, full=full)


async def rows(store, sql="SELECT * FROM events ORDER BY id"):
    return await store.fetch_all(sql)


async def test_sample_is_stored_and_a_second_run_stores_nothing(store):
    lines = SAMPLE.read_text().splitlines()
    first = await ingest(store, SAMPLE)
    assert (first.lines, first.stored, first.duplicates, first.quarantined) == (
        len(lines), len(lines), 0, 0)
    again = await ingest(store, SAMPLE)
    assert (again.lines, again.stored) == (0, 0)  # resumed at the checkpoint
    full = await ingest(store, SAMPLE, full=True)
    assert (full.lines, full.stored, full.duplicates) == (len(lines), 0, len(lines))
    assert len(await rows(store)) == len(lines)


async def test_checkpoint_is_the_end_of_the_last_complete_line(store, tmp_path):
    log = tmp_path / "queue_log"
    data = SAMPLE.read_bytes()
    log.write_bytes(data)
    await ingest(store, log, batch_lines=7)
    cp = await store.checkpoint(checkpoint_stream("pbx", str(log)))
    st_ = log.stat()
    assert (cp.offset, cp.line_no, cp.file_id) == (len(data), data.count(b"\n"),
                                                   f"{st_.st_dev}:{st_.st_ino}")


async def test_partial_last_line_is_held_back_until_completed(store, tmp_path):
    log = tmp_path / "queue_log"
    lines = SAMPLE.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:10]) + lines[10][:17])
    first = await ingest(store, log)
    assert (first.lines, first.stored, first.quarantined, first.held_back) == (10, 10, 0, 1)
    assert "held back 1 partial line" in first.summary()
    with log.open("a") as f:  # Asterisk finishes the line, and writes more
        f.write(lines[10][17:] + "".join(lines[11:20]))
    second = await ingest(store, log)
    assert (second.lines, second.stored, second.held_back) == (10, 10, 0)
    assert len(await rows(store)) == 20
    assert await store.fetch_all("SELECT count(*) FROM quarantine") == [(0,)]


async def test_gzip_rotations_and_resume_in_them(store, tmp_path):
    plain = tmp_path / "queue_log.1"
    shutil.copy(SAMPLE, plain)
    gz = tmp_path / "queue_log.2.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    result = await ingest(store, gz, plain)
    n = len(SAMPLE.read_text().splitlines())
    assert (result.lines, result.stored, result.duplicates) == (2 * n, n, n)
    cp = await store.checkpoint(checkpoint_stream("pbx", str(gz)))
    assert cp.offset == len(SAMPLE.read_bytes())
    assert (await ingest(store, gz)).lines == 0


async def test_malformed_lines_are_quarantined_where_they_are_and_never_stop_it(store, tmp_path):
    good = SAMPLE.read_bytes().splitlines(keepends=True)
    junk = [b"not a queue_log line\n", b"1|1.1|q|NONE|ENTERQUEUE||555|one\n",
            b"\xff\xfe|1.1|q|A|CONNECT|1|2|3\n"]
    log = tmp_path / "queue_log"
    log.write_bytes(b"".join(good[:3] + junk[:2] + good[3:5] + junk[2:] + good[5:]))
    result = await ingest(store, log)
    assert (result.stored, result.quarantined) == (len(good), 3)
    q = await store.fetch_all(
        "SELECT origin, position, line_no, reason, raw FROM quarantine ORDER BY id")
    offset = lambda n: sum(len(x) for x in (good[:3] + junk[:2] + good[3:5])[:n])  # noqa: E731
    assert q == [
        (str(log), offset(3), 4, "1 fields, a queue_log line has at least 5",
         "not a queue_log line"),
        (str(log), offset(4), 5, "position 'one' is not a whole number",
         "1|1.1|q|NONE|ENTERQUEUE||555|one"),
        (str(log), offset(7), 8, "timestamp '\\\\xff\\\\xfe' is not a number",
         "\\xff\\xfe|1.1|q|A|CONNECT|1|2|3"),
    ]
    again = await ingest(store, log, full=True)
    assert (again.stored, again.quarantined) == (0, 0)  # quarantine rows are not doubled


VALID = st.sampled_from(SAMPLE.read_text().splitlines())


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=VALID, junk=st.binary(max_size=300), after=VALID)
async def test_arbitrary_bytes_never_crash_nor_lose_the_lines_around_them(tmp_path_factory,
                                                                          make_store_url,
                                                                          before, junk, after):
    tmp = tmp_path_factory.mktemp("prop")
    log = tmp / "queue_log"
    log.write_bytes(before.encode() + b"\n" + junk + b"\n" + after.encode() + b"\n")
    store = await open_store(make_store_url())
    try:
        result = await ingest(store, log)
        keys = {tuple(r) for r in await store.fetch_all(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM events")}
        from queue_log_parser.parser import LineParser
        parser = LineParser("pbx")
        for valid in (before, after):
            event = parser.parse(valid)
            assert tuple(getattr(event, c) for c in KEY_COLUMNS) in keys
        # every piece of junk is an event or quarantined: nothing silently lost
        lines, pieces, always_quarantined = junk_pieces(junk)
        (quarantined,) = (await store.fetch_all("SELECT count(*) FROM quarantine"))[0]
        assert result.lines == 2 + lines
        assert quarantined == result.quarantined
        assert always_quarantined <= quarantined <= pieces
        assert result.stored + result.duplicates + quarantined == 2 + pieces
    finally:
        await store.close()


def junk_pieces(junk: bytes) -> tuple[int, int, int]:
    """What the reader makes of `junk` followed by a newline: (lines read, pieces that are an
    event or a quarantine row, pieces that are always quarantined). A run of NUL bytes is a
    piece of its own, and cuts short the line it interrupts."""
    lines = pieces = always = 0
    for line in junk.split(b"\n"):
        holes = re.findall(rb"\0+", line)
        *cut, last = re.split(rb"\0+", line)
        cut = [c for c in cut if c]
        last = last.removesuffix(b"\r")  # a CRLF line end is a line end
        lines += len(cut) + 1
        pieces += len(holes) + len(cut) + bool(last)
        always += len(holes) + len(cut)
    return lines, pieces, always


def test_cli_summary_missing_file_and_db_option(tmp_path, make_store_url):
    runner = CliRunner()
    db = make_store_url(empty=True)
    out = runner.invoke(cli, ["ingest", "--db", db, str(SAMPLE)])
    assert out.exit_code == 0, out.output
    n = len(SAMPLE.read_text().splitlines())
    assert out.output == (f"lines read {n}, events stored {n}, duplicates skipped 0, "
                          "quarantined 0\n")
    missing = runner.invoke(cli, ["ingest", "--db", db, str(tmp_path / "nope")])
    assert missing.exit_code == 1
    assert missing.output == f"Error: {tmp_path / 'nope'}: no such file\n"


# ---------------------------------------------------------------- kill -9 mid-ingest
def durable_offset(url: str) -> int:
    return durable_checkpoint(url, "offset")


def partner_processes(url: str) -> list[int]:
    """The SQLite bulk writer's partner processes writing to `url`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"callkpi.store_sqlite_bulk" in args and url.removeprefix("sqlite://").encode() in args:
            found.append(int(cmdline.parent.name))
    return found


def run_ingest(url: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "CALLKPI_CONFIG": os.devnull, "CALLKPI_SERVER_NAME": "pbx",
           "CALLKPI_QUEUE_LOG_BATCH_LINES": "5000"}
    return subprocess.Popen([str(CALLKPI), "ingest", "--db", url, str(log)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_kill_9_mid_ingest_then_rerun_gives_the_same_store(tmp_path, make_store_url,
                                                                backend):
    """Killed at three points of its way (the first time with its bulk writer's partner
    process, on SQLite), the ingest's reruns leave what one uninterrupted run leaves."""
    log = tmp_path / "queue_log"
    generate_log(log, 150_000, seed=3)
    assert log.stat().st_size >= BULK_FROM_BYTES  # the bulk writer is killed too
    with log.open("ab") as f:
        f.write(b"junk line\n1|1.1|q|NONE|ABANDON|x|1|2\n")  # quarantine rows too
    clean, killed = make_store_url(), make_store_url()
    assert run_ingest(clean, log).wait(120) == 0
    size = log.stat().st_size
    for eighths in (1, 3, 5):
        partner = backend == "sqlite" and size - durable_offset(killed) >= BULK_FROM_BYTES
        proc = run_ingest(killed, log)
        deadline = time.monotonic() + 60
        # kill it once that much is durable, before the end
        while not (durable_offset(killed) > size * eighths // 8
                   and (not partner or partner_processes(killed))):
            assert proc.poll() is None, "the ingest ended before it was killed"
            assert time.monotonic() < deadline, "the ingest never got going"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while partner_processes(killed) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not partner_processes(killed)  # it died with its parent: no write after this
    partial = await snapshot(killed)
    assert partial[2] and partial[2][0][3] < log.stat().st_size  # it was killed mid-way
    assert run_ingest(killed, log).wait(120) == 0
    assert await snapshot(killed) == await snapshot(clean)


# ---------------------------------------------------------------- the AMI twins
async def test_queue_log_replaces_the_ami_listeners_copies(store):
    messages, junk = AmiParser().feed((EXAMPLES / "ami-capture.txt").read_bytes())
    assert junk == []
    mapper = AmiMapper("pbx")
    ami_events, links = [], []
    for message in messages:
        if "Event" in message:
            out = mapper.map(message, 0.0)
            ami_events += out.events
            links += out.links
    await store.write(Batch(events=ami_events, links=links))
    result = await ingest(store, SAMPLE)
    n = len(SAMPLE.read_text().splitlines())
    assert result.lines == n
    events = await store.fetch_all(f"SELECT {', '.join(KEY_COLUMNS)}, source FROM events")
    queue_log = [e for e in events if e[-1] == "queue_log"]
    assert len(queue_log) == n
    # no AMI copy of a queue_log event is left (same key, stamped up to a second apart)
    qkeys = {(e[:5], e[6]): e[5] for e in queue_log}
    left = [e for e in events if e[-1] == "ami" and (e[:5], e[6]) in qkeys
            and abs(qkeys[(e[:5], e[6])] - e[5]) <= 1]
    assert left == []
    # what stays from AMI is what queue_log never has
    assert {e[2] for e in events if e[-1] == "ami"} <= {Kind.HOLD, Kind.UNHOLD, Kind.UNPAUSE}
    twinned = {Kind.ENTER_QUEUE, Kind.CONNECT, Kind.COMPLETE, Kind.IVR_EXIT,
               Kind.DISPOSITION, Kind.EXIT_EMPTY, Kind.ABANDON}
    assert twinned <= {e[2] for e in queue_log}


def test_a_gz_cut_short_is_one_line_and_keeps_what_was_read(tmp_path, store_url):
    data = gzip.compress(SAMPLE.read_bytes() * 200)
    cut = tmp_path / "queue_log.1.gz"
    cut.write_bytes(data[: len(data) // 2])
    out = CliRunner().invoke(cli, ["ingest", "--db", store_url, str(cut)])
    assert (out.exit_code, out.output) == (1, f"Error: {cut}: compressed file ends early\n")
    ((stored,),) = fetch_now(store_url, "SELECT count(*) FROM events")
    assert stored == len(SAMPLE.read_text().splitlines())  # the first copy got through


async def test_a_line_longer_than_a_read_is_one_line(store, tmp_path, monkeypatch):
    from queue_log_parser import tailer
    monkeypatch.setattr(tailer, "READ_SIZE", 64)
    long_custom = "1795502628|1.1|q|NONE|NOTE|" + "x" * 500
    log = tmp_path / "queue_log"
    log.write_text(SAMPLE.read_text() + long_custom + "\n" + long_custom[:300])
    result = await ingest(store, log, batch_lines=3)
    n = len(SAMPLE.read_text().splitlines())
    assert (result.lines, result.stored, result.held_back) == (n + 1, n + 1, 1)
    (value,) = (await store.fetch_all("SELECT extra FROM events WHERE value = 'NOTE'"))[0]
    assert len(value) > 500
    cp = await store.checkpoint(checkpoint_stream("pbx", str(log)))
    assert cp.offset == len(SAMPLE.read_bytes()) + len(long_custom) + 1


async def test_two_pbxs_reading_the_same_path_keep_their_own_checkpoints(store, tmp_path):
    """Two PBXs writing to one store both log to the same path: each resumes in its own
    file, never at the other's offset."""
    log = tmp_path / "queue_log"
    lines = SAMPLE.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:5]))
    await ingest_paths(store, [str(log)], server="pbx-a", batch_lines=100)
    log.write_text("".join(lines))  # the other PBX's file at the same path, longer
    second = await ingest_paths(store, [str(log)], server="pbx-b", batch_lines=100)
    assert (second.lines, second.stored) == (len(lines), len(lines))
    a = await store.checkpoint(checkpoint_stream("pbx-a", str(log)))
    b = await store.checkpoint(checkpoint_stream("pbx-b", str(log)))
    assert (a.line_no, b.line_no) == (5, len(lines))
    servers = await rows(store, "SELECT server, COUNT(*) FROM events GROUP BY server ORDER BY 1")
    assert servers == [("pbx-a", 5), ("pbx-b", len(lines))]


async def test_a_checkpoint_named_by_the_bare_path_is_adopted_by_the_first_pbx(store, tmp_path):
    """A store from before checkpoints were named per PBX: the PBX that reads that path next
    resumes at it, and the checkpoint is its own from then on (another PBX starts afresh)."""
    log = tmp_path / "queue_log"
    lines = SAMPLE.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:5]))
    await ingest_paths(store, [str(log)], server="pbx-a", batch_lines=100)
    await store.execute("UPDATE checkpoints SET stream = ?", (str(log),))  # the old name
    with log.open("a") as f:
        f.write("".join(lines[5:]))
    resumed = await ingest_paths(store, [str(log)], server="pbx-a", batch_lines=100)
    assert (resumed.lines, resumed.duplicates) == (len(lines) - 5, 0)
    streams = await rows(store, "SELECT stream FROM checkpoints")
    assert streams == [(checkpoint_stream("pbx-a", str(log)),)]
    other = await ingest_paths(store, [str(log)], server="pbx-b", batch_lines=100)
    assert other.lines == len(lines)
