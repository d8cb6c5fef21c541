"""Shared fixtures; and in CI (env CI set) a skipped test fails the run: every part of
callkpi, the real-Asterisk and browser tests included, must actually run there."""

from __future__ import annotations

import os

import pytest

from callkpi.store import Store, open_store


@pytest.fixture
def store_url(tmp_path) -> str:
    """The URL of a new, empty store."""
    return f"sqlite://{tmp_path / 'callkpi.db'}"


@pytest.fixture
async def store(store_url) -> Store:
    s = await open_store(store_url)
    yield s
    await s.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        reporter.write_line(f"CI: {skipped} test(s) skipped; in CI a skip is a failure", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
