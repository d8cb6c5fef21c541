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
from ami_listener.listener import Listener, StoreFailed
from ami_listener.manager import LoginError, NotAmi
from callkpi.config import AmiConfig
from callkpi.events import SOURCE_QUEUE_LOG, Kind, make_event
from callkpi.store import Batch, StoreUnavailable
from callkpi.store import open_store

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

    async def rebuilt(self):
        """Logged in and the login's snapshot (QueueStatus, Status) applied."""
        await asyncio.wait_for(self.listener.rebuilt.wait(), 5)

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
    assert ami.clients[0].mask == {"call", "agent", "user", "system"}
    await ami.emit(pause_event())
    await ami.emit(b"Event: VarSet\r\nPrivilege: dialplan,all\r\nVariable: X")  # not asked for
    await ami.emit(b"Event: Newstate\r\nPrivilege: call,all\r\nUniqueid: 1.1")
    await run.received(3)  # FullyBooted, QueueMemberPause, Newstate
    stats = await run.stop()  # stop flushes what was read
    assert await rows(store) == [("pause", "sales", "Agent 1", "lunch", "ami")]
    assert (stats.received, stats.ignored, stats.processed, stats.stored) == (3, 2, 1, 1)


async def test_reconnects_after_a_drop_and_marks_the_gap(ami, store):
    run = Running(store, config(ami))
    await run.connected()
    await run.rebuilt()  # nothing more in flight
    ami.drop_all()
    before = time.time()
    await eventually(lambda: (ami.connections == 2 and bool(ami.logged_in)))
    await ami.emit(pause_event("after"))
    await run.received(3)  # FullyBooted twice, the pause
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

        async def checkpoint(self, stream):
            return await store.checkpoint(stream)

    slow = SlowStore()
    run = Running(slow, config(ami, queue_max=50, batch_max=10))
    await run.rebuilt()
    t0 = time.time()
    data = b"".join(pause_event(f"r{n}", ts=t0) + b"\r\n\r\n" for n in range(500))
    await ami.write_raw(data)
    # the socket is read at once although the store is busy
    await eventually(lambda: (run.listener.stats.received == 501), timeout=2)
    stats = await run.stop()
    assert stats.dropped > 0 and stats.queue_peak == 50
    assert stats.processed + stats.dropped == 500  # every event stored or counted as lost
    kinds = [row[0] for row in await rows(store)]
    assert kinds.count("pause") == stats.processed
    assert kinds.count("ami-gap") == stats.gaps


async def test_overflow_gap_is_marked_when_events_flow_again(ami, store):
    run = Running(store, config(ami, queue_max=5, batch_max=5, flush_interval_s=0.5))
    await run.rebuilt()
    await ami.write_raw(b"".join(pause_event(f"r{n}") + b"\r\n\r\n" for n in range(20)))
    await asyncio.sleep(1.5)
    await ami.emit(pause_event("later"))
    await run.received(22)
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


async def test_sigterm_flushes_and_exits_cleanly(ami, make_store_url):
    db = make_store_url(empty=True)
    env = {**os.environ, "CALLKPI_AMI_SECRET": SECRET, "CALLKPI_CONFIG": "/dev/null"}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "callkpi"), "listen", "--ami-port", str(ami.port),
        "--db", db, env=env, stdout=asyncio.subprocess.PIPE,
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
    first_login = time.time()
    ts = time.time() - 60
    await ami.emit(pause_event("before", ts=ts))
    await run.received(2)
    await run.stop()
    stopped = time.time()
    # queue_log's twin takes the place of the AMI row: the listener's own record of how far
    # it got must not move back to an older event with it
    await store.write(Batch(events=[make_event(
        server="pbx", kind=Kind.PAUSE, ts=ts, source=SOURCE_QUEUE_LOG, queue="sales",
        agent="Agent 1", discr="before", reason="before")]))
    await asyncio.sleep(0.5)
    run = Running(store, config(ami))  # e.g. after a kill -9 and a restart by systemd
    await run.connected()
    started = time.time()
    await run.stop()
    gaps = await store.fetch_all("SELECT ts, talk_s, reason FROM events WHERE kind = 'ami-gap'")
    ((start, length, reason),) = gaps
    assert reason == "listener not running"
    # from the end of the first run (not from its last event), to the second run's login;
    # the length is stored to the millisecond
    assert first_login <= start <= stopped <= start + length <= started + 0.0005


