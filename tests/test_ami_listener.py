"""The Listener against the fake AMI server and a real SQLite store."""

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from callkpi.testing.fakeami import FakeAmi
from ami_listener.listener import Listener
from ami_listener.manager import LoginError
from callkpi.config import AmiConfig
from callkpi.events import SOURCE_QUEUE_LOG, Kind, make_event
from callkpi.store import Batch
from callkpi.store import open_store

pytestmark = pytest.mark.backends("sqlite", "postgresql")

SECRET = "s3cr3t-never-logged"


def pause_event(reason="lunch", agent="Agent 1", ts=None):
    return (f"Event: QueueMemberPause\r\nPrivilege: agent,all\r\nTimestamp: {ts or time.time()}"
            f"\r\nQueue: sales\r\nInterface: Local/1@agents/n\r\nMemberName: {agent}\r\n"
            f"Paused: 1\r\nPausedReason: {reason}").encode()


@pytest.fixture
async def ami():
    server = await FakeAmi(secret=SECRET).start()
    yield server
    await server.close()


def config(server, **kw):
    values = dict(port=server.port, secret=SECRET, ping_interval_s=0.2,
                  reconnect_max_s=0.5, flush_interval_s=0.02)
    return AmiConfig(**{**values, **kw})


class Running:
    """A listener running in the background of a test."""

    def __init__(self, store, ami_config):
        self.listener = Listener(store, ami_config, "pbx", connect_timeout=1.0)
        self.task = asyncio.create_task(self.listener.run())

    async def connected(self):
        await asyncio.wait_for(self.listener.connected.wait(), 5)

    async def received(self, n):
        """Wait until n events were read (a stop drops what is still in flight)."""
        await eventually(lambda: self.listener.stats.received >= n)

    async def stop(self):
        self.listener.stop()
        return await asyncio.wait_for(self.task, 5)


async def rows(store, sql="SELECT kind, queue, agent, discr, source FROM events ORDER BY id"):
    return await store.fetch_all(sql)


