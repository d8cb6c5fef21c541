"""A fake Asterisk for the tests and `bench/agi.py` (not for production): it opens a FastAGI
session as Asterisk 22 does (the environment block, then one reply per command, in the
formats recorded in examples/recordings/*.agi.jsonl) and answers each GET DATA with
what a scripted caller does.

Caller actions, one per GET DATA: a key ("4", "*", "#"), "none" (silent until the timeout),
"hangup" (as Asterisk reports it: `200 result=-1`, then `HANGUP`, then 511 for everything),
"hangup-first" (`HANGUP` arrives before the reply, which is 511), "eof" (the connection just
closes), "junk" (a line that is not AGI), "usage" (a 520 block), "broken-prompt" (`200 result=-1`
on a live channel, as when the prompt file is missing), "early<key>" (the key, pressed while an
interruptible STREAM FILE of the prompt plays), "reply:<line>" (that reply, to the next GET DATA
or interruptible STREAM FILE).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

DEAD = "511 Command Not Permitted on a dead channel or intercept routine"
USAGE = ("520-Invalid command syntax.  Proper usage follows:\n"
         "Usage: GET DATA <file to be streamed> [timeout] [maxdigits]\n"
         "520 End of proper usage.")


def environment(uniqueid: str, args: list[str], *, callerid: str = "5551234",
                language: str = "en", script: str = "csat") -> dict[str, str]:
    """The environment Asterisk 22 sends for `AGI(agi://127.0.0.1:4573/csat,<args>)`."""
    env = {
        "agi_network": "yes", "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:4573/{script}", "agi_channel": "Local/s@sim-caller-0001;1",
        "agi_language": language, "agi_type": "Local", "agi_uniqueid": uniqueid,
        "agi_version": "22.10.1", "agi_callerid": callerid, "agi_calleridname": "Customer",
        "agi_callingpres": "0", "agi_callingani2": "0", "agi_callington": "0",
        "agi_callingtns": "0", "agi_dnid": "unknown", "agi_rdnis": "unknown",
        "agi_context": "callkpi-queue", "agi_extension": "support", "agi_priority": "7",
        "agi_enhanced": "0.0", "agi_accountcode": "", "agi_threadid": "139632092702400",
    }
    env.update({f"agi_arg_{i}": arg for i, arg in enumerate(args, 1)})
    return env


@dataclass
class FakeCall:
    """One scripted caller's session and what the server did in it."""

    env: dict[str, str]
    presses: list[str]
    variables: dict[str, str] = field(default_factory=dict)  # for GET VARIABLE
    trying: bool = False  # send `100 result=0 Trying...` before each GET DATA reply
    think_s: float = 0.0  # the caller takes this long to answer each GET DATA
    play_s: float = 0.0  # each STREAM FILE takes this long (its prompt playing)
    commands: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # SEND TEXT payloads
    round_trips: list[float] = field(default_factory=list)  # our reply -> the next command, s
    arrived_at: list[float] = field(default_factory=list)  # each command's time.time()
    closed_by_server: bool = False
    hung_up: bool = False

    async def run(self, host: str, port: int, timeout_s: float = 30.0) -> "FakeCall":
        reader, writer = await asyncio.open_connection(host, port)
        try:
            async with asyncio.timeout(timeout_s):
                await self._session(reader, writer)
        except ConnectionError:  # the server closed first (an allow-list refusal does)
            self.closed_by_server = True
        finally:
            writer.close()
        return self

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write("".join(f"{k}: {v}\n" for k, v in self.env.items()).encode() + b"\n")
        await writer.drain()
        presses = list(self.presses)
        sent_at = time.perf_counter()
        while line := await reader.readline():
            self.round_trips.append(time.perf_counter() - sent_at)
            self.arrived_at.append(time.time())
            command = line.decode().rstrip("\n")
            self.commands.append(command)
            if self.think_s and command.startswith("GET DATA"):
                await asyncio.sleep(self.think_s)
            if self.play_s and command.startswith("STREAM FILE"):
                await asyncio.sleep(self.play_s)
            reply = self._reply(command, presses)
            if reply == "eof":
                return
            writer.write(reply.encode() + b"\n")
            await writer.drain()
            sent_at = time.perf_counter()
        self.closed_by_server = True

    def _reply(self, command: str, presses: list[str]) -> str:
        verb = command.split(" ", 2)
        if self.hung_up:
            return DEAD
        if command.startswith("GET DATA"):
            return self._press(presses.pop(0) if presses else "none")
        if command.startswith("GET VARIABLE"):
            value = self.variables.get(verb[2] if len(verb) > 2 else "")
            return f"200 result=1 ({value})" if value is not None else "200 result=0"
        if command.startswith("SEND TEXT"):
            self.texts.append(command.split(" ", 2)[2].strip('"'))
            return "200 result=0"
        if command.startswith("STREAM FILE"):
            interruptible = not command.endswith('""')
            if interruptible and presses and presses[0].startswith("early"):
                return f"200 result={ord(presses.pop(0)[-1])} endpos=1000"
            if interruptible and presses and presses[0].startswith("reply:"):
                return presses.pop(0)[6:]
            return "200 result=0 endpos=8000"
        if verb[0] in ("ANSWER", "SET", "VERBOSE", "NOOP"):
            return "200 result=0" if verb[0] == "ANSWER" else "200 result=1"
        return "510 Invalid or unknown command"

    def _press(self, action: str) -> str:
        trying = "100 result=0 Trying...\n" if self.trying else ""
        if action == "none":
            return trying + "200 result= (timeout)"
        if action == "hangup":
            self.hung_up = True
            return trying + "200 result=-1\nHANGUP"
        if action == "hangup-first":
            self.hung_up = True
            return "HANGUP\n" + DEAD
        if action.startswith("reply:"):
            return action[6:]
        if action == "broken-prompt":
            return "200 result=-1"
        if action == "usage":
            return USAGE
        if action in ("eof", "junk"):
            return "eof" if action == "eof" else "this is not AGI"
        return trying + f"200 result={action if action != '#' else ''}"
