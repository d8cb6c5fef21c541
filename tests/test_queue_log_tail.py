"""`callkpi tail`: following a queue_log through appends, partial lines, logrotate by rename
and by copytruncate, and restarts; SIGTERM stores what was read and exits 0."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from callkpi.events import KEY_COLUMNS
from log_fixture import durable_checkpoint
from queue_log_parser.ingest import Follower, IngestStats, LogSink, checkpoint_stream

SAMPLE = Path(__file__).parent.parent / "examples" / "queue_log.sample"
LINES = SAMPLE.read_text().splitlines(keepends=True)
CALLKPI = Path(sys.executable).parent / "callkpi"


def follower(store, path: Path) -> Follower:
    return Follower(LogSink(store, "pbx", IngestStats()), str(path), batch_lines=5)


def append(path: Path, lines) -> None:
    with path.open("a") as f:
        f.write("".join(lines))


async def stored(store) -> list[tuple]:
    return await store.fetch_all(f"SELECT {', '.join(KEY_COLUMNS)} FROM events ORDER BY id")


async def assert_each_line_once(store, lines) -> None:
    from queue_log_parser.parser import LineParser
    parser = LineParser("pbx")
    expected = [tuple(getattr(parser.parse(x.rstrip("\n")), c) for c in KEY_COLUMNS)
                for x in lines]
    assert sorted(await stored(store)) == sorted(expected)
    assert await store.fetch_all("SELECT count(*) FROM quarantine") == [(0,)]


async def test_follows_appends_and_completes_a_partial_line_later(store, tmp_path):
    log = tmp_path / "queue_log"
    log.write_text("")
    f = follower(store, log)
    await f.start()
    append(log, LINES[:3] + [LINES[3][:10]])
    await f.poll()
    assert len(await stored(store)) == 3
    append(log, [LINES[3][10:]] + LINES[4:6])
    await f.poll()
    await f.close()
    await assert_each_line_once(store, LINES[:6])
    cp = await store.checkpoint(checkpoint_stream("pbx", str(log)))
    assert (cp.offset, cp.line_no) == (len("".join(LINES[:6]).encode()), 6)


async def test_logrotate_by_rename(store, tmp_path):
    log, old = tmp_path / "queue_log", tmp_path / "queue_log.1"
    log.write_text("".join(LINES[:10]))
    f = follower(store, log)
    await f.start()
    await f.poll()
    os.rename(log, old)
    append(old, LINES[10:15])  # Asterisk writes to its open file until `logger rotate`
    log.write_text("".join(LINES[15:20]))
    await f.poll()
    append(log, LINES[20:25])
    await f.poll()
    await f.close()
    await assert_each_line_once(store, LINES[:25])
    cp = await store.checkpoint(checkpoint_stream("pbx", str(log)))
    st = log.stat()
    assert (cp.file_id, cp.offset) == (f"{st.st_dev}:{st.st_ino}", log.stat().st_size)


async def test_logrotate_by_copytruncate_reads_the_lines_only_the_copy_has(store, tmp_path):
    log = tmp_path / "queue_log"
    log.write_text("".join(LINES[:30]))
    f = follower(store, log)
    await f.start()
    await f.poll()
    append(log, LINES[30:34])  # written after our last read, before logrotate's copy
    shutil.copy(log, tmp_path / "queue_log.1")
    with log.open("r+") as fh:
        fh.truncate(0)
    append(log, LINES[34:36])  # a new, shorter file at the same inode
    await f.poll()
    append(log, LINES[36:40])
    await f.poll()
    await f.close()
    await assert_each_line_once(store, LINES[:40])


async def test_truncated_and_regrown_past_the_offset_is_told_apart_by_its_head(store, tmp_path):
    log = tmp_path / "queue_log"
    log.write_text("".join(LINES[:3]))
    f = follower(store, log)
    await f.start()
    await f.poll()
    with log.open("r+") as fh:
        fh.truncate(0)
    append(log, LINES[40:50])  # longer than before: only the head shows it is new
    await f.poll()
    await f.close()
    await assert_each_line_once(store, LINES[:3] + LINES[40:50])


async def test_restart_resumes_and_finds_the_file_rotated_while_down(store, tmp_path):
    log = tmp_path / "queue_log"
    log.write_text("".join(LINES[:10]))
    first = follower(store, log)
    await first.start()
    await first.poll()
    await first.close()
    append(log, LINES[10:20])  # written while we were down ...
    os.rename(log, tmp_path / "queue_log.1")  # ... then rotated
    log.write_text("".join(LINES[20:25]))
    second = follower(store, log)
    await second.start()
    await second.poll()
    await second.close()
    await assert_each_line_once(store, LINES[:25])
    # and a plain restart resumes at the checkpoint: nothing read twice
    third = follower(store, log)
    await third.start()
    await third.poll()
    await third.close()
    assert third.sink.stats.lines == 0


async def test_an_unfinished_line_of_a_rotated_file_is_quarantined_not_lost(store, tmp_path):
    log = tmp_path / "queue_log"
    log.write_text("".join(LINES[:2]) + LINES[2][:12])
    f = follower(store, log)
    await f.start()
    await f.poll()
    os.rename(log, tmp_path / "queue_log.1")
    log.write_text("".join(LINES[3:5]))
    await f.poll()
    await f.close()
    assert await store.fetch_all("SELECT line_no, reason, raw FROM quarantine") == [
        (3, "incomplete last line of a rotated file", LINES[2][:12])]
    assert len(await stored(store)) == 4


def stored_lines(url: str, want: int, timeout: float = 30) -> int:
    """Wait until another process's tail has durably stored `want` lines."""
    deadline, line_no = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        line_no = durable_checkpoint(url, "line_no")
        if line_no >= want:
            break
        time.sleep(0.02)
    return line_no


def test_cli_tail_stores_as_it_goes_and_exits_0_on_sigterm(tmp_path, store_url):
    log, db = tmp_path / "queue_log", store_url
    log.write_text("".join(LINES[:5]))
    env = {**os.environ, "CALLKPI_CONFIG": os.devnull, "CALLKPI_QUEUE_LOG_POLL_S": "0.05",
           "CALLKPI_SERVER_NAME": "pbx"}
    proc = subprocess.Popen([str(CALLKPI), "tail", "--db", db, str(log)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert stored_lines(db, 5) == 5
        append(log, LINES[5:8])
        assert stored_lines(db, 8) == 8
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == "lines=8 stored=8 duplicates=0 quarantined=0 held_back=0\n"
    assert err == "INFO callkpi: tail: SIGTERM received, stopping\n"


def test_cli_tail_defaults_to_the_configured_path_and_rejects_a_missing_directory(tmp_path,
                                                                                   store_url):
    log, db = tmp_path / "queue_log", store_url
    env = {**os.environ, "CALLKPI_CONFIG": os.devnull, "CALLKPI_QUEUE_LOG_POLL_S": "0.05",
           "CALLKPI_QUEUE_LOG_PATH": str(log)}
    proc = subprocess.Popen([str(CALLKPI), "tail", "--db", str(db)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline() == f"waiting for {log} to appear\n"
        log.write_text("".join(LINES[:4]))  # Asterisk starts logging
        assert stored_lines(db, 4) == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (0, "INFO callkpi: tail: SIGTERM received, stopping\n")
    assert out.startswith("lines=4 stored=4 ")
    bad = subprocess.run([str(CALLKPI), "tail", "--db", str(db), str(tmp_path / "no" / "log")],
                         env=env, capture_output=True, text=True)
    assert (bad.returncode, bad.stderr) == (
        1, f"Error: {tmp_path / 'no' / 'log'}: no such directory\n")