async def eventually(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_events_are_stored_and_the_account_asks_only_for_its_classes(ami, store):
    run = Running(store, config(ami))
    await run.connected()
    assert ami.clients[0].mask == {"call", "agent", "user"}
    await ami.emit(pause_event())
    await ami.emit(b"Event: VarSet\r\nPrivilege: dialplan,all\r\nVariable: X")  # not asked for
    await ami.emit(b"Event: Newstate\r\nPrivilege: call,all\r\nUniqueid: 1.1")
    await run.received(4)  # FullyBooted, QueueStatusComplete, QueueMemberPause, Newstate
    stats = await run.stop()  # stop flushes what was read
    assert await rows(store) == [("pause", "sales", "Agent 1", "lunch", "ami")]
    assert (stats.received, stats.ignored, stats.processed, stats.stored) == (4, 3, 1, 1)


async def test_reconnects_after_a_drop_and_marks_the_gap(ami, store):
    run = Running(store, config(ami))
    await run.connected()
    await run.received(2)  # FullyBooted, QueueStatusComplete: nothing more in flight
    ami.drop_all()
    before = time.time()
    await eventually(lambda: (ami.connections == 2 and bool(ami.logged_in)))
    await ami.emit(pause_event("after"))
    await run.received(5)  # FullyBooted and QueueStatusComplete twice, the pause
    stats = await run.stop()
    gap = await store.fetch_all("SELECT ts, talk_s, reason FROM events WHERE kind = 'ami-gap'")
    assert len(gap) == 1 and gap[0][0] <= before and 0 <= gap[0][1] < 5
    assert ("pause", "sales", "Agent 1", "after", "ami") in await rows(store)
    assert stats.connects == 2 and stats.gaps == 1


async def test_a_silent_half_open_peer_is_detected_by_ping(ami, store):
    run = Running(store, config(ami))
    await run.connected()
    ami.answer_pings = False  # the socket stays open, nothing answers: a half-open peer
    # the listener's own count: the server counts a connection before its login completes
    await eventually(lambda: run.listener.stats.connects >= 2, timeout=3)
    stats = await run.stop()
    assert stats.connects >= 2


async def test_rejected_login_stops_at_once_and_never_logs_the_secret(ami, store, caplog):
    caplog.set_level(logging.DEBUG)
    listener = Listener(store, config(ami, secret="wrong-" + SECRET), "pbx")
    with pytest.raises(LoginError, match="rejected: Authentication failed"):
        await asyncio.wait_for(listener.run(), 5)
    await asyncio.sleep(0.3)
    assert ami.logins == 1  # not retried forever
    assert SECRET not in caplog.text


async def test_stop_during_backoff_returns_and_does_not_reconnect(store):
    server = await FakeAmi(secret=SECRET).start()
    port = server.port
    await server.close()  # nothing listens: the listener backs off
    run = Running(store, AmiConfig(port=port, secret=SECRET, reconnect_max_s=5))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await run.stop()
    assert time.monotonic() - started < 1
    server = await FakeAmi(secret=SECRET).start(port=port)
    await asyncio.sleep(1.5)
    assert server.connections == 0
    await server.close()


async def test_back_pressure_drops_counts_and_marks_instead_of_blocking(ami, store):
    class SlowStore:
        def __init__(self):
            self.batches = []

        async def write(self, batch):
            await asyncio.sleep(0.3)  # a disk far slower than the socket
            self.batches.append(batch)
            return await store.write(batch)

        async def fetch_all(self, sql, params=()):
            return await store.fetch_all(sql, params)

    slow = SlowStore()
    run = Running(slow, config(ami, queue_max=50, batch_max=10))
    await run.connected()
    t0 = time.time()
    data = b"".join(pause_event(f"r{n}", ts=t0) + b"\r\n\r\n" for n in range(500))
    await ami.write_raw(data)
    # the socket is read at once although the store is busy
    await eventually(lambda: (run.listener.stats.received == 502), timeout=2)
    stats = await run.stop()
    assert stats.dropped > 0 and stats.queue_peak == 50
    assert stats.processed + stats.dropped == 500  # every event stored or counted as lost
    kinds = [row[0] for row in await rows(store)]
    assert kinds.count("pause") == stats.processed
    assert kinds.count("ami-gap") == stats.gaps


async def test_overflow_gap_is_marked_when_events_flow_again(ami, store):
    run = Running(store, config(ami, queue_max=5, batch_max=5, flush_interval_s=0.5))
    await run.connected()
    await ami.write_raw(b"".join(pause_event(f"r{n}") + b"\r\n\r\n" for n in range(20)))
    await asyncio.sleep(1.5)
    await ami.emit(pause_event("later"))
    await run.received(23)
    await run.stop()
    gap = await store.fetch_all("SELECT reason FROM events WHERE kind = 'ami-gap'")
    assert gap == [("queue full",)]


async def test_queue_log_twin_wins_and_nothing_is_counted_twice(ami, store):
    t0 = 1_795_000_000.9
    twin = make_event(server="pbx", kind=Kind.PAUSE, ts=t0, source=SOURCE_QUEUE_LOG,
                      queue="sales", agent="Agent 1", discr="lunch", reason="lunch")
    await store.write(Batch(events=[twin]))
    run = Running(store, config(ami))
    await run.connected()
    await ami.emit(pause_event("lunch", ts=t0 + 0.2))  # AMI: a few ms later, next second
    await ami.emit(pause_event("tea", ts=t0 + 5))  # AMI only, until queue_log catches up
    await run.received(3)
    stats = await run.stop()
    assert (stats.stored, stats.duplicates) == (1, 1)
    late = make_event(server="pbx", kind=Kind.PAUSE, ts=t0 + 5, source=SOURCE_QUEUE_LOG,
                      queue="sales", agent="Agent 1", discr="tea", reason="tea")
    await store.write(Batch(events=[late]))  # a queue_log ingest after the AMI copy
    stored = await rows(store, "SELECT discr, source FROM events ORDER BY discr")
    assert [discr for discr, _ in stored] == ["lunch", "tea"]  # nothing counted twice
    assert stored[0] == ("lunch", "queue_log")


async def test_sigterm_flushes_and_exits_cleanly(ami, tmp_path):
    db = tmp_path / "listen.db"
    env = {**os.environ, "CALLKPI_AMI_SECRET": SECRET, "CALLKPI_CONFIG": "/dev/null"}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "callkpi"), "listen", "--ami-port", str(ami.port),
        "--db", str(db), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    await eventually(lambda: bool(ami.logged_in), timeout=10)
    await ami.emit(pause_event("flushed"))
    await asyncio.sleep(0.05)  # read, not yet written (the batch waits flush_interval_s)
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err.decode()
    assert b"processed=1 stored=1" in out
    assert SECRET.encode() not in out + err
    store = await open_store(db, create=False)
    async with store:
        assert await rows(store, "SELECT discr FROM events") == [("flushed",)]