async def test_a_kill_loses_only_what_the_gap_covers(ami, tmp_path, store_url):
    """kill -9 of `callkpi listen`: the outage is dated from the last event it stored (its
    checkpoint moves with every batch and while the PBX is quiet), not from an older one."""
    db = store_url
    (tmp_path / "callkpi.toml").write_text(
        f'[server]\nname = "pbx"\n[ami]\nport = {ami.port}\nping_interval_s = 0.3\n')
    env = {**os.environ, "CALLKPI_AMI_SECRET": SECRET,
           "CALLKPI_CONFIG": str(tmp_path / "callkpi.toml")}
    args = (str(Path(sys.executable).parent / "callkpi"), "listen", "--db", db)
    proc = await asyncio.create_subprocess_exec(*args, env=env,
                                                stderr=asyncio.subprocess.DEVNULL)
    await eventually(lambda: len(ami.logged_in) == 1, timeout=10)
    await ami.emit(pause_event("stored", ts=time.time() - 30))  # an old event...
    store = await open_store(db)
    async with store:
        await eventually_async(lambda: _count(store, "pause"), 1)
        # ... and a quiet PBX after it: the listener's checkpoint keeps up meanwhile
        checkpoint = await store.checkpoint("ami://pbx")
        while checkpoint is None or checkpoint.updated_at < time.time() - 1:
            await asyncio.sleep(0.05)
            checkpoint = await store.checkpoint("ami://pbx")
        proc.kill()
        await proc.wait()
        killed = time.time()
    proc = await asyncio.create_subprocess_exec(*args, env=env,
                                                stderr=asyncio.subprocess.DEVNULL)
    await eventually(lambda: len(ami.logged_in) == 1 and ami.logins == 2, timeout=10)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    store = await open_store(db)
    async with store:
        ((start, length),) = await store.fetch_all(
            "SELECT ts, talk_s FROM events WHERE kind = 'ami-gap'")
    assert killed - 2.5 <= start <= killed and start + length >= killed


async def _count(store, kind):
    return (await store.fetch_all("SELECT count(*) FROM events WHERE kind = ?", (kind,)))[0][0]


