"""The FastAGI wire protocol, pure (no sockets): the environment block Asterisk sends first,
the replies to commands, and the unsolicited lines that can come between them.

What Asterisk 18-22 send (res_agi.c; recorded in examples/recordings/*.agi.jsonl):
- `agi_<name>: <value>` lines, then an empty line: the environment (arguments are
  `agi_arg_1`...).
- `200 result=<n> [<data>]` per command; GET DATA answers `200 result=<digits> (timeout)`
  when the caller stopped pressing, `200 result=-1` when the channel failed.
- `100 result=0 Trying...` before the real reply of a command that takes a while.
- `510 Invalid or unknown command`, `511 Command Not Permitted on a dead channel or intercept
  routine` (the caller hung up), `520-Invalid command syntax.  Proper usage follows:` then the
  usage text, then `520 End of proper usage.`
- `HANGUP` on its own line, at any moment, when the caller hangs up. It is not a reply: a
  reader that took it for one would shift every later reply by one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

MAX_ENV_LINES = 200  # Asterisk sends ~25 plus the arguments; more is not Asterisk
# Asterisk's environment is ~1 KiB plus the arguments: this bounds what a session holds before
# it is known to be Asterisk (lines alone, 200 of the 8 KiB the stream allows, made 1.6 MB)
MAX_ENV_BYTES = 16_384
HANGUP_NOTICE = "HANGUP"

_REPLY = re.compile(r"(\d{3})([ -])(.*)")
_RESULT = re.compile(r"result=(\S*)(?:\s+(.*))?")
_ENV_KEY = re.compile(r"agi_[a-z0-9_]+")


class AgiHangup(Exception):
    """The caller hung up (HANGUP notice, a 511 reply, or Asterisk closed the connection)."""


class AgiProtocolError(Exception):
    """Asterisk (or whatever connected) sent something that is not FastAGI."""


class Reply(NamedTuple):
    code: int
    result: str  # the text after result= ("" when there is none)
    data: str  # what follows it: "(timeout)", "(value)", "endpos=1234"; the usage text of a 520
    raw: str

    @property
    def timed_out(self) -> bool:
        return self.data == "(timeout)"

    @property
    def value(self) -> str:
        """GET VARIABLE's value: `200 result=1 (value)`; "" when the variable is not set."""
        if self.result != "1" or not (self.data.startswith("(") and self.data.endswith(")")):
            return ""
        return self.data[1:-1]


def parse_env(lines: list[str]) -> dict[str, str]:
    """The environment block (without its terminating empty line) -> {agi_name: value}.

    Raises AgiProtocolError naming the first bad line: whatever connects to the port is
    untrusted, and a half-parsed environment would survey a call we cannot identify.
    """
    if len(lines) > MAX_ENV_LINES:
        raise AgiProtocolError(f"environment of {len(lines)} lines (at most {MAX_ENV_LINES})")
    size = env_size(lines)
    if size > MAX_ENV_BYTES:
        raise AgiProtocolError(f"environment of {size} bytes (at most {MAX_ENV_BYTES})")
    env: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        key, sep, value = line.partition(":")
        if not sep or not _ENV_KEY.fullmatch(key):
            raise AgiProtocolError(f"environment line {number} is not 'agi_<name>: <value>': "
                                   f"{line[:80]!r}")
        env[key] = value.strip()
    if "agi_request" not in env:
        raise AgiProtocolError("environment without agi_request")
    return env


def env_size(lines: list[str]) -> int:
    """The environment's size as sent: each line and its line end."""
    return sum(len(line) + 1 for line in lines)


def script_name(env: dict[str, str]) -> str:
    """The script part of agi://host:port/<script>: Asterisk's agi_network_script, else parsed."""
    script = env.get("agi_network_script", "")
    if not script:
        script = env["agi_request"].split("://", 1)[-1].partition("/")[2]
    return script.partition("?")[0]


def arguments(env: dict[str, str]) -> list[str]:
    """agi_arg_1, agi_arg_2, ... in order, up to the first missing one."""
    args: list[str] = []
    while (arg := env.get(f"agi_arg_{len(args) + 1}")) is not None:
        args.append(arg)
    return args


def parse_reply(line: str) -> Reply:
    """One complete reply line -> Reply; a 520 usage block is assembled by ReplyReader."""
    match = _REPLY.fullmatch(line)
    if not match:
        raise AgiProtocolError(f"not an AGI reply: {line[:80]!r}")
    code, rest = int(match.group(1)), match.group(3)
    result = _RESULT.match(rest)
    if result:
        return Reply(code, result.group(1), (result.group(2) or "").strip(), line)
    return Reply(code, "", rest.strip(), line)


@dataclass
class ReplyReader:
    """Feed it the lines that follow a command; it returns the command's reply once complete.

    HANGUP notices set `hung_up` and are skipped wherever they come, as are `100 Trying`
    lines; a 520 usage block is gathered into one Reply.
    """

    hung_up: bool = False
    _usage: list[str] | None = None

    def feed(self, line: str) -> Reply | None:
        line = line.rstrip("\r\n")
        if line == HANGUP_NOTICE:
            self.hung_up = True
            return None
        if self._usage is not None:
            if line.startswith("520 "):
                usage, self._usage = "\n".join(self._usage), None
                return Reply(520, "", usage, line)
            self._usage.append(line)
            return None
        if line.startswith("520-"):
            self._usage = []
            return None
        reply = parse_reply(line)
        if reply.code == 100:
            return None
        return reply


def quote(text: str) -> str:
    """An AGI command argument, double-quoted: res_agi splits on spaces outside quotes and
    drops backslashes before the next character."""
    if "\n" in text or "\r" in text:
        raise ValueError("an AGI argument cannot contain a line break")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
