"""`Listener`: keeps one AMI connection alive and writes what it hears to the store.

Reading and writing are decoupled by a bounded queue so that a slow disk never stalls the
socket: Asterisk disconnects a client that does not read within its `writetimeout`, and then
everything is lost. When the queue is full an event is dropped and counted instead, and the
stretch is written as an `ami-gap` (a queue_log ingest fills it). Disconnections are gaps too:
from the last moment the connection was known alive to the next successful login.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from dataclasses import dataclass, field

from ami_listener.manager import AmiConnection, Message
from ami_listener.mapping import AmiMapper
from callkpi.config import AmiConfig, Config
from callkpi.events import SOURCE_AMI, CallEvent, CallLink, Kind, make_event
from callkpi.store import Batch, Store, WriteResult
from callkpi.store import open_store
from callkpi.service import summary_line

log = logging.getLogger(__name__)

# The event classes the AMI account must be able to read; only these are asked for.
EVENT_MASK = "call,agent,user"
BACKOFF_FIRST_S = 0.5
REPORT_INTERVAL_S = 300.0  # how often the stats (drops included) go to the log
LATENCY_SAMPLES = 100_000


@dataclass
class ListenerStats:
    received: int = 0  # AMI events read from the socket
    ignored: int = 0  # events nothing is made of (not queued)
    dropped: int = 0  # events lost because the queue was full (back-pressure)
    processed: int = 0  # events mapped and their results committed
    stored: int = 0  # canonical events written
    duplicates: int = 0  # canonical events the store already had (e.g. from queue_log)
    links: int = 0
    warnings: int = 0
    connects: int = 0
    gaps: int = 0
    write_retries: int = 0
    queue_peak: int = 0
    # seconds from the event's Timestamp to its commit, a bounded sample
    latencies: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_SAMPLES))

    def summary(self) -> str:
        return summary_line(self)


class Listener:
    """Run with `await listener.run()`; `stop()` (e.g. on SIGTERM) flushes and returns."""

    def __init__(self, store: Store, ami: AmiConfig, server: str, *,
                 connect_timeout: float = 10.0) -> None:
        self.store = store
        self.ami = ami
        self.server = server
        self.mapper = AmiMapper(server)
        self.stats = ListenerStats()
        self.connect_timeout = connect_timeout
        self._wanted = self.mapper.wanted
        self._pending: collections.deque[tuple[Message, float] | CallEvent] = collections.deque()
        self._has_pending = asyncio.Event()
        self._stopping = asyncio.Event()
        self._conn: AmiConnection | None = None
        self._connector: asyncio.Task | None = None
        self._last_pong = 0.0
        self._overflow_since: float | None = None
        self._overflow_last = 0.0
        self.connected = asyncio.Event()  # set while logged in (tests and the CLI wait on it)

    # ------------------------------------------------------------ life cycle
    async def run(self) -> ListenerStats:
        """Connect, reconnect with backoff, until stop(); raises LoginError if rejected."""
        writer = asyncio.create_task(self._write_loop())
        reporter = asyncio.create_task(self._report_loop())
        self._connector = asyncio.create_task(self._connect_loop())
        try:
            await self._connector
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise
        finally:
            self._stopping.set()
            self._has_pending.set()
            reporter.cancel()
            await writer
        return self.stats

    def stop(self) -> None:
        """Stop reading, flush what was read, and make run() return (also mid-backoff)."""
        self._stopping.set()
        self._has_pending.set()
        if self._conn is not None:
            self._conn.close()
        elif self._connector is not None:
            self._connector.cancel()  # connecting or waiting to reconnect: nothing to lose

    async def _connect_loop(self) -> None:
        backoff = BACKOFF_FIRST_S
        # Since the last event a previous run stored, nobody listened (stopped, killed, host
        # down): a gap up to the first login, as long as the store cannot tell it was quiet.
        down_since = await self._last_stored_event()
        reason = "listener not running"
        while not self._stopping.is_set():
            try:
                conn = await AmiConnection.open(
                    self.ami.host, self.ami.port, username=self.ami.username,
                    secret=self.ami.secret, events=EVENT_MASK, on_event=self._on_event,
                    timeout=self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:  # not LoginError: that one ends run()
                down_since = down_since or time.time()
                log.warning("AMI %s:%s unreachable (%s); retrying in %.1f s", self.ami.host,
                            self.ami.port, exc or type(exc).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.ami.reconnect_max_s) * random.uniform(0.8, 1.2)
                continue
            backoff = BACKOFF_FIRST_S
            if down_since is not None:
                self._mark_gap(down_since, time.time(), reason)
            reason = await self._serve(conn)
            down_since = max(conn.last_received, self._last_pong) or time.time()

    async def _last_stored_event(self) -> float | None:
        rows = await self.store.fetch_all(
            "SELECT max(tsec) FROM events WHERE source = ? AND kind <> ?",
            (SOURCE_AMI, Kind.AMI_GAP))
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    async def _serve(self, conn: AmiConnection) -> str:
        """Hold one logged-in connection until it ends; returns why it ended."""
        self._conn = conn
        self._last_pong = time.time()
        self.stats.connects += 1
        self.connected.set()
        log.info("AMI logged in to %s as %s", conn.origin, self.ami.username)
        pinger = asyncio.create_task(self._ping_loop(conn))
        try:
            if self._stopping.is_set():
                conn.close()
            else:
                await self._ask_queue_members(conn)
            reason = await conn.closed
        finally:
            pinger.cancel()
            self.connected.clear()
            self._conn = None
        why = reason or "connection closed"
        if not self._stopping.is_set():
            log.warning("AMI connection to %s lost: %s; reconnecting", conn.origin, why)
        return why

    async def _report_loop(self) -> None:
        last = ""
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            if (summary := self.stats.summary()) != last:
                log.info("AMI listener: %s", summary)
                last = summary

    async def _ask_queue_members(self, conn: AmiConnection) -> None:
        """The members of every queue (QueueMember events follow the response): the mapper
        needs them to tell an EXITEMPTY from a timeout. Missing them only costs that."""
        try:
            response = await asyncio.wait_for(conn.send_action({"Action": "QueueStatus"}),
                                              self.connect_timeout)
        except (asyncio.TimeoutError, ConnectionError):
            return
        if response.get("Response") != "Success":
            log.warning("AMI QueueStatus refused (%s): an EXITEMPTY may be reported as a "
                        "timeout until queue member events arrive", response.get("Message"))

    async def _ping_loop(self, conn: AmiConnection) -> None:
        """A half-open socket (peer gone, no FIN) never errors on read: only a Ping tells."""
        interval = self.ami.ping_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await conn.ping(timeout=interval)
            except (asyncio.TimeoutError, ConnectionError):
                log.warning("AMI %s did not answer a Ping within %.1f s: dropping it",
                            conn.origin, interval)
                conn.abort()
                return
            self._last_pong = time.time()

    # ------------------------------------------------------------ reading (never blocks)
    def _on_event(self, message: Message, received_at: float) -> None:
        self.stats.received += 1
        if message.get("Event") not in self._wanted:
            self.stats.ignored += 1
            return
        if len(self._pending) >= self.ami.queue_max:
            self.stats.dropped += 1
            if self._overflow_since is None:
                self._overflow_since = received_at
                log.warning("AMI queue full (%d): dropping events until the store catches up",
                            self.ami.queue_max)
            self._overflow_last = received_at
            return
        if self._overflow_since is not None:
            self._mark_gap(self._overflow_since, self._overflow_last, "queue full")
            self._overflow_since = None
        self._pending.append((message, received_at))
        self.stats.queue_peak = max(self.stats.queue_peak, len(self._pending))
        self._has_pending.set()

    def _mark_gap(self, start: float, end: float, reason: str) -> None:
        self.stats.gaps += 1
        log.warning("AMI gap of %.1f s from %s (%s)", end - start,
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start)), reason)
        gap = make_event(server=self.server, kind=Kind.AMI_GAP, ts=start, source=SOURCE_AMI,
                         talk_s=round(end - start, 3), reason=reason)
        self._pending.append(gap)  # never dropped: it is what says data is missing
        self._has_pending.set()

    # ------------------------------------------------------------ writing (batched)
    async def _write_loop(self) -> None:
        while True:
            await self._has_pending.wait()
            if not self._pending:
                if self._stopping.is_set():
                    return
                self._has_pending.clear()
                continue
            if len(self._pending) < self.ami.batch_max and not self._stopping.is_set():
                await asyncio.sleep(self.ami.flush_interval_s)  # let a batch gather
            items = [self._pending.popleft()
                     for _ in range(min(len(self._pending), self.ami.batch_max))]
            await self._write(items)

    async def _write(self, items: list[tuple[Message, float] | CallEvent]) -> None:
        events: list[CallEvent] = []
        links: list[CallLink] = []
        stamps: list[float] = []
        for item in items:
            if isinstance(item, CallEvent):
                events.append(item)
                continue
            message, received_at = item
            out = self.mapper.map(message, received_at)
            for warning in out.warnings:
                self.stats.warnings += 1
                log.warning("AMI %s", warning)
            events.extend(out.events)
            links.extend(out.links)
            stamps.append(_stamp(message, received_at))
        result = await self._commit(Batch(events=events, links=links))
        now = time.time()
        self.stats.latencies.extend(now - stamp for stamp in stamps)
        self.stats.processed += len(stamps)
        self.stats.stored += result.stored
        self.stats.duplicates += result.duplicates
        self.stats.links += len(links)

    async def _commit(self, batch: Batch) -> WriteResult:
        """Retry a failed write (store locked past its busy timeout, disk full) until it goes
        through; meanwhile the bounded queue keeps the socket read."""
        delay = 0.5
        while True:
            try:
                return await self.store.write(batch)
            except Exception as exc:  # the store's errors are backend-specific
                self.stats.write_retries += 1
                log.error("store write of %d events failed (%s); retrying in %.1f s",
                          len(batch.events), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)


def _stamp(message: Message, received_at: float) -> float:
    try:
        return float(message.get("Timestamp", received_at))
    except ValueError:
        return received_at


async def listen(config: Config, stop: asyncio.Event) -> ListenerStats:
    """`callkpi listen`: run until `stop` is set, then flush and return the stats."""
    store = await open_store(config.store.db)
    async with store:
        listener = Listener(store, config.ami, config.server.name)
        stopper = asyncio.create_task(stop.wait())

        def stopped(task: asyncio.Task[object]) -> None:
            if not task.cancelled():
                listener.stop()

        stopper.add_done_callback(stopped)
        try:
            return await listener.run()
        finally:
            stopper.cancel()