async def eventually_async(query, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while await query() != want:
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_stats_are_reported_in_the_log(ami, store, caplog, monkeypatch):
    monkeypatch.setattr("ami_listener.listener.REPORT_INTERVAL_S", 0.1)
    caplog.set_level(logging.INFO)
    run = Running(store, config(ami, queue_max=1, flush_interval_s=0.5))
    await run.rebuilt()
    await ami.write_raw(b"".join(pause_event(f"r{n}") + b"\r\n\r\n" for n in range(5)))
    await asyncio.sleep(0.3)
    await run.stop()
    assert "AMI listener: received=6" in caplog.text and "dropped=4" in caplog.text


async def test_junk_on_the_socket_is_located_and_reading_goes_on(ami, store, caplog):
    run = Running(store, config(ami))
    await run.rebuilt()
    await ami.write_raw(b"\x00\xffgarbage without a colon\r\n\r\nEvent: Hold\r\nno colon here\r\n"
                        b"Uniqueid: 9.9\r\n\r\n" + pause_event("ok") + b"\r\n\r\n")
    await run.received(3)
    stats = await run.stop()
    assert await rows(store) == [("pause", "sales", "Agent 1", "ok", "ami")]
    # messages 1-6: the Login response, FullyBooted, the QueueStatus and Status responses and
    # the ends of their lists
    assert "message #7 at byte" in caplog.text and "garbage without a colon" in caplog.text
    assert "message #8 at byte" in caplog.text and "no colon here" in caplog.text
    assert stats.connects == 1


async def run_cli(*args, env=None):
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "callkpi"), *args,
        env={**os.environ, "CALLKPI_CONFIG": "/dev/null", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    return proc.returncode, out.decode(), err.decode()


async def test_cli_rejected_login_is_one_line_and_exit_78(ami, store_url):
    code, _, err = await run_cli("listen", "--ami-port", str(ami.port), "--db", store_url,
                                 env={"CALLKPI_AMI_SECRET": "nope"})
    assert code == 78
    assert "Error: AMI login as 'callkpi' on 127.0.0.1" in err and "Traceback" not in err
    assert "nope" not in err


async def test_cli_without_a_secret_says_where_to_put_it(tmp_path):
    code, _, err = await run_cli("listen", "--db", str(tmp_path / "x.db"))
    assert code == 1
    assert err.strip() == ("Error: no AMI secret: set [ami] secret in the config or "
                           "CALLKPI_AMI_SECRET")


# ------------------------------------------------------------------ hostile input and faults
async def test_impossible_timestamps_are_skipped_and_the_listener_goes_on(ami, store, caplog):
    run = Running(store, config(ami))
    await run.rebuilt()
    for stamp in ("inf", "1e19", "-1e300", "nan"):
        await ami.emit(pause_event(f"bad {stamp}", ts=stamp))
    await ami.emit(pause_event("good"))
    await run.received(6)
    stats = await run.stop()
    assert await rows(store) == [("pause", "sales", "Agent 1", "good", "ami")]
    assert stats.warnings == 4 and caplog.text.count("impossible Timestamp") == 4


class FlakyStore:
    """A real store whose writes fail as told: `unavailable` times with StoreUnavailable,
    always for a batch holding a `poison` pause, or always (`broken`)."""

    def __init__(self, store, unavailable=0, broken=False):
        self.store, self.unavailable, self.broken = store, unavailable, broken

    async def write(self, batch):
        if self.broken:
            raise RuntimeError("attempt to write a readonly database")
        if self.unavailable > 0:
            self.unavailable -= 1
            raise StoreUnavailable("database is locked")
        if any(e.discr == "poison" for e in batch.events):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return await self.store.write(batch)

    def __getattr__(self, name):
        return getattr(self.store, name)


async def test_a_transient_store_error_is_retried_and_loses_nothing(ami, store):
    flaky = FlakyStore(store, unavailable=2)
    run = Running(flaky, config(ami))
    await run.rebuilt()
    await ami.emit(pause_event("kept"))
    await eventually(lambda: run.listener.stats.processed == 1, timeout=10)
    stats = await run.stop()
    assert stats.write_retries >= 2 and stats.rejected == 0
    assert await rows(store) == [("pause", "sales", "Agent 1", "kept", "ami")]


async def test_an_event_the_store_refuses_is_skipped_and_the_rest_is_stored(ami, store, caplog):
    run = Running(FlakyStore(store), config(ami, flush_interval_s=0.3))
    await run.rebuilt()
    for reason in ("one", "poison", "two"):
        await ami.emit(pause_event(reason))
    await run.received(4)
    stats = await run.stop()
    assert sorted(r[3] for r in await rows(store)) == ["one", "two"]
    assert stats.rejected == 1 and stats.write_retries == 0  # never retried as transient
    assert "pause of call - at" in caplog.text and "refused by the store" in caplog.text


async def test_a_store_that_takes_no_write_stops_the_listener_with_a_clear_error(ami, store):
    listener = Listener(FlakyStore(store, broken=True), config(ami), "pbx", connect_timeout=1)
    task = asyncio.create_task(listener.run())
    await asyncio.wait_for(listener.connected.wait(), 5)
    await ami.emit(pause_event("lost"))
    with pytest.raises(StoreFailed, match="the store refuses writes: attempt to write a "
                                          "readonly database"):
        await asyncio.wait_for(task, 10)
    await eventually(lambda: not ami.logged_in)  # it let go of AMI: it does not look alive


async def test_a_stop_while_the_store_is_unavailable_ends_and_says_what_was_lost(
        ami, store, monkeypatch):
    monkeypatch.setattr("ami_listener.listener.STOP_GRACE_S", 0.5)
    run = Running(FlakyStore(store, unavailable=10**9), config(ami))
    await run.connected()
    await ami.emit(pause_event("unstored"))
    await run.received(2)
    run.listener.stop()
    with pytest.raises(StoreFailed, match="store unavailable at stop .* not stored"):
        await asyncio.wait_for(run.task, 10)


async def test_two_gaps_beginning_in_the_same_second_are_two_records(store):
    listener = Listener(store, AmiConfig(port=1, secret=SECRET), "pbx")
    start = int(time.time()) + 0.1
    listener._mark_gap(start, start + 0.2, "connection closed")
    listener._mark_gap(start + 0.5, start + 3, "connection closed")
    await listener._write(list(listener._pending))
    gaps = await store.fetch_all("SELECT tsec, talk_s FROM events WHERE kind = 'ami-gap'"
                                 " ORDER BY ts")
    assert gaps == [(int(start), 0.2), (int(start), 2.5)]
    await listener._write([listener._pending[0]])  # the same gap written again: still one
    assert len(await store.fetch_all("SELECT 1 FROM events WHERE kind = 'ami-gap'")) == 2


async def serve_once(answer: bytes | None):
    """A TCP server that is not AMI: sends `answer` on connect (None: when it receives
    anything, as an HTTP server answers a request it cannot parse)."""
    async def handle(reader, writer):
        if answer is not None:
            writer.write(answer)
        else:
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read(100)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("answer", [b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", None])
async def test_a_port_that_is_not_ami_is_one_clear_error(store, answer):
    server = await serve_once(answer)
    port = server.sockets[0].getsockname()[1]
    try:
        listener = Listener(store, AmiConfig(port=port, secret=SECRET), "pbx",
                            connect_timeout=2.0)
        with pytest.raises(NotAmi, match=rf"127.0.0.1:{port} is not an AMI port: it answered"):
            await asyncio.wait_for(listener.run(), 10)
    finally:
        server.close()


async def test_cli_pointed_at_a_port_that_is_not_ami_says_so_in_one_line(store_url):
    server = await serve_once(b"SSH-2.0-OpenSSH_9.2p1\r\n")
    port = server.sockets[0].getsockname()[1]
    try:
        code, _, err = await run_cli("listen", "--ami-port", str(port), "--db", store_url,
                                     env={"CALLKPI_AMI_SECRET": "x"})
    finally:
        server.close()
    assert code == 78 and "Traceback" not in err
    assert f"Error: 127.0.0.1:{port} is not an AMI port: it answered 'SSH-2.0-OpenSSH" in err


async def test_a_silent_peer_is_retried_and_the_log_says_what_is_wrong(store, caplog):
    async def silent(reader, writer):
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        listener = Listener(store, AmiConfig(port=port, secret=SECRET, reconnect_max_s=0.2),
                            "pbx", connect_timeout=0.3)
        task = asyncio.create_task(listener.run())
        await eventually(lambda: caplog.text.count("sent nothing within 0.3 s") >= 2)
        listener.stop()
        await asyncio.wait_for(task, 5)
    finally:
        server.close()
    assert "a hung Asterisk, or not its AMI port?" in caplog.text
