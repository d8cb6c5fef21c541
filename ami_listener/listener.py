"""`Listener`: keeps one AMI connection alive and writes what it hears to the store.

Reading and writing are decoupled by a bounded queue so that a slow disk never stalls the
socket: Asterisk disconnects a client that does not read within its `writetimeout`, and then
everything is lost. When the queue is full an event is dropped and counted instead, and the
stretch is written as an `ami-gap` (a queue_log ingest fills it). Disconnections are gaps too:
from the last moment the listener is known to have stored everything it heard (the AMI
stream's checkpoint, written with every batch) to the next successful login.

At every login the listener asks Asterisk what is live (QueueStatus: members and waiting
callers; Status: every channel, its bridge, linked id and the queue variables) and reads what
the store recorded about those calls; the mapper is rebuilt from both where each answer ends
in the stream (it keeps reading meanwhile), so holds, unholds and ends of calls already in
progress are placed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from ami_listener.manager import AmiConnection, AmiError, Message
from ami_listener.mapping import ENDS, AmiMapper, Mapped, Snapshot, StoredCall, stored_calls
from callkpi.config import AmiConfig, Config
from callkpi.errors import UserError
from callkpi.events import SOURCE_AMI, CallEvent, CallLink, Checkpoint, Kind, make_event
from callkpi.queries import events as queries
from callkpi.store import Batch, Store, StoreUnavailable, WriteResult
from callkpi.store import open_store
from callkpi.service import summary_line

log = logging.getLogger(__name__)

# The event classes the AMI account must be able to read; only these are asked for.
# `system` brings Shutdown (and FullyBooted at login).
EVENT_MASK = "call,agent,user,system"
BACKOFF_FIRST_S = 0.5
REPORT_INTERVAL_S = 300.0  # how often the stats (drops included) go to the log
LATENCY_SAMPLES = 100_000
STOP_GRACE_S = 10.0  # at a stop, how long an unavailable store is waited for
WRITE_BACKOFF_MAX_S = 30.0
# The variables Queue() sets on a connected caller (queues.conf setinterfacevar and
# setqueueentryvar): its agent and its entry position.
STATUS_VARIABLES = "MEMBERNAME,QEORIGINALPOS"
# Without Status (an account with no `write = reporting`), how far back the store is read for
# calls still open at a login.
RECALL_HORIZON_S = 4 * 3600.0
RECALL_KINDS = (Kind.ENTER_QUEUE, Kind.CONNECT, Kind.HOLD, Kind.UNHOLD, *sorted(ENDS))


class StoreFailed(UserError):
    """The store refuses writes for a reason retrying cannot fix (or stayed unavailable at a
    stop): the listener stops rather than look healthy while storing nothing."""


@dataclass
class ListenerStats:
    received: int = 0  # AMI events read from the socket
    ignored: int = 0  # events nothing is made of (not queued)
    dropped: int = 0  # events lost because the queue was full (back-pressure)
    processed: int = 0  # events mapped and their results committed
    stored: int = 0  # canonical events written
    duplicates: int = 0  # canonical events the store already had (e.g. from queue_log)
    rejected: int = 0  # canonical events the store refused (skipped with a warning)
    links: int = 0
    warnings: int = 0
    connects: int = 0
    gaps: int = 0
    write_retries: int = 0
    queue_peak: int = 0
    # seconds from the event's Timestamp to its commit, a bounded sample
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_SAMPLES))

    def summary(self) -> str:
        return summary_line(self)


@dataclass
class _Members:
    """Where a login's QueueStatus answer ends in the stream: the members are its list."""

    at: float
    items: list[Message]


@dataclass
class _Rebuild:
    """Where a login's Status answer ends in the stream: the calls are rebuilt here, once
    `ready` has them with what the store said (the events after it wait that long)."""

    at: float
    ready: asyncio.Future[tuple[Snapshot, dict[str, StoredCall]]]


_Item = tuple[Message, float] | CallEvent | _Members | _Rebuild


