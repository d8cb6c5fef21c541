"""Shared fixtures; and in CI (env CI set) a skipped test fails the run: every part of
callkpi, the real-Asterisk and browser tests included, must actually run there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import AsyncIterator

import pytest

from callkpi.store import Store, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(tmp_path / "callkpi.db")
    yield s
    await s.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = len(reporter.stats.get("skipped", []))
    if skipped:
        reporter.write_line(f"CI: {skipped} test(s) skipped; in CI a skip is a failure", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
