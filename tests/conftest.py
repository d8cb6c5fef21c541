"""Shared fixtures; and in CI (env CI set) a skipped test fails the run: every part of
callkpi, the real-Asterisk, PostgreSQL and browser tests included, must actually run there.

Backends: a test that uses `store`, `store_url` or `make_store_url` runs once on SQLite and
once on PostgreSQL; a test or module that can only mean one of them (a SQLite file's mode, a
PostgreSQL server's restart) names it with `pytest.mark.backends(...)` and says why. Run one
backend alone with `-k sqlite` or `-k postgresql`. PostgreSQL tests share one throwaway cluster
per run (callkpi.testing.pgcluster: initdb in a temporary directory, a free loopback port,
stopped at the end), each test in its own new database.
"""

from __future__ import annotations

import itertools
import os
from typing import AsyncIterator, Callable, Iterator

import pytest

from callkpi.store import Store, open_store
from callkpi.testing.pgcluster import Cluster, ClusterError

BACKENDS = ("sqlite", "postgresql")
TEMPLATE = "callkpi_template"  # a migrated store: each test's database is a copy of it
_names = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*names): the only store backends a test or module can run on")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    metafunc.parametrize("backend", marker.args if marker else BACKENDS, scope="function")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        cluster = Cluster().start()
    except ClusterError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL test cluster unavailable: {exc}")
        pytest.skip(f"PostgreSQL test cluster unavailable: {exc}")
    try:
        cluster.sql(f"CREATE DATABASE {TEMPLATE}")
        _migrate(cluster.url(TEMPLATE))
        yield cluster
    finally:
        cluster.stop()


def _migrate(url: str) -> None:
    import asyncio

    async def run() -> None:
        store = await open_store(url)
        await store.close()

    asyncio.run(run())


@pytest.fixture
def make_store_url(request: pytest.FixtureRequest, backend: str,
                   tmp_path) -> Iterator[Callable[..., str]]:
    """Makes the URL of a new store of the test's backend at each call; `empty=True`: a
    database with no schema yet (PostgreSQL; a SQLite file is always new)."""
    created: list[str] = []
    cluster = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None

    def make(empty: bool = False) -> str:
        n = next(_names)
        if cluster is None:
            return f"sqlite://{tmp_path / f'callkpi-{n}.db'}"
        name = f"test_{os.getpid()}_{n}"
        cluster.sql(f"CREATE DATABASE {name}"
                    + ("" if empty else f" TEMPLATE {TEMPLATE} STRATEGY FILE_COPY"))
        created.append(name)
        return cluster.url(name)

    yield make
    for name in created:
        assert cluster is not None
        cluster.sql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="module", params=BACKENDS)
def module_store_url(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One new store per module and backend, for a module whose tests all read what one
    long run (a scenario on the real Asterisk) stored: the run happens once per backend."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path_factory.mktemp('store') / 'callkpi.db'}"
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = f"module_{os.getpid()}_{next(_names)}"
    cluster.sql(f"CREATE DATABASE {name}")
    yield cluster.url(name)
    cluster.sql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def store_url(make_store_url: Callable[..., str]) -> str:
    """The URL of a new store of the test's backend."""
    return make_store_url()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    yield s
    await s.close()


_skipped: list[str] = []  # the tests skipped in this run (an expected failure is no skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:  # a whole module (an import it could not make, say)
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skip fails the run, whatever reported it: a PostgreSQL test skipped for want
    of a server is a backend nobody tested."""
    if not os.environ.get("CI") or not _skipped:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"CI: {len(_skipped)} test(s) skipped; in CI a skip is a failure:",
                            red=True)
        for nodeid in _skipped[:20]:
            reporter.write_line(f"  {nodeid}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
