"""`AgiSession`: one FastAGI connection. It reads the environment and runs commands one at a
time, each with a deadline, so a silent or slow peer costs only its own session."""

from __future__ import annotations

import asyncio
import logging

from agi_plugin.protocol import (
    MAX_ENV_BYTES,
    MAX_ENV_LINES,
    AgiHangup,
    AgiProtocolError,
    Reply,
    ReplyReader,
    parse_env,
)

log = logging.getLogger(__name__)

ENV_TIMEOUT_S = 10.0  # Asterisk sends the environment at once; a silent peer is not Asterisk
REPLY_TIMEOUT_S = 15.0  # commands that play nothing (GET VARIABLE, SEND TEXT, ANSWER)
CLOSE_TIMEOUT_S = 5.0
MAX_LINE = 8192  # the servers' stream limit: an environment value or a reply is short


class AgiSession:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.peer = format_peer(writer.get_extra_info("peername"))
        self.env: dict[str, str] = {}
        self._replies = ReplyReader()

    @property
    def hung_up(self) -> bool:
        return self._replies.hung_up

    async def read_env(self, timeout_s: float = ENV_TIMEOUT_S) -> dict[str, str]:
        """Read the environment block; AgiProtocolError if it is late, cut short or not AGI."""
        lines: list[str] = []
        size = 0
        try:
            async with asyncio.timeout(timeout_s):
                while line := await self._readline():
                    lines.append(line)
                    size += len(line) + 1
                    if len(lines) > MAX_ENV_LINES or size > MAX_ENV_BYTES:  # parse_env says so
                        break
        except TimeoutError:
            raise AgiProtocolError(f"no complete AGI environment within {timeout_s:g} s "
                                   f"({len(lines)} lines)") from None
        except AgiHangup:
            raise AgiProtocolError(f"connection closed after {len(lines)} environment lines"
                                   ) from None
        self.env = parse_env(lines)
        return self.env

    async def command(self, text: str, timeout_s: float = REPLY_TIMEOUT_S) -> Reply:
        """Send one command and return its reply. AgiHangup when the caller is gone;
        AgiProtocolError for 510/520 replies, garbage or no reply in time."""
        if self.hung_up:
            raise AgiHangup("the caller hung up")
        try:
            async with asyncio.timeout(timeout_s):  # a peer that stops reading is late too
                self.writer.write(text.encode() + b"\n")
                await self.writer.drain()
                reply = await self._reply()
        except ConnectionError:
            raise AgiHangup("connection lost") from None
        except TimeoutError:
            raise AgiProtocolError(f"no reply to {_verb(text)} within {timeout_s:g} s") from None
        log.debug("%s: %s -> %s", self.peer, text, reply.raw)
        if reply.code == 511:
            raise AgiHangup("the caller hung up")
        if reply.code != 200:
            raise AgiProtocolError(f"{_verb(text)} refused: {reply.raw[:120]!r}")
        return reply

    async def close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.writer.wait_closed()
        except TimeoutError:  # the peer does not read what is left: drop it
            self.writer.transport.abort()
        except (ConnectionError, OSError):
            pass  # the peer went first: nothing left to flush

    async def _reply(self) -> Reply:
        while True:
            reply = self._replies.feed(await self._readline())
            if reply is not None:
                return reply

    async def _readline(self) -> str:
        """One line without its end; AgiHangup at EOF (Asterisk closes when the channel dies)."""
        try:
            raw = await self.reader.readline()
        except ValueError:  # longer than the stream's limit (MAX_LINE)
            raise AgiProtocolError("line longer than the stream limit") from None
        if not raw.endswith(b"\n"):
            raise AgiHangup("connection closed")
        return raw.decode("utf-8", "backslashreplace").rstrip("\r\n")


def format_peer(peername: object) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peername or "?")


def _verb(command: str) -> str:
    """The command without its arguments, for messages (arguments can be long)."""
    words = command.split()
    return " ".join(words[:2]) if words else "(empty)"
