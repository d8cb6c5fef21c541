"""A small fake AMI server for the tests and `bench/ami.py` (not for production).

It behaves as Asterisk 22 does where the listener depends on it: the banner line, Login with
an `Events:` class mask (events are filtered on their `Privilege:` classes), a failed login
answered `Response: Error` and the connection closed, Ping answered `Ping: Pong`,
FullyBooted at login to a session reading `system`, and the QueueStatus and Status event lists
(with what a test puts in `queue_members`, `queue_entries`, `channels`). A test can make it
stop answering Pings (a half-open peer), refuse Status, write raw bytes split anywhere, or drop
every connection.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ami_listener.manager import AmiParser

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
RECORDING = str(Path(__file__).parent / "recordings" / "all-scenarios.ami-raw.txt.gz")
_PRIVILEGE = re.compile(rb"\r\nPrivilege: ([^\r]*)")


@dataclass
class Client:
    writer: asyncio.StreamWriter
    mask: frozenset[str] = frozenset()
    logged_in: bool = False


@dataclass
class FakeAmi:
    username: str = "callkpi"
    secret: str = "secret"
    answer_pings: bool = True
    started_at: float = field(default_factory=time.time)  # FullyBooted's Uptime counts from it
    # what the QueueStatus and Status lists show, as Asterisk 22 writes their items
    queues: list[str] = field(default_factory=list)  # QueueParams (also those of members)
    queue_members: list[dict[str, str]] = field(default_factory=list)  # QueueMember items
    queue_entries: list[dict[str, str]] = field(default_factory=list)  # QueueEntry items
    channels: list[dict[str, str]] = field(default_factory=list)  # Status items
    status_allowed: bool = True  # False: Status refused, as for an account without reporting
    booted: bool = True  # False: just restarted, app_queue not loaded yet (see boot())
    logins: int = 0  # login attempts, accepted or not
    connections: int = 0
    actions: list[str] = field(default_factory=list)  # every action asked for, in order
    clients: list[Client] = field(default_factory=list)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _server: asyncio.AbstractServer | None = None
    port: int = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "FakeAmi":
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_all()
        # the connection handlers end on the aborted sockets; wait so none outlives the loop
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def drop_all(self) -> None:
        """Close every connection, as an Asterisk restart does."""
        for client in self.clients:
            client.writer.transport.abort()
        self.clients.clear()

    @property
    def logged_in(self) -> list[Client]:
        return [c for c in self.clients if c.logged_in]

    async def emit(self, block: bytes) -> None:
        """Send one event (its text without the final blank line) to every client whose
        event mask allows its Privilege classes."""
        classes = _classes(block)
        for client in self.logged_in:
            if classes & client.mask:
                client.writer.write(block + b"\r\n\r\n")
        for client in self.logged_in:
            await client.writer.drain()

    async def write_raw(self, data: bytes) -> None:
        """Bytes as they are (junk, half messages) to every logged-in client."""
        for client in self.logged_in:
            client.writer.write(data)
            await client.writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.current_task()
        assert handler is not None  # start_server runs every connection's handler as a task
        self._handlers.add(handler)
        client = Client(writer)
        self.clients.append(client)
        parser = AmiParser(kinds=("Action",))
        writer.write(BANNER)
        try:
            while data := await reader.read(65536):
                actions, _ = parser.feed(data)
                for action in actions:
                    if not await self._answer(client, action):
                        return
        except ConnectionError:
            pass
        finally:
            if client in self.clients:
                self.clients.remove(client)
            writer.transport.abort()
            self._handlers.discard(handler)

    async def _answer(self, client: Client, action: dict[str, str]) -> bool:
        """Answer one action; False closes the connection (as a failed login does)."""
        name = action.get("Action", "").lower()
        action_id = action.get("ActionID", "")
        self.actions.append(name)
        if name == "login":
            self.logins += 1
            if (action.get("Username"), action.get("Secret")) != (self.username, self.secret):
                self._respond(client, action_id, "Error", "Authentication failed")
                await client.writer.drain()
                return False
            client.mask = _mask(action.get("Events", "on"))
            client.logged_in = True
            self._respond(client, action_id, "Success", "Authentication accepted")
            if "system" in client.mask and self.booted:  # as manager.c: to `system` readers
                client.writer.write(self._fully_booted())
        elif name == "ping":
            if self.answer_pings:
                client.writer.write(
                    f"Response: Success\r\nActionID: {action_id}\r\nPing: Pong\r\n"
                    f"Timestamp: {time.time():.6f}\r\n\r\n".encode())
        elif name == "queuestatus" and not self.booted:
            self._respond(client, action_id, "Error", "Invalid/unknown command: QueueStatus.")
        elif name == "queuestatus":
            queues = dict.fromkeys([*self.queues, *(m["Queue"] for m in self.queue_members)])
            items = [*({"Event": "QueueParams", "Queue": q} for q in queues),
                     *({"Event": "QueueMember", **m} for m in self.queue_members),
                     *({"Event": "QueueEntry", **e} for e in self.queue_entries)]
            self._list(client, action_id, "Queue status will follow", items,
                       "QueueStatusComplete")
        elif name == "status" and self.status_allowed:
            self._list(client, action_id, "Channel status will follow",
                       [{"Event": "Status", "Privilege": "Call", **c} for c in self.channels],
                       "StatusComplete")
        elif name == "status":
            self._respond(client, action_id, "Error", "Permission denied")
        elif name == "logoff":
            self._respond(client, action_id, "Goodbye", "Thanks for all the fish.")
            return False
        else:
            self._respond(client, action_id, "Error", "Invalid/unknown command")
        await client.writer.drain()
        return True

    def _list(self, client: Client, action_id: str, message: str, items: list[dict[str, str]],
              complete: str) -> None:
        """An event-list answer, as astman_send_listack ... astman_send_list_complete."""
        client.writer.write(_message({"Response": "Success", "ActionID": action_id,
                                      "EventList": "start", "Message": message}))
        for item in items:
            client.writer.write(_message({**item, "ActionID": action_id}))
        client.writer.write(_message({"Event": complete, "ActionID": action_id,
                                      "EventList": "Complete", "ListItems": str(len(items))}))

    async def boot(self) -> None:
        """Asterisk finishes booting: FullyBooted to every `system` reader, queues loaded."""
        self.booted = True
        await self.emit(self._fully_booted().rstrip(b"\r\n"))

    def _fully_booted(self) -> bytes:
        return _message({"Event": "FullyBooted", "Privilege": "system,all",
                         "Uptime": str(int(time.time() - self.started_at)), "LastReload": "0",
                         "Status": "Fully Booted"})

    def _respond(self, client: Client, action_id: str, response: str, message: str) -> None:
        client.writer.write(_message({"Response": response, "ActionID": action_id,
                                      "Message": message}))


def _message(fields: dict[str, str]) -> bytes:
    """One message; a value with line feeds is a repeated header (Status's `Variable`)."""
    return "".join(f"{key}: {part}\r\n" for key, value in fields.items()
                   for part in value.split("\n")).encode() + b"\r\n"


ALL_CLASSES = frozenset({"system", "call", "log", "verbose", "command", "agent", "user",
                         "config", "dtmf", "reporting", "cdr", "dialplan", "originate",
                         "agi", "cc", "aoc", "test", "security", "message"})


def _mask(events: str) -> frozenset[str]:
    value = events.strip().lower()
    if value in ("on", "yes", "all", "true"):
        return ALL_CLASSES
    if value in ("off", "no", "false", ""):
        return frozenset()
    return frozenset(part.strip() for part in value.split(","))


def _classes(block: bytes) -> frozenset[str]:
    found = _PRIVILEGE.search(block)
    if found is None:
        return ALL_CLASSES  # an event without Privilege goes to everyone
    return frozenset(found.group(1).decode().split(",")) - {"all"}


def recorded_events(path: str = RECORDING) -> list[bytes]:
    """The events of a raw AMI recording (`# rx=` comment lines dropped), each without its
    final blank line, ready for `FakeAmi.emit`."""
    text = gzip.open(path).read().replace(b"\r\n", b"\n")
    blocks = []
    for block in text.split(b"\n\n"):
        lines = [line for line in block.split(b"\n") if line and not line.startswith(b"# rx=")]
        if lines:
            blocks.append(b"\r\n".join(lines))
    return blocks
