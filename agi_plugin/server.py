"""`AgiServer`: the asyncio FastAGI server that runs the survey, one task per connection.

FastAGI has no authentication: whoever reaches the port can drive a session. So it binds to
loopback by default, a non-loopback bind needs an allow-list of source addresses, and every
connection is bounded in time (the environment, each reply) so a silent or hostile peer
costs only its own task.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
from dataclasses import dataclass

from agi_plugin.protocol import AgiHangup, AgiProtocolError, script_name
from agi_plugin.session import ENV_TIMEOUT_S, MAX_LINE, AgiSession
from agi_plugin.survey import (
    PromptFailed,
    Question,
    SkipRules,
    Survey,
    UnknownCall,
    identify_call,
    load_questions,
)
from callkpi.config import Config, ConfigError
from callkpi.net import is_loopback
from callkpi.store import Store
from callkpi.store import open_store
from callkpi.service import summary_line

log = logging.getLogger(__name__)

SCRIPT = "csat"  # agi://host:port/csat
STOP_GRACE_S = 60.0  # on SIGTERM, running surveys get this long to finish (systemd allows 75)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class ServerStats:
    connections: int = 0
    refused: int = 0  # not on the allow-list
    dropped: int = 0  # no or a malformed environment, another script, an unknown call
    skipped: int = 0  # a skip rule said no
    surveys: int = 0  # surveys run (complete or not)
    answers: int = 0  # survey-answer events stored
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
    return allow, load_questions(config.survey)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class AgiServer:
    """`await start()`, then `await stop()` (e.g. on SIGTERM): stops accepting, lets running
    surveys finish within the grace time, cancels the rest."""

    def __init__(self, config: Config, store: Store, *, rng: random.Random | None = None,
                 env_timeout_s: float = ENV_TIMEOUT_S) -> None:
        self.config = config
        self.env_timeout_s = env_timeout_s
        self.store = store
        self.allow, questions = checked(config)
        gate = asyncio.Lock()  # one store connection: one transaction at a time
        self.survey = Survey(config.survey, questions, store, config.server.name, gate)
        self.skip = SkipRules(config.survey, store, config.server.name, gate, rng)
        self.stats = ServerStats()
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[asyncio.Task] = set()

    async def start(self) -> "AgiServer":
        self._server = await asyncio.start_server(
            self._accept, self.config.agi.bind, self.config.agi.port, limit=MAX_LINE,
            backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("FastAGI survey on %s:%d (%d questions)", self.config.agi.bind, self.port,
                 len(self.survey.questions))
        return self

    @property
    def running(self) -> int:
        """Sessions in progress."""
        return len(self._sessions)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if self._server is not None:
            self._server.close()
        running = set(self._sessions)
        if running:
            log.info("waiting up to %g s for %d running surveys", grace_s, len(running))
            _, late = await asyncio.wait(running, timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("cut %d surveys short at shutdown", len(late))
                await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        session = AgiSession(reader, writer)
        self.stats.connections += 1
        try:
            if self._allowed(writer):
                await self._serve(session)
        finally:
            self._sessions.discard(task)
            await session.close()

    def _allowed(self, writer: asyncio.StreamWriter) -> bool:
        if not self.allow:
            return True
        peer = writer.get_extra_info("peername")
        address = _address(str(peer[0])) if isinstance(peer, tuple) else None
        if address is not None and any(address in net for net in self.allow):
            return True
        self.stats.refused += 1
        log.warning("refused FastAGI connection from %s: not in [agi] allow", peer)
        return False

    async def _serve(self, session: AgiSession) -> None:
        try:
            await session.read_env(self.env_timeout_s)
        except AgiProtocolError as exc:
            self.stats.dropped += 1
            log.warning("%s: dropped: %s", session.peer, exc)
            return
        if script_name(session.env) != SCRIPT:
            self.stats.dropped += 1
            log.warning("%s: dropped: unknown script %r (this server runs %r)", session.peer,
                        script_name(session.env)[:40], SCRIPT)
            return
        try:
            await self._survey(session)
        except AgiHangup:
            log.info("%s: the caller hung up before the survey", session.peer)
        except (AgiProtocolError, PromptFailed) as exc:
            self.stats.errors += 1
            log.warning("%s: survey ended: %s", session.peer, exc)
        except Exception:  # a bug must cost one session, never the server
            self.stats.errors += 1
            log.exception("%s: survey failed", session.peer)

    async def _survey(self, session: AgiSession) -> None:
        try:
            call = await identify_call(session)
        except UnknownCall as exc:
            self.stats.dropped += 1
            log.warning("%s: dropped: %s", session.peer, exc)
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
            self.stats.answers = self.survey.answers


async def serve(config: Config, stop: asyncio.Event) -> ServerStats:
    """Run the survey server until `stop` is set (the `callkpi agi` command)."""
    checked(config)
    store = await open_store(config.store.db)
    async with store:
        server = AgiServer(config, store)
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
