"""A small asyncio AMI client for the simulator: log in, send actions, receive events.

The simulator is test tooling that must not depend on the listener under test, so it speaks
the AMI protocol itself (one message = "Key: value" lines ended by a blank line). Responses
are matched to actions by ActionID; every event goes to `on_event`. `capture`, when given,
receives the protocol text exactly as it arrived (the examples/ AMI capture is written so).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Callable, TextIO

from callkpi.errors import UserError

Message = dict[str, str]


class AmiError(UserError):
    """The AMI connection failed, was refused or closed."""


class AmiClient:
    def __init__(self, host: str, port: int, username: str, secret: str, *,
                 events: str = "call,agent,user",
                 on_event: Callable[[Message], None] | None = None,
                 capture: TextIO | None = None) -> None:
        self.host, self.port = host, port
        self._username, self._secret, self._events = username, secret, events
        self.on_event = on_event
        self.capture = capture
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1)
        self._read_task: asyncio.Task[None] | None = None

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect and log in; AmiError if the PBX is unreachable or refuses the login."""
        try:
            reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=2**20), timeout)
            self._reader = reader
            banner = await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise AmiError(f"cannot reach AMI at {self.host}:{self.port}: {exc}") from None
        if not banner.startswith(b"Asterisk Call Manager/"):
            raise AmiError(f"{self.host}:{self.port} is not an AMI port")
        self._record(banner.decode("utf-8", "replace"))
        self._read_task = asyncio.create_task(self._read_loop())
        reply = await self.action("Login", Username=self._username, Secret=self._secret,
                                  Events=self._events)
        if reply.get("Response") != "Success":
            await self.close()
            raise AmiError(f"AMI login as {self._username!r} refused: {reply.get('Message', '')}")

    async def action(self, name: str, *, timeout: float = 10.0, action_id: str = "",
                     **headers: str | list[str]) -> Message:
        """Send an action and return its response (list values repeat the header).
        Events the action causes (e.g. OriginateResponse) carry `action_id` when given."""
        if self._writer is None or self._writer.is_closing():
            raise AmiError("AMI connection is closed")
        action_id = action_id or f"sim-{next(self._ids)}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        for key, value in headers.items():
            lines += [f"{key}: {v}" for v in value] if isinstance(value, list) else [f"{key}: {value}"]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            await self._writer.drain()
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise AmiError(f"no response to AMI {name} within {timeout} s") from None
        finally:
            self._pending.pop(action_id, None)

    async def close(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            try:
                await self.action("Logoff", timeout=2)
            except AmiError:
                pass
            self._writer.close()
        if self._read_task is not None:
            self._read_task.cancel()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        lines: list[str] = []
        try:
            while raw := await self._reader.readline():
                line = raw.decode("utf-8", "replace")
                self._record(line)
                line = line.rstrip("\r\n")
                if line:
                    lines.append(line)
                elif lines:
                    self._dispatch(parse_message(lines))
                    lines = []
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(AmiError("AMI connection closed"))

    def _dispatch(self, message: Message) -> None:
        if "Event" in message:
            if self.on_event is not None:
                self.on_event(message)
        elif (future := self._pending.get(message.get("ActionID", ""))) and not future.done():
            future.set_result(message)

    def _record(self, text: str) -> None:
        if self.capture is not None:
            self.capture.write(text)


def parse_message(lines: list[str]) -> Message:
    """`Key: value` lines -> dict; the first of repeated keys wins (the simulator needs no lists)."""
    message: Message = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            message.setdefault(key.strip(), value.strip())
    return message