async def test_a_restart_marks_the_time_nobody_listened(ami, store):
    run = Running(store, config(ami))
    await run.connected()
    last = time.time() - 60
    await ami.emit(pause_event("before", ts=last))
    await run.received(3)
    await run.stop()
    run = Running(store, config(ami))  # e.g. after a kill -9 and a restart by systemd
    await run.connected()
    await run.stop()
    gaps = await store.fetch_all("SELECT tsec, talk_s, reason FROM events WHERE kind = 'ami-gap'")
    assert [(tsec, reason) for tsec, _, reason in gaps] == [(int(last), "listener not running")]
    assert 60 <= gaps[0][1] < 65


async def test_stats_are_reported_in_the_log(ami, store, caplog, monkeypatch):
    monkeypatch.setattr("ami_listener.listener.REPORT_INTERVAL_S", 0.1)
    caplog.set_level(logging.INFO)
    run = Running(store, config(ami, queue_max=1, flush_interval_s=0.5))
    await run.connected()
    await ami.write_raw(b"".join(pause_event(f"r{n}") + b"\r\n\r\n" for n in range(5)))
    await asyncio.sleep(0.3)
    await run.stop()
    assert "AMI listener: received=7" in caplog.text and "dropped=4" in caplog.text


async def test_junk_on_the_socket_is_located_and_reading_goes_on(ami, store, caplog):
    run = Running(store, config(ami))
    await run.connected()
    await run.received(2)
    await ami.write_raw(b"\x00\xffgarbage without a colon\r\n\r\nEvent: Hold\r\nno colon here\r\n"
                        b"Uniqueid: 9.9\r\n\r\n" + pause_event("ok") + b"\r\n\r\n")
    await run.received(4)
    stats = await run.stop()
    assert await rows(store) == [("pause", "sales", "Agent 1", "ok", "ami")]
    # messages 1-4: the Login response, FullyBooted, the QueueStatus response and its end
    assert "message #5 at byte" in caplog.text and "garbage without a colon" in caplog.text
    assert "message #6 at byte" in caplog.text and "no colon here" in caplog.text
    assert stats.connects == 1


async def run_cli(*args, env=None):
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "callkpi"), *args,
        env={**os.environ, "CALLKPI_CONFIG": "/dev/null", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    return proc.returncode, out.decode(), err.decode()


async def test_cli_rejected_login_is_one_line_and_exit_78(ami, tmp_path):
    code, _, err = await run_cli("listen", "--ami-port", str(ami.port), "--db",
                                 str(tmp_path / "x.db"), env={"CALLKPI_AMI_SECRET": "nope"})
    assert code == 78
    assert "Error: AMI login as 'callkpi' on 127.0.0.1" in err and "Traceback" not in err
    assert "nope" not in err


async def test_cli_without_a_secret_says_where_to_put_it(tmp_path):
    code, _, err = await run_cli("listen", "--db", str(tmp_path / "x.db"))
    assert code == 1
    assert err.strip() == ("Error: no AMI secret: set [ami] secret in the config or "
                           "CALLKPI_AMI_SECRET")
