"""`AgiServer`: the asyncio FastAGI server that runs the survey, one task per connection.

FastAGI has no authentication: whoever reaches the port can drive a session. So it binds to
loopback by default, a non-loopback bind needs an allow-list of source addresses, and whatever
connects costs only what it is allowed:
- time: the environment and each reply have deadlines (session.py);
- connections: at most [agi] max_connections open, max_per_peer from one address, and never
  more than the open-files limit leaves room for (accept() failing for want of a descriptor
  makes asyncio log a traceback per try and stop accepting for a second: a stall for every
  caller). At a limit, the oldest connection in that scope still without its environment is
  closed to make room (Asterisk sends its environment the moment it connects: a connection
  without one is idle or hostile, never a caller waiting for a prompt); with none, the new
  connection is closed at once;
- memory: the environment (16 KiB) and each line (8 KiB) are bounded;
- the log: a line a peer can make repeat is written at most once a minute (RateLimitedLog).
Answers go to the spool and reach the store behind the callers (spool.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import resource
import socket
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from agi_plugin.protocol import AgiHangup, AgiProtocolError, script_name
from agi_plugin.ratelog import RateLimitedLog
from agi_plugin.session import ENV_TIMEOUT_S, MAX_LINE, AgiSession, format_peer
from agi_plugin.spool import AnswerWriter, Spool, spool_dir
from agi_plugin.survey import (
    PromptFailed,
    Question,
    SkipRules,
    Survey,
    UnknownCall,
    identify_call,
    load_questions,
)
from callkpi.config import AgiConfig, Config, ConfigError
from callkpi.net import is_loopback
from callkpi.store import Store
from callkpi.store import open_store
from callkpi.service import summary_line

log = logging.getLogger(__name__)

SCRIPT = "csat"  # agi://host:port/csat
STOP_GRACE_S = 60.0  # on SIGTERM, running surveys get this long to finish (systemd allows 75)
WRITE_GRACE_S = 10.0  # then the writer this long to put their answers in the store
BACKLOG = 1024  # connections the kernel queues while the server is busy
RESERVED_FDS = 64  # descriptors besides the sessions: the store, the spool, the loop, stdio
ACCEPT_RETRY_S = 0.1  # after accept() failed for want of a descriptor taken elsewhere

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class ServerStats:
    connections: int = 0
    refused: int = 0  # not on the allow-list
    dropped: int = 0  # no or a malformed environment, another script, an unknown call
    skipped: int = 0  # a skip rule said no
    over_limit: int = 0  # closed to keep within max_connections / max_per_peer
    surveys: int = 0  # surveys run (complete or not)
    answers: int = 0  # survey answers recorded (in the spool at once)
    stored: int = 0  # survey answers the store took
    errors: int = 0  # protocol errors and failed prompts mid-survey

    def summary(self) -> str:
        return summary_line(self)


def parse_allow(entries: list[str]) -> list[Network]:
    """IPs or CIDRs -> networks; ConfigError names a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"[agi] allow: not an IP address or network: {entry!r}") from None
    return networks


def check_bind(bind: str, allow: list[Network]) -> None:
    """A non-loopback bind without an allow-list would let anyone write survey answers."""
    if not allow and not is_loopback(bind):
        raise ConfigError(f"[agi] bind {bind} is not loopback: FastAGI has no authentication, "
                          "so set [agi] allow (or --allow) to the addresses of your Asterisk")


def checked(config: Config) -> tuple[list[Network], list[Question]]:
    """The allow-list and the questions, or ConfigError before anything is opened."""
    allow = parse_allow(config.agi.allow)
    check_bind(config.agi.bind, allow)
    for key in ("max_connections", "max_per_peer"):
        if getattr(config.agi, key) < 1:
            raise ConfigError(f"[agi] {key} must be at least 1, got {getattr(config.agi, key)}")
    spool_dir(config)
    return allow, load_questions(config.survey)


def raise_open_files_limit() -> None:
    """The soft limit on open files up to the hard one (no privilege needed): systemd's default
    soft limit of 1,024 would otherwise cap the connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65_536
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # connection_limits() works with what there is


def connection_limits(config: AgiConfig) -> tuple[int, int]:
    """(total, per peer): as configured, lowered to what the open-files limit has room for."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = config.max_connections if soft == resource.RLIM_INFINITY else soft - RESERVED_FDS
    total = max(1, min(config.max_connections, room))
    if total < config.max_connections:
        log.warning("[agi] max_connections %d lowered to %d: this process may open only %d "
                    "files (raise LimitNOFILE in the unit)", config.max_connections, total, soft)
    return total, min(config.max_per_peer, total)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@dataclass(eq=False)
class _Connection:
    """An admitted connection, counted against the limits from accept() to its close."""

    host: str  # the peer's address: the unit of max_per_peer
    session: AgiSession | None = None  # once its socket is a stream
    task: asyncio.Task[None] | None = None
    evicted: bool = False

    def close_now(self) -> None:
        self.evicted = True
        if self.session is not None:
            self.session.writer.transport.abort()  # its read_env ends: connection closed


