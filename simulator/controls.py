"""The faults a scenario's timeline can order besides what the simulated people do: a graceful
`core restart now` or a kill -9 of the sandbox Asterisk, and a kill -9 of `callkpi listen`
started again later. The simulator calls these; whoever runs it says what they act on."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from callkpi.errors import UserError
from simulator.sandbox import Sandbox

LOGIN_LINE = "AMI logged in"  # what `callkpi listen` logs at every login
LISTENER_LOGIN_TIMEOUT_S = 30.0


class ControlError(UserError):
    """A fault could not be ordered (nothing to act on, or the listener would not come up)."""


@dataclass
class Controls:
    """`sandbox`: the Asterisk to restart or crash. `listen`: the command line of
    `callkpi listen` to run, kill and start again; its stderr goes to `listen_log`."""

    sandbox: Sandbox | None = None
    listen: list[str] | None = None
    listen_log: Path | None = None
    listen_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _listener: asyncio.subprocess.Process | None = None

    def missing_for(self, action: str) -> str:
        """Why `action` cannot be ordered here ("" when it can)."""
        if action in ("restart", "crash") and self.sandbox is None:
            return f"a {action} needs the sandbox Asterisk"
        if action == "listener-kill" and not (self.listen and self.listen_log):
            return "a listener-kill needs the `callkpi listen` command to run"
        return ""

    async def restart_pbx(self) -> None:
        """`core restart now`; returns once the new Asterisk answers on AMI."""
        assert self.sandbox is not None
        await asyncio.to_thread(self.sandbox.restart_now)

    async def crash_pbx(self, down_s: float) -> None:
        """kill -9 Asterisk, start it again `down_s` later; returns once AMI answers."""
        assert self.sandbox is not None
        await asyncio.to_thread(self.sandbox.crash, down_s)

    async def start_listener(self) -> None:
        """Start `callkpi listen`; returns once it has logged in to AMI."""
        assert self.listen is not None and self.listen_log is not None
        logins = self._logins()
        with self.listen_log.open("a") as log:
            self._listener = await asyncio.create_subprocess_exec(
                *self.listen, env=self.listen_env, stdout=asyncio.subprocess.DEVNULL,
                stderr=log)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LISTENER_LOGIN_TIMEOUT_S
        while self._logins() <= logins:
            if self._listener.returncode is not None or loop.time() > deadline:
                raise ControlError(f"`{' '.join(self.listen)}` did not log in to AMI; "
                                   f"see {self.listen_log}")
            await asyncio.sleep(0.05)

    async def kill_listener(self) -> None:
        """kill -9: nothing flushed, nothing said."""
        if self._listener is not None and self._listener.returncode is None:
            self._listener.kill()
            await self._listener.wait()

    async def stop_listener(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the listener flushes and exits); its exit status, None if none ran."""
        if self._listener is None:
            return None
        if self._listener.returncode is None:
            self._listener.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self._listener.wait(), timeout)

    def _logins(self) -> int:
        assert self.listen_log is not None
        if not self.listen_log.exists():
            return 0
        return self.listen_log.read_text(errors="replace").count(LOGIN_LINE)