class Listener:
    """Run with `await listener.run()`; `stop()` (e.g. on SIGTERM) flushes and returns."""

    def __init__(self, store: Store, ami: AmiConfig, server: str, *,
                 connect_timeout: float = 10.0) -> None:
        self.store = store
        self.ami = ami
        self.server = server
        self.stream = f"ami://{server}"  # the checkpoint saying how far the listener got
        self.mapper = AmiMapper(server)
        self.stats = ListenerStats()
        self.connect_timeout = connect_timeout
        self._wanted = self.mapper.wanted
        self._pending: collections.deque[_Item] = collections.deque()
        self._has_pending = asyncio.Event()
        self._stopping = asyncio.Event()
        self._conn: AmiConnection | None = None
        self._connector: asyncio.Task[None] | None = None
        self._last_pong = 0.0
        self._overflow_since: float | None = None
        self._overflow_last = 0.0
        self._stored_until = 0.0  # everything heard before this is in the store
        self._alive_until = 0.0  # the last moment the last connection was known alive
        self.connected = asyncio.Event()  # set while logged in (tests and the CLI wait on it)
        self.rebuilt = asyncio.Event()  # set once a login's snapshot is applied, until the next

    # ------------------------------------------------------------ life cycle
    async def run(self) -> ListenerStats:
        """Connect, reconnect with backoff, until stop(); raises LoginError/NotAmi if AMI
        cannot be used as configured, StoreFailed if the store cannot be written."""
        writer = asyncio.create_task(self._write_loop())
        reporter = asyncio.create_task(self._report_loop())
        connector = self._connector = asyncio.create_task(self._connect_loop())
        try:
            await asyncio.wait({writer, connector}, return_when=asyncio.FIRST_COMPLETED)
            if connector.done() and not connector.cancelled():
                connector.result()  # LoginError / NotAmi end the run
        finally:
            self._stopping.set()
            self._has_pending.set()
            reporter.cancel()
            if self._conn is not None:
                self._conn.close()
            connector.cancel()
            await asyncio.gather(connector, return_exceptions=True)
            await writer  # flushes; StoreFailed if the store fails meanwhile
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
        # Since a previous run last stored what it heard, nobody listened (stopped, killed,
        # host down): a gap up to the first login.
        down_since = await self._listened_until()
        reason = "listener not running"
        while not self._stopping.is_set():
            try:
                conn = await AmiConnection.open(
                    self.ami.host, self.ami.port, username=self.ami.username,
                    secret=self.ami.secret, events=EVENT_MASK, on_event=self._on_event,
                    timeout=self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:  # LoginError/NotAmi end run()
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
            down_since = self._alive_until or time.time()

    async def _listened_until(self) -> float | None:
        checkpoint = await self.store.checkpoint(self.stream)
        if checkpoint is None:
            return None  # never listened to this server (or before checkpoints were kept)
        self._stored_until = checkpoint.updated_at
        return checkpoint.updated_at

    async def _serve(self, conn: AmiConnection) -> str:
        """Hold one logged-in connection until it ends; returns why it ended."""
        self._conn = conn
        self._last_pong = time.time()
        self.stats.connects += 1
        log.info("AMI logged in to %s as %s", conn.origin, self.ami.username)
        rebuild = _Rebuild(0.0, asyncio.get_running_loop().create_future())
        self.rebuilt.clear()
        self.connected.set()
        pinger = asyncio.create_task(self._ping_loop(conn))
        try:
            if self._stopping.is_set():
                conn.close()
            else:
                await self._look_around(conn, rebuild)
            reason = await conn.closed
        finally:
            if not rebuild.ready.done():
                rebuild.ready.set_result((Snapshot(), {}))
            pinger.cancel()
            self._alive_until = max(conn.last_received, self._last_pong)
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

    # ------------------------------------------------------------ at every login
    async def _look_around(self, conn: AmiConnection, rebuild: _Rebuild) -> None:
        """Ask what Asterisk says is live and read what the store recorded about those calls.
        `rebuild` takes its place in the stream where Asterisk's answer ends: what came before
        it is in the answer, what comes after is mapped with it. Right after a restart AMI
        answers before the queues are loaded: first wait until Asterisk is booted."""
        try:
            await asyncio.wait_for(conn.fully_booted.wait(), self.connect_timeout)
        except asyncio.TimeoutError:
            log.warning("AMI %s sent no FullyBooted within %g s (does the account read "
                        "`system`?); asking what is live anyway", conn.origin,
                        self.connect_timeout)

        def members_in_stream(items: list[Message]) -> None:  # where QueueStatus's answer ends
            self._queue(_Members(time.time(), items))

        def calls_in_stream(items: list[Message] | None = None) -> None:  # where Status's ends
            rebuild.at = time.time()
            self._queue(rebuild)

        queue_status = await self._ask(conn, {"Action": "QueueStatus"}, members_in_stream,
                                       "an EXITEMPTY may be reported as a timeout")
        channels = await self._ask(conn, {"Action": "Status", "Variables": STATUS_VARIABLES},
                                   calls_in_stream, "calls already in progress are rebuilt "
                                   "from the store only (give the AMI account "
                                   "`write = reporting`)")
        if channels is None:
            calls_in_stream()
        waiting = None if queue_status is None else [
            m for m in queue_status if m.get("Event") == "QueueEntry"]
        snapshot = Snapshot(channels=channels, waiting=waiting)
        try:
            stored = await self._recall(snapshot)
        except Exception as exc:  # the store's errors are backend-specific
            log.warning("reading the calls in progress from the store failed (%s): they are "
                        "rebuilt from Asterisk only", exc)
            stored = {}
        rebuild.ready.set_result((snapshot, stored))

    async def _ask(self, conn: AmiConnection, action: dict[str, str],
                   on_complete: Callable[[list[Message]], None],
                   without: str) -> list[Message] | None:
        try:
            return await conn.list_action(action, self.connect_timeout, on_complete)
        except AmiError as exc:
            log.warning("%s: %s", exc, without)
        except (asyncio.TimeoutError, ConnectionError) as exc:
            log.warning("AMI %s on %s failed (%s): %s", action["Action"], conn.origin,
                        exc or type(exc).__name__, without)
        return None

    async def _recall(self, snapshot: Snapshot) -> dict[str, StoredCall]:
        """The store's record of the queue calls still open: how far back to read is the age
        of the oldest live queue channel when Status listed them."""
        now = time.time()
        if snapshot.channels is None:
            since = now - RECALL_HORIZON_S
        else:
            ages = [_number(row.get("Seconds", "")) for row in snapshot.channels
                    if row.get("Application") == "Queue"]
            if not ages:
                return {}
            since = now - max(ages) - 2
        rows = await queries.call_events_since(self.store, self.server, int(since),
                                               RECALL_KINDS)
        calls = stored_calls(rows)
        if snapshot.channels is not None or not calls:
            return calls  # Status gives the channels
        links = await queries.links_of_channels(self.store, self.server, list(calls))
        links += await queries.links_of_calls(self.store, self.server,
                                              sorted({linked for _, linked in links}))
        return stored_calls(rows, links)

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
        self._queue((message, received_at))
        self.stats.queue_peak = max(self.stats.queue_peak, len(self._pending))

    def _queue(self, item: _Item) -> None:
        self._pending.append(item)
        self._has_pending.set()

    def _mark_gap(self, start: float, end: float, reason: str) -> None:
        self.stats.gaps += 1
        log.warning("AMI gap of %.1f s from %s (%s)", end - start,
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start)), reason)
        # discr: two gaps that begin in the same second are two gaps
        gap = make_event(server=self.server, kind=Kind.AMI_GAP, ts=start, source=SOURCE_AMI,
                         discr=f"{start:.6f}", talk_s=round(end - start, 3), reason=reason)
        self._queue(gap)  # never dropped: it is what says data is missing

    # ------------------------------------------------------------ writing (batched)
    async def _write_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._has_pending.wait(), self.ami.ping_interval_s)
            except asyncio.TimeoutError:
                await self._keep_alive()
                continue
            if not self._pending:
                if self._stopping.is_set():
                    await self._commit(Batch(checkpoint=self._checkpoint()))
                    return
                self._has_pending.clear()
                continue
            if len(self._pending) < self.ami.batch_max and not self._stopping.is_set():
                await asyncio.sleep(self.ami.flush_interval_s)  # let a batch gather
            items = [self._pending.popleft()
                     for _ in range(min(len(self._pending), self.ami.batch_max))]
            await self._write(items)

    async def _keep_alive(self) -> None:
        """A quiet PBX sends nothing to store: the checkpoint still moves while connected, so
        an outage that follows is dated from when the listener really stopped hearing."""
        if self.connected.is_set() and not self._pending:
            await self._commit(Batch(checkpoint=self._checkpoint()))

    async def _write(self, items: list[_Item]) -> None:
        events: list[CallEvent] = []
        links: list[CallLink] = []
        stamps: list[float] = []
        for item in items:
            if isinstance(item, CallEvent):
                events.append(item)
                continue
            if isinstance(item, _Members):
                out = self.mapper.members_at(item.items, item.at)
            elif isinstance(item, _Rebuild):
                snapshot, stored = await item.ready
                out = self.mapper.calls_at(snapshot, stored, item.at)
                self.rebuilt.set()
            else:
                message, received_at = item
                out = self._map(message, received_at)
                stamps.append(_stamp(message, received_at))
            for warning in out.warnings:
                self.stats.warnings += 1
                log.warning("AMI %s", warning)
            events.extend(out.events)
            links.extend(out.links)
        # with nothing left waiting, everything heard so far is in this batch
        heard = _received_at(self._pending[0]) if self._pending else None
        result = await self._commit(Batch(events=events, links=links,
                                          checkpoint=self._checkpoint(heard)))
        now = time.time()
        self.stats.latencies.extend(now - stamp for stamp in stamps)
        self.stats.processed += len(stamps)
        self.stats.stored += result.stored
        self.stats.duplicates += result.duplicates
        self.stats.links += len(links)

    def _map(self, message: Message, received_at: float) -> Mapped:
        try:
            return self.mapper.map(message, received_at)
        except Exception:  # a mapping bug must cost one event, never the pipeline
            log.exception("AMI %s (Uniqueid %s): mapping failed; skipped",
                          message.get("Event"), message.get("Uniqueid", "-"))
            return Mapped()

    def _checkpoint(self, heard: float | None = None) -> Checkpoint:
        """The AMI stream's checkpoint: everything Asterisk sent before `updated_at` is
        stored (it never moves back). While disconnected nothing more is heard."""
        if heard is None:
            heard = time.time() if self.connected.is_set() else self._alive_until
        self._stored_until = max(self._stored_until, heard)
        return Checkpoint(self.stream, f"{self.ami.host}:{self.ami.port}", "", 0, 0,
                          self._stored_until)

    async def _commit(self, batch: Batch) -> WriteResult:
        """Write a batch. A transient failure (StoreUnavailable) is retried with backoff
        while the bounded queue keeps the socket read; any other failure is permanent: if
        the store still takes a write, the batch holds an event it refuses, found by halves
        and skipped; if not, StoreFailed."""
        delay, first_failure = 0.5, time.monotonic()
        while True:
            try:
                return await self.store.write(batch)
            except StoreUnavailable as exc:
                self.stats.write_retries += 1
                if self._stopping.is_set() and time.monotonic() - first_failure > STOP_GRACE_S:
                    raise StoreFailed(f"store unavailable at stop ({exc}): {len(batch.events)} "
                                      "events read from AMI not stored") from None
                log.error("store unavailable (%s): %d events wait; retrying in %.1f s",
                          exc, len(batch.events), delay)
                await self._back_off(delay)
                delay = min(delay * 2, WRITE_BACKOFF_MAX_S)
            except Exception as exc:  # the store's own errors and the backend's
                return await self._write_apart(batch, exc)

    async def _back_off(self, seconds: float) -> None:
        """Wait before a retry; a stop cuts it short (and then retries come every second,
        until the grace is over)."""
        if self._stopping.is_set():
            await asyncio.sleep(min(seconds, 1.0))
            return
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _write_apart(self, batch: Batch, error: Exception) -> WriteResult:
        try:
            await self.store.write(Batch(checkpoint=batch.checkpoint))
        except Exception as exc:
            log.error("store write failed (%s); an empty write fails too (%s): stopping",
                      error, exc)
            raise StoreFailed(f"the store refuses writes: {exc}") from None
        return await self._halves([*batch.events, *batch.links], error)

    async def _halves(self, items: list[CallEvent | CallLink], error: Exception) -> WriteResult:
        """Write `items` (whose write failed with `error`) in halves down to the one the
        store refuses, which is skipped with a warning."""
        if len(items) == 1:
            self.stats.rejected += 1
            log.warning("AMI %s refused by the store (%s); skipped", _describe(items[0]), error)
            return WriteResult()
        result = WriteResult()
        middle = len(items) // 2
        for part in (items[:middle], items[middle:]):
            batch = Batch(events=[i for i in part if isinstance(i, CallEvent)],
                          links=[i for i in part if isinstance(i, CallLink)])
            try:
                result.add(await self.store.write(batch))
            except StoreUnavailable:
                result.add(await self._commit(batch))
            except Exception as exc:
                result.add(await self._halves(part, exc))
        return result


def _received_at(item: _Item) -> float:
    if isinstance(item, CallEvent):
        return item.ts
    if isinstance(item, (_Members, _Rebuild)):
        return item.at
    return item[1]


def _stamp(message: Message, received_at: float) -> float:
    value = _number(message.get("Timestamp", ""))
    return value if value else received_at


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _describe(what: CallEvent | CallLink) -> str:
    if isinstance(what, CallEvent):
        return f"{what.kind} of call {what.call_id or '-'} at {what.ts}"
    return f"call link of channel {what.uniqueid}"


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
        except StoreFailed:
            log.error("AMI listener stopped: the store failed: %s", listener.stats.summary())
            raise
        finally:
            stopper.cancel()
