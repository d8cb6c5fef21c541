"""The real-Asterisk harness: a session fixture `asterisk` that installs (cached in
/var/tmp/callkpi) and starts the sandbox on free loopback ports, and stops it at the end. The
session holds the sandbox's lock throughout: a second test run on the machine waits for it.

If the sandbox cannot be installed or started (not root, no network for a cold install, no
chroot): with env CI set the fixture fails, because in CI a skip is a failure; otherwise the
tests that need it are skipped with the reason.

Backends: test_end_to_end.py, where tail, listen, agi, ingest and the report meet one store,
runs on SQLite and on PostgreSQL (conftest's `module_store_url`). The other real-Asterisk
tests record into SQLite alone: what each source stores is checked on both backends by the
unit tests, and running every scenario twice would double the longest part of the CI run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from ports import free_port
from simulator.sandbox import Sandbox, SandboxError


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: runs against the real sandbox Asterisk")


@dataclass
class AsteriskHandle:
    """What the tests get: where the sandbox Asterisk listens and how to drive it."""

    sandbox: Sandbox
    ami_host: str
    ami_port: int
    ami_user: str  # the test user: every event class, may originate
    ami_secret: str
    listener_user: str  # the product's least-privilege account (asterisk_conf/manager.conf)
    listener_secret: str
    agi_port: int  # the port the dialplan's AGI(agi://127.0.0.1:<port>/csat,...) calls
    queue_log_path: Path

    def rx(self, command: str) -> str:
        """An Asterisk CLI command's output."""
        return self.sandbox.rx(command)

    def restart(self) -> None:
        """Stop and start Asterisk, keeping its astdb (like a real restart)."""
        self.sandbox.restart()

    def reset_logs(self) -> None:
        """Empty the queue_log (Asterisk reopens it)."""
        self.sandbox.reset_logs()


@pytest.fixture(scope="session")
def asterisk() -> Iterator[AsteriskHandle]:
    box = Sandbox(ami_port=free_port(), agi_port=free_port())
    try:
        box.install()
        box.start()
    except SandboxError as exc:
        box.release()  # the root is free for another run
        reason = f"sandbox Asterisk unavailable: {exc}"  # (names the log that says why)
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield AsteriskHandle(box, box.ami_host, box.ami_port, box.ami_user, box.ami_secret,
                             box.listener_user, box.listener_secret, box.agi_port,
                             box.queue_log_path)
    finally:
        box.stop()