class AgiServer:
    """`await start()`, then `await stop()` (e.g. on SIGTERM): stops accepting, lets running
    surveys finish within the grace time, cancels the rest, writes their answers."""

    def __init__(self, config: Config, store: Store, *, rng: random.Random | None = None,
                 env_timeout_s: float = ENV_TIMEOUT_S) -> None:
        self.config = config
        self.env_timeout_s = env_timeout_s
        self.store = store
        self.allow, questions = checked(config)
        self.limited = RateLimitedLog(log)
        self.writer = AnswerWriter(Spool(spool_dir(config)), store, self.limited)
        self.survey = Survey(config.survey, questions, self.writer, config.server.name)
        self.skip = SkipRules(config.survey, store, config.server.name, self.limited, rng)
        self.stats = ServerStats()
        self.port = 0
        self.max_connections, self.max_per_peer = config.agi.max_connections, \
            config.agi.max_per_peer
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._open: set[_Connection] = set()
        self._per_peer: Counter[str] = Counter()
        self._without_env: OrderedDict[_Connection, None] = OrderedDict()  # oldest first

    async def start(self) -> "AgiServer":
        self.max_connections, self.max_per_peer = connection_limits(self.config.agi)
        self.writer.start()
        try:
            self._listener = await _listen(self.config.agi.bind, self.config.agi.port)
        except BaseException:
            await self.writer.stop(WRITE_GRACE_S)
            raise
        self.port = self._listener.getsockname()[1]
        self._acceptor = asyncio.create_task(self._accept_loop(self._listener),
                                             name="FastAGI accept")
        log.info("FastAGI survey on %s:%d (%d questions, at most %d connections, %d per "
                 "peer)", self.config.agi.bind, self.port, len(self.survey.questions),
                 self.max_connections, self.max_per_peer)
        return self

    @property
    def running(self) -> int:
        """Sessions in progress."""
        return len(self._sessions)

    async def stored_all(self) -> None:
        """Return once every answer recorded so far is in the store."""
        await self.writer.stored_all()

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if self._acceptor is not None:
            self._acceptor.cancel()
            await asyncio.gather(self._acceptor, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        idle = list(self._without_env)  # no environment yet: no caller is waiting on these
        for connection in idle:
            self._release(connection)
            connection.close_now()
        if idle:
            log.info("closed %d connections that had sent no environment", len(idle))
        closing = {c.task for c in idle if c.task is not None}
        running = self._sessions - closing
        if running:
            log.info("waiting up to %g s for %d running surveys", grace_s, len(running))
            _, late = await asyncio.wait(running, timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("cut %d surveys short at shutdown", len(late))
                await asyncio.gather(*late, return_exceptions=True)
        await asyncio.gather(*closing, return_exceptions=True)
        await self.writer.stop(WRITE_GRACE_S)
        self._count_answers()
        self.limited.flush()

    async def _accept_loop(self, listener: socket.socket) -> None:
        """One connection at a time, decided at once: a connection refused or over a limit is
        closed before the next accept(), so descriptors never run out in a flood."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as exc:  # descriptors taken by something else: say so, try again
                self.limited.log(logging.ERROR, "accept", "cannot accept FastAGI connections: "
                                 "%s", exc.strerror or exc)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            self.stats.connections += 1
            connection = _Connection(_host(address))
            if self._allowed(connection, address) and self._admit(connection, address):
                task = connection.task = asyncio.create_task(self._session(connection, sock))
                self._sessions.add(task)
                task.add_done_callback(self._sessions.discard)
            else:
                sock.close()
            await asyncio.sleep(0)  # the sockets evictions aborted close before the next one

    async def _session(self, connection: _Connection, sock: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_LINE)
        except OSError:
            sock.close()
            self._release(connection)
            return
        session = connection.session = AgiSession(reader, writer)
        try:
            if not connection.evicted:
                await self._serve(session, connection)
        finally:
            self._release(connection)
            await session.close()

    def _allowed(self, connection: _Connection, address: Any) -> bool:
        if not self.allow:
            return True
        ip = _address(connection.host)
        if ip is not None and any(ip in net for net in self.allow):
            return True
        self.stats.refused += 1
        self.limited.log(logging.WARNING, "refused", "refused FastAGI connection from %s: not "
                         "in [agi] allow", format_peer(address))
        return False

    def _admit(self, connection: _Connection, address: Any) -> bool:
        """Room for one more connection, made by closing the oldest connection without its
        environment (of that peer for max_per_peer, of any for max_connections) if need be."""
        host = connection.host
        if self.max_per_peer < self.max_connections \
                and self._per_peer[host] >= self.max_per_peer and not self._evict(host):
            return self._over_limit(address, f"{self._per_peer[host]} open from {host}, "
                                              f"[agi] max_per_peer is {self.max_per_peer}")
        if len(self._open) >= self.max_connections and not self._evict(None):
            return self._over_limit(address, f"{len(self._open)} open, [agi] max_connections "
                                              f"is {self.max_connections}")
        self._open.add(connection)
        self._per_peer[host] += 1
        self._without_env[connection] = None
        return True

    def _evict(self, host: str | None) -> bool:
        for old in self._without_env:
            if host is None or old.host == host:
                self._release(old)
                old.close_now()
                self.stats.over_limit += 1
                self.limited.log(logging.WARNING, "evicted", "%s: closed without its "
                                 "environment to make room for a new connection",
                                 old.session.peer if old.session else old.host)
                return True
        return False

    def _over_limit(self, address: Any, why: str) -> bool:
        self.stats.over_limit += 1
        self.limited.log(logging.WARNING, "over-limit", "%s: FastAGI connection closed: %s",
                         format_peer(address), why)
        return False

    def _release(self, connection: _Connection) -> None:
        if connection in self._open:
            self._open.discard(connection)
            self._per_peer[connection.host] -= 1
            if not self._per_peer[connection.host]:
                del self._per_peer[connection.host]
        self._without_env.pop(connection, None)

    async def _serve(self, session: AgiSession, connection: _Connection) -> None:
        try:
            await session.read_env(self.env_timeout_s)
        except AgiProtocolError as exc:
            if connection.evicted:
                return  # counted and logged by _evict
            self.stats.dropped += 1
            self.limited.log(logging.WARNING, "dropped-env", "%s: dropped: %s", session.peer,
                             exc)
            return
        finally:
            self._without_env.pop(connection, None)
        if script_name(session.env) != SCRIPT:
            self.stats.dropped += 1
            self.limited.log(logging.WARNING, "dropped-script", "%s: dropped: unknown script "
                             "%r (this server runs %r)", session.peer,
                             script_name(session.env)[:40], SCRIPT)
            return
        try:
            await self._survey(session)
        except AgiHangup:
            log.info("%s: the caller hung up before the survey", session.peer)
        except (AgiProtocolError, PromptFailed) as exc:
            self.stats.errors += 1
            self.limited.log(logging.WARNING, "survey-ended", "%s: survey ended: %s",
                             session.peer, exc)
        except Exception:  # a bug must cost one session, never the server
            self.stats.errors += 1
            self.limited.log(logging.ERROR, "survey-failed", "%s: survey failed", session.peer,
                             exc_info=True)

    async def _survey(self, session: AgiSession) -> None:
        try:
            call = await identify_call(session)
        except UnknownCall as exc:
            self.stats.dropped += 1
            self.limited.log(logging.WARNING, "dropped-call", "%s: dropped: %s", session.peer,
                             exc)
            return
        reason = await self.skip.reason(call)
        if reason:
            self.stats.skipped += 1
            log.info("%s: call %s not surveyed: %s", session.peer, call.call_id, reason)
            return
        self.stats.surveys += 1
        try:
            await self.survey.run(session, call)
        finally:
            self._count_answers()

    def _count_answers(self) -> None:
        self.stats.answers, self.stats.stored = self.writer.recorded, self.writer.stored


async def _listen(host: str, port: int) -> socket.socket:
    """The listening socket (non-blocking), as asyncio.start_server makes it."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _host(address: Any) -> str:
    """A peer's address as the unit of max_per_peer (an IPv4 client of a dual-stack socket
    counts as its IPv4 address)."""
    host = str(address[0]) if isinstance(address, tuple) and address else str(address)
    ip = _address(host)
    return str(ip) if ip is not None else host


def _quiet_loop_errors(limited: RateLimitedLog) -> None:
    """What asyncio reports itself (a transport error, a failing callback) goes through the
    rate limit too: its own handler writes a traceback every time. An OSError is one line;
    anything else, a bug, keeps its traceback."""
    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "asyncio error"))
        exc = context.get("exception")
        limited.log(logging.ERROR, "loop:" + message, "%s%s", message,
                    f": {type(exc).__name__}: {exc}" if exc else "",
                    exc_info=None if exc is None or isinstance(exc, OSError) else exc)

    asyncio.get_running_loop().set_exception_handler(handler)


async def serve(config: Config, stop: asyncio.Event) -> ServerStats:
    """Run the survey server until `stop` is set (the `callkpi agi` command)."""
    checked(config)
    raise_open_files_limit()
    store = await open_store(config.store.db)
    async with store:
        server = AgiServer(config, store)
        _quiet_loop_errors(server.limited)
        try:
            await server.start()
        except OSError as exc:  # the address is taken, not ours, or a privileged port
            # the system's words for it: asyncio's message repeats the address
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(f"[agi] cannot listen on {config.agi.bind}:{config.agi.port}: "
                              f"{reason}") from None
        try:
            await stop.wait()
        finally:
            await server.stop()
    return server.stats
