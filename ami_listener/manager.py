"""The AMI wire protocol: a pure parser (`AmiParser`) and one TCP connection (`AmiConnection`).

Why not panoramisk 1.4 (the last release)? Measured here, a long-running listener is bitten by
its defects in nearly every method: a dead half-open peer is never detected (Ping never checks
for a Pong); a callback that raises drops the connection and the rest of that TCP chunk; each
chunk is decoded with errors='ignore', so a multi-byte caller-ID character split across two
segments disappears; close() does not stop a pending reconnect; a rejected login is silent and
retried forever; send_action before the first connect raises AttributeError; a trailing empty
header is dropped. A subclass fixing all of that overrides every method of `Manager` and
`AMIProtocol` and still drags in their module state, so this is a small protocol of our own:
`tests/test_ami_panoramisk.py` runs each of those scenarios against panoramisk (expected to
fail) and against this module. Reconnecting, backoff and ping scheduling live in
`listener.Listener`, which owns the life cycle across connections.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from callkpi.errors import UserError

log = logging.getLogger(__name__)

TERMINATOR = b"\r\n\r\n"
BANNER = b"Asterisk Call Manager/"
# Bounds that keep a broken or hostile peer from eating memory: a message that never ends is
# skipped once it is this big, and a header value is cut to this length (both with a warning).
MAX_MESSAGE_BYTES = 1 << 20
MAX_VALUE_CHARS = 8192
EX_CONFIG = 78  # exit status of an error only an admin can fix (the unit does not restart)

Message = dict[str, str]
EventCallback = Callable[[Message, float], None]


class Junk(NamedTuple):
    """Input that is not a well-formed AMI message, with where it was in the stream."""

    offset: int  # byte offset of the message in the connection's stream
    message_no: int  # 1-based number of the message in the stream
    reason: str
    sample: str  # the start of the offending text, for the log

    def describe(self, origin: str) -> str:
        return (f"{origin} message #{self.message_no} at byte {self.offset}: {self.reason}: "
                f"{self.sample!r}")


class AmiParser:
    """Bytes in, messages out. Frames on the blank line *before* decoding, so a multi-byte
    character split across TCP segments is decoded whole; undecodable bytes become U+FFFD."""

    def __init__(self, kinds: tuple[str, ...] = ("Event", "Response")) -> None:
        self._kinds = kinds  # a message needs one of these headers (a server reads "Action")
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._count = 0
        self._skipping = False  # inside an oversized message, dropping up to its end
        self.banner: str | None = None

    def feed(self, data: bytes) -> tuple[list[Message], list[Junk]]:
        buf = self._buf
        buf += data
        messages: list[Message] = []
        junk: list[Junk] = []
        if self.banner is None and not self._read_banner():
            return messages, junk
        start = 0
        while (end := buf.find(TERMINATOR, start)) != -1:
            block = bytes(buf[start:end])
            offset = self._offset + start
            start = end + len(TERMINATOR)
            if self._skipping:
                self._skipping = False
                continue
            if block:
                self._count += 1
                self._parse(block, offset, messages, junk)
        del buf[:start]
        self._offset += start
        if len(buf) > MAX_MESSAGE_BYTES and not self._skipping:
            self._count += 1
            junk.append(Junk(self._offset, self._count,
                             f"message longer than {MAX_MESSAGE_BYTES} bytes skipped",
                             bytes(buf[:80]).decode("utf-8", "replace")))
            self._skipping = True
        if self._skipping and len(buf) > len(TERMINATOR):
            # Keep only a possible partial terminator: the oversized message is dropped.
            drop = len(buf) - len(TERMINATOR)
            del buf[:drop]
            self._offset += drop
        return messages, junk

    def _read_banner(self) -> bool:
        """The first line is `Asterisk Call Manager/<version>` with a single CRLF."""
        buf = self._buf
        if len(buf) < len(BANNER) and BANNER.startswith(bytes(buf)):
            return False
        if not buf.startswith(BANNER):
            self.banner = ""  # no banner: parse messages from the first byte
            return True
        end = buf.find(b"\r\n")
        if end == -1:
            return False
        self.banner = bytes(buf[len(BANNER):end]).decode("utf-8", "replace").strip()
        del buf[:end + 2]
        self._offset += end + 2
        return True

    def _parse(self, block: bytes, offset: int, messages: list[Message],
               junk: list[Junk]) -> None:
        text = block.decode("utf-8", "replace")
        message: Message = {}
        for line in text.split("\r\n"):
            key, sep, value = line.partition(":")
            if not sep or not key or " " in key:
                junk.append(Junk(offset, self._count, "line is not 'Key: value'", line[:80]))
                continue
            if value[:1] == " ":
                value = value[1:]  # "Key: " is a header with an empty value, kept
            if len(value) > MAX_VALUE_CHARS:
                junk.append(Junk(offset, self._count,
                                 f"{key} value of {len(value)} chars cut to {MAX_VALUE_CHARS}",
                                 value[:80]))
                value = value[:MAX_VALUE_CHARS]
            # a repeated header (Status's `Variable: NAME=value`, ChanVariable) keeps every
            # value, one per line
            message[key] = f"{message[key]}\n{value}" if key in message else value
        if any(kind in message for kind in self._kinds):
            messages.append(message)
        elif message:
            junk.append(Junk(offset, self._count, f"message has no {' or '.join(self._kinds)}",
                             text[:80]))


class AmiError(UserError):
    """AMI refused or failed an action; the message is meant for the user."""


class LoginError(AmiError):
    """The AMI account was rejected: retrying with the same credentials cannot help."""

    exit_code = EX_CONFIG


class NotAmi(AmiError):
    """The port answered, but not as AMI does: the configured port is wrong."""

    exit_code = EX_CONFIG


class NotConnected(ConnectionError):
    """An action was sent on a connection that is not (or no longer) open."""


class Silent(ConnectionError):
    """The peer accepted the connection and sent nothing (a hung Asterisk, or not AMI)."""


@dataclass
class _Listing:
    """The items of an event-list answer (QueueStatus, Status) as they arrive."""

    items: list[Message]
    complete: asyncio.Future[None]
    on_complete: Callable[[list[Message]], None] | None  # called where the list ends


class AmiConnection(asyncio.Protocol):
    """One TCP connection to AMI, from connect and login to close.

    Open with `await AmiConnection.open(...)`. Events go to `on_event(message, received_at)`
    in stream order; an exception there is logged with where it happened and the connection
    and the rest of the chunk carry on. `closed` resolves (with the reason, or None) when the
    connection ends, whoever ends it.
    """

    _action_ids = itertools.count(1)

    def __init__(self, on_event: EventCallback, *, origin: str = "ami") -> None:
        self.origin = origin
        self._on_event = on_event
        self._parser = AmiParser()
        self._transport: asyncio.Transport | None = None
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._lists: dict[str, _Listing] = {}
        self.closed: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.last_received = 0.0
        self._not_ami: NotAmi | None = None  # what the peer sent instead of the AMI banner
        # Asterisk's FullyBooted (at login when booted, else when it is: to a session reading
        # `system`); before it, app_queue may not be loaded yet ("Invalid/unknown command")
        self.fully_booted = asyncio.Event()

    @classmethod
    async def open(cls, host: str, port: int, *, username: str, secret: str, events: str,
                   on_event: EventCallback, timeout: float = 10.0) -> "AmiConnection":
        """Connect and log in; raises OSError/TimeoutError (retry) or LoginError/NotAmi
        (don't: an admin has to fix the account or the port)."""
        loop = asyncio.get_running_loop()
        origin = f"{host}:{port}"
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: cls(on_event, origin=origin), host, port), timeout)
        try:
            await conn.login(username, secret, events, timeout=timeout)
        except asyncio.TimeoutError:
            conn.close()
            if not conn.last_received:
                raise Silent(f"{origin} accepted the connection but sent nothing within "
                             f"{timeout:g} s (a hung Asterisk, or not its AMI port?)") from None
            raise
        except BaseException:
            conn.close()
            raise
        return conn

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        received_at = time.time()
        self.last_received = received_at
        before_banner = self._parser.banner is None
        messages, junk = self._parser.feed(data)
        if before_banner and self._parser.banner == "":
            sample = data[:60].decode("utf-8", "replace")
            self._not_ami = NotAmi(f"{self.origin} is not an AMI port: it answered {sample!r} "
                                   "where Asterisk sends 'Asterisk Call Manager/...'")
            self._fail(self._not_ami)
            return
        for item in junk:
            log.warning("AMI junk from %s", item.describe(self.origin))
        for message in messages:
            action_id = message.get("ActionID", "")
            if "Response" in message and action_id in self._pending:
                future = self._pending.pop(action_id)
                if not future.done():
                    future.set_result(message)
            elif "Event" in message and action_id in self._lists:
                listing = self._lists[action_id]
                if message.get("EventList") == "Complete":
                    if listing.on_complete is not None:
                        listing.on_complete(listing.items)
                    if not listing.complete.done():
                        listing.complete.set_result(None)
                else:
                    listing.items.append(message)
            elif "Event" in message:
                if message["Event"] == "FullyBooted":
                    self.fully_booted.set()
                self._dispatch(message, received_at)

    def _dispatch(self, message: Message, received_at: float) -> None:
        try:
            self._on_event(message, received_at)
        except Exception:
            log.exception("AMI event %s (Uniqueid %s) from %s: handler failed; continuing",
                          message.get("Event"), message.get("Uniqueid", "-"), self.origin)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(NotConnected(f"AMI connection to {self.origin} closed"))
        if not self.closed.done():
            self.closed.set_result(str(exc) if exc else None)

    def _fail(self, exc: Exception) -> None:
        """Every action still waiting gets `exc`; the connection is dropped."""
        waiting: list[asyncio.Future[Any]] = [*self._pending.values(),
                                              *(x.complete for x in self._lists.values())]
        self._pending.clear()
        for future in waiting:
            if not future.done():
                future.set_exception(exc)
        self.abort()

    # ------------------------------------------------------------ actions
    def send_action(self, action: dict[str, str]) -> asyncio.Future[Message]:
        """Send an action; the future gets its (first) response message."""
        return self._send(action, f"callkpi-{next(self._action_ids)}")

    def _send(self, action: dict[str, str], action_id: str) -> asyncio.Future[Message]:
        if self._not_ami is not None:
            raise self._not_ami
        if self._transport is None or self._transport.is_closing():
            raise NotConnected(f"AMI connection to {self.origin} is not open")
        lines = [f"{key}: {value}" for key, value in {**action, "ActionID": action_id}.items()]
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("an AMI action header cannot contain a line break")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        self._transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        return future

    async def list_action(self, action: dict[str, str], timeout: float,
                          on_complete: Callable[[list[Message]], None] | None = None
                          ) -> list[Message]:
        """Send an action Asterisk answers with an event list (QueueStatus, Status) and return
        the list's items; `on_complete(items)` is called where the list ends, before any event
        that follows it goes to `on_event`. Raises AmiError when it is refused, TimeoutError,
        NotConnected."""
        action_id = f"callkpi-{next(self._action_ids)}"
        listing = _Listing([], asyncio.get_running_loop().create_future(), on_complete)
        self._lists[action_id] = listing
        try:
            response = await asyncio.wait_for(self._send(action, action_id), timeout)
            if response.get("Response") != "Success":
                raise AmiError(f"AMI {action.get('Action')} refused by {self.origin}: "
                               f"{response.get('Message', 'no reason given')}")
            await asyncio.wait_for(listing.complete, timeout)
            return listing.items
        finally:
            del self._lists[action_id]
            if not listing.complete.done():
                listing.complete.cancel()
            elif not listing.complete.cancelled():
                listing.complete.exception()  # seen: the failure was raised another way

    async def login(self, username: str, secret: str, events: str, *, timeout: float) -> None:
        response = await asyncio.wait_for(
            self.send_action({"Action": "Login", "Username": username, "Secret": secret,
                              "Events": events}), timeout)
        if response.get("Response") != "Success":
            # Asterisk says only "Authentication failed"; never echo the secret.
            raise LoginError(f"AMI login as {username!r} on {self.origin} rejected: "
                             f"{response.get('Message', 'no reason given')}")

    async def ping(self, timeout: float) -> None:
        """Raise TimeoutError unless the peer answers a Ping within `timeout` seconds."""
        await asyncio.wait_for(self.send_action({"Action": "Ping"}), timeout)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once (a dead peer never acknowledges a graceful close)."""
        if self._transport is not None:
            self._transport.abort()
