"""The sandbox: a real Asterisk (Debian's package) in a chroot on loopback, configured with the
product's asterisk_conf/ plus the simulator's test layer. A thin Python face on
simulator/asterisk-sandbox.sh (shipped as package data), which does the work and is usable
on its own.

The chroot and the .deb cache live outside the clone (/var/tmp/callkpi by default, or
$CALLKPI_SANDBOX_ROOT, $CALLKPI_SANDBOX_CACHE, $CALLKPI_SANDBOX_STATE), so a second run on the
same machine is warm: `install` returns at once and `start` takes well under a second.
Installing and starting need root (debootstrap, chroot).

Every checkout on the machine shares that root, so a `Sandbox` holds its lock (`<root>.lock`,
a flock with the holder's pid in it) from its first `install`/`start` until `stop`: a second
test run waits for the first (up to $CALLKPI_SANDBOX_LOCK_WAIT seconds, 1800 by default)
instead of stopping its Asterisk or installing over it, and the script, handed the held
descriptor, does not wait for itself.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from callkpi.errors import UserError

SCRIPT = Path(str(resources.files("simulator") / "asterisk-sandbox.sh"))
STATE_BASE = Path("/var/tmp/callkpi")
TEST_USER = "callkpi-test"  # the test layer's full-rights AMI user (simulator, tests)
TEST_SECRET = "callkpi-test-secret"  # loopback-only test value, not a credential
LISTENER_USER = "callkpi"  # the product's least-privilege account (asterisk_conf/manager.conf)
LISTENER_SECRET = "callkpi-listener-secret"
STOPPED = 3  # the script's exit status of `status` when Asterisk is not running
LOCK_POLL_S = 0.5  # how often a run waiting for another one's sandbox looks again
_HELD: dict[str, tuple[int, int]] = {}  # lock file -> (its descriptor, Sandboxes using it)


class SandboxError(UserError):
    """The sandbox could not be installed, started or queried; the message says why."""


def _env_path(name: str, default: str) -> str:
    return os.environ.get(name) or str(STATE_BASE / default)


@dataclass
class Sandbox:
    ami_port: int = 5038
    agi_port: int = 4573
    ami_host: str = "127.0.0.1"
    agi_host: str = "127.0.0.1"
    listener_secret: str = LISTENER_SECRET
    root: str = field(default_factory=lambda: _env_path("CALLKPI_SANDBOX_ROOT", "astroot"))
    cache: str = field(default_factory=lambda: _env_path("CALLKPI_SANDBOX_CACHE", "astcache"))
    state: str = field(default_factory=lambda: _env_path("CALLKPI_SANDBOX_STATE", "run"))
    ami_user: str = TEST_USER
    ami_secret: str = TEST_SECRET
    listener_user: str = LISTENER_USER
    lock_wait_s: float = field(
        default_factory=lambda: float(os.environ.get("CALLKPI_SANDBOX_LOCK_WAIT") or 1800))
    _lock: int | None = field(default=None, init=False, repr=False)  # the held lock's fd

    @property
    def queue_log_path(self) -> Path:
        return Path(self.root) / "var/log/asterisk/queue_log"

    def install(self) -> None:
        """debootstrap Debian sid and apt-get install asterisk (cached; a no-op when installed)."""
        self.reserve()
        self._run("install", self.cache, timeout=900 + self.lock_wait_s)  # may wait for the cache

    def start(self) -> None:
        """Render the configuration and start Asterisk; returns once AMI answers."""
        self.reserve()
        self._run("start", timeout=120)

    def stop(self) -> None:
        """Stop the Asterisk this sandbox started (by its pid), nothing else; the root is
        free for the next run."""
        try:
            self._run("stop", timeout=60)
        finally:
            self.release()

    def release(self) -> None:
        """Let go of the root (stop does; a run that never got to start must too)."""
        if self._lock is None:
            return
        path = self._lock_path()
        fd, users = _HELD[path]
        if users > 1:
            _HELD[path] = (fd, users - 1)
        else:
            del _HELD[path]
            os.close(fd)
        self._lock = None

    def reserve(self) -> None:
        """Take the root for this run (install and start do), waiting while another run has
        it; held until `stop` or `release`. A run is a process: two Sandbox objects of one
        process share the root (and the script tells them apart by their settings)."""
        if self._lock is not None:
            return
        path = self._lock_path()
        if path in _HELD:
            fd, users = _HELD[path]
            _HELD[path] = (fd, users + 1)
            self._lock = fd
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise SandboxError(f"the sandbox root {self.root} is still in use by pid "
                                       f"{holder} after {self.lock_wait_s:.0f} s (lock {path})"
                                       ) from None
                time.sleep(LOCK_POLL_S)  # the other run's state, looked at again
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[path] = (fd, 1)
        self._lock = fd

    def _lock_path(self) -> str:
        return f"{os.path.realpath(self.root)}.lock"

    def restart(self) -> None:
        """Stop and start again, keeping the astdb (queue members come back)."""
        self._run("restart", timeout=180)

    def restart_now(self) -> None:
        """`core restart now`: Asterisk hangs every call up, says Shutdown on AMI and comes
        back by itself (astdb kept); returns once AMI answers the new one."""
        self._run("restart-now", timeout=120)

    def crash(self, down_s: float = 0.0) -> None:
        """kill -9 Asterisk (no shutdown, nothing said), start it again `down_s` later
        keeping the astdb, as systemd would after a crash."""
        self._run("crash", f"{down_s:g}", timeout=120 + down_s)

    def reset_logs(self) -> None:
        """Empty queue_log and the log files; Asterisk reopens them."""
        self._run("reset-logs")

    def rx(self, command: str) -> str:
        """Run an Asterisk CLI command and return its output."""
        return self._run("rx", command).stdout

    def status(self) -> tuple[bool, str]:
        """(running, human-readable status)."""
        result = self._run("status", check=False)
        if result.returncode not in (0, STOPPED):
            raise SandboxError(_last_error(result))
        return result.returncode == 0, result.stdout.strip()

    def paths(self) -> dict[str, str]:
        lines = self._run("paths").stdout.splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "ASTROOT": self.root, "ASTCACHE": self.cache, "ASTSTATE": self.state,
               "AMI_PORT": str(self.ami_port), "AMI_BIND": self.ami_host,
               "AGI_HOST": self.agi_host, "AGI_PORT": str(self.agi_port),
               "TEST_SECRET": self.ami_secret, "LISTENER_SECRET": self.listener_secret,
               "LOCK_WAIT": str(int(self.lock_wait_s))}
        env.pop("ASTLOCK_FD", None)
        if self._lock is not None:
            env["ASTLOCK_FD"] = str(self._lock)  # held here: the script must not wait for it
        return env

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        held = (self._lock,) if self._lock is not None else ()
        try:
            result = subprocess.run(["bash", str(SCRIPT), *args], env=self._env(), text=True,
                                    capture_output=True, timeout=timeout, pass_fds=held)
        except subprocess.TimeoutExpired:
            raise SandboxError(f"sandbox {args[0]} did not finish within {timeout:.0f} s") from None
        if check and result.returncode != 0:
            raise SandboxError(_last_error(result))
        return result


def _last_error(result: subprocess.CompletedProcess[str]) -> str:
    """The script's own ERROR line (it logs to stderr), else its last line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line.split("ERROR: ", 1)[1] for line in lines if "ERROR: " in line]
    return errors[-1] if errors else (lines[-1] if lines else f"exit status {result.returncode}")
