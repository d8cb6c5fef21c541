"""What only the PostgreSQL store has: a server that can be down or restarting (transient)
or refuse us (not), a password that never travels in the URL, migrations derived from
SQLite's, text without NUL."""

from __future__ import annotations

import asyncio
import sqlite3

import psycopg
import pytest

from callkpi import store_postgres
from callkpi.events import Kind, make_event
from callkpi.schema import MIGRATIONS as SQLITE_MIGRATIONS
from callkpi.schema_postgres import translate
from callkpi.store import Batch, StoreError, StoreUnavailable, open_store
from callkpi.store_sqlite import _statements
from callkpi.testing.pgcluster import PASSWORD_ROLE, Cluster

pytestmark = pytest.mark.backends("postgresql")  # the server's own faults, password, dialect
SECRET = "s3cret-Pa55"


def ev(kind=Kind.CONNECT, ts=100.0, source="queue_log", **kw):
    base = dict(server="pbx1", call_id="1700000000.1", queue="support", agent="Agent 1001")
    base.update(kw)
    return make_event(kind=kind, ts=ts, source=source, **base)


@pytest.fixture(scope="module")
def own_cluster():
    """A cluster of the module's own, to stop and restart without disturbing other tests."""
    with Cluster() as cluster:
        cluster.sql("CREATE DATABASE kpi")
        yield cluster


@pytest.fixture
def role_url(pg_cluster, store_url):
    """The test's database, as a role that must give its password."""
    pg_cluster.sql(f"DO $$ BEGIN CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD "
                   f"'{SECRET}'; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    return store_url.replace("postgres@", f"{PASSWORD_ROLE}@")


@pytest.fixture
def no_password_env(monkeypatch, tmp_path):
    for name in ("PGPASSWORD", "CALLKPI_STORE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


# ---------------------------------------------------------------- passwords
async def test_a_password_in_the_url_is_refused_and_never_shown(store_url):
    url = store_url.replace("postgres@", f"postgres:{SECRET}@")
    with pytest.raises(StoreError) as caught:
        await open_store(url)
    assert SECRET not in str(caught.value)
    assert "CALLKPI_STORE_PASSWORD" in str(caught.value)


@pytest.mark.parametrize("where", ["CALLKPI_STORE_PASSWORD", "PGPASSWORD", ".pgpass"])
async def test_the_password_comes_from_the_environment_or_pgpass(role_url, no_password_env,
                                                                 monkeypatch, tmp_path, where):
    with pytest.raises(StoreError) as refused:  # and not StoreUnavailable: retrying won't help
        await open_store(role_url)
    assert not isinstance(refused.value, StoreUnavailable)
    if where == ".pgpass":
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"127.0.0.1:*:*:{PASSWORD_ROLE}:{SECRET}\n")
        pgpass.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
    else:
        monkeypatch.setenv(where, SECRET)
    async with await open_store(role_url) as store:
        await store.write(Batch(events=[ev()]))
        assert (await store.info()).events == 1


async def test_a_wrong_password_is_an_error_that_does_not_show_it(role_url, no_password_env,
                                                                  monkeypatch):
    monkeypatch.setenv("CALLKPI_STORE_PASSWORD", "wrong-" + SECRET)
    with pytest.raises(StoreError) as caught:
        await open_store(role_url)
    assert not isinstance(caught.value, StoreUnavailable)
    assert "password authentication failed" in str(caught.value)
    assert SECRET not in str(caught.value)


# ---------------------------------------------------------------- the server
async def test_nothing_listening_is_unavailable(pg_cluster):
    from ports import free_port

    with pytest.raises(StoreUnavailable, match="refused"):
        await open_store(f"postgresql://postgres@127.0.0.1:{free_port()}/kpi")


async def test_a_database_that_does_not_exist_is_an_error_not_unavailable(pg_cluster):
    with pytest.raises(StoreError, match="does not exist") as caught:
        await open_store(pg_cluster.url("no_such_db"))
    assert not isinstance(caught.value, StoreUnavailable)


async def test_a_database_without_a_store_is_an_error_unless_it_may_be_created(make_store_url):
    with pytest.raises(StoreError, match="holds no callkpi store"):
        await open_store(make_store_url(empty=True), create=False)


async def test_a_restarting_server_is_unavailable_then_the_same_store_goes_on(own_cluster):
    """While the server is down, a write and a read raise StoreUnavailable (worth retrying);
    once it is back, the same store object writes and reads again on new connections."""
    store = await open_store(own_cluster.url("kpi"))
    await store.write(Batch(events=[ev(ts=100)]))
    await store.fetch_all("SELECT 1")  # a read connection in the pool, soon a dead one
    await asyncio.to_thread(own_cluster.stop_server)
    failures = []
    for attempt in (store.write(Batch(events=[ev(ts=200)])),
                    store.fetch_all("SELECT count(*) FROM events")):
        try:
            await attempt
        except StoreUnavailable as exc:
            failures.append(exc)
    await asyncio.to_thread(own_cluster.start_server)
    assert len(failures) == 2, failures
    await store.write(Batch(events=[ev(ts=300)]))
    assert await store.fetch_all("SELECT tsec FROM events ORDER BY tsec") == [(100,), (300,)]
    await store.close()


# ---------------------------------------------------------------- several writers
async def test_a_write_waits_for_the_one_before_it_so_the_twin_rule_sees_its_rows(
        store_url, monkeypatch):
    """A tail's write holds its queue_log event, uncommitted, when a listener on another
    connection writes the AMI copy: the listener waits (the write sequence's row lock) and
    then finds queue_log's row, instead of storing its copy beside it."""
    tail, listener = await open_store(store_url), await open_store(store_url)
    inserted, release = asyncio.Event(), asyncio.Event()
    execute = store_postgres._Tx.execute_pg

    async def pausing(self, sql, params=None):
        changed = await execute(self, sql, params)
        if sql is store_postgres.STORE_AUTHORITATIVE:
            inserted.set()
            await release.wait()
        return changed

    monkeypatch.setattr(store_postgres._Tx, "execute_pg", pausing)
    first = asyncio.create_task(tail.write(Batch(events=[ev(ts=100)])))
    await inserted.wait()
    # stamped a second apart: another key, so only the twin rule tells them one event
    second = asyncio.create_task(listener.write(Batch(events=[ev(ts=99.98, source="ami")])))
    with psycopg.connect(store_url, autocommit=True) as watch:
        while not (second.done() or watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'").fetchone()[0]):
            await asyncio.sleep(0.01)
    release.set()
    assert (await first).stored == 1
    assert ((await second).stored, await tail.fetch_all("SELECT source FROM events")) == (
        0, [("queue_log",)])
    await tail.close()
    await listener.close()


# ---------------------------------------------------------------- the schema
def _sqlite_shape() -> dict[str, set[str]]:
    con = sqlite3.connect(":memory:", isolation_level=None)
    for version in sorted(SQLITE_MIGRATIONS):
        for statement in _statements(SQLITE_MIGRATIONS[version]):
            con.execute(statement)
    tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    shape = {t: {c[1] for c in con.execute(f"PRAGMA table_info({t})")} for t in tables}
    shape["(indexes)"] = {i for (i,) in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    return shape


async def test_the_migrations_give_the_tables_columns_and_indexes_of_sqlite(store):
    rows = await store.fetch_all(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name <> 'callkpi_schema'")
    shape: dict[str, set[str]] = {}
    for table, column in rows:
        shape.setdefault(table, set()).add(column)
    shape["(indexes)"] = {i for (i,) in await store.fetch_all(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
        " AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'"
        " OR indexname = 'events_key'")}
    assert shape == _sqlite_shape()


def test_translation_of_types_keys_and_expression_indexes():
    sql = translate("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, x REAL, offset"
                    " INTEGER);\nCREATE INDEX t_b ON t (n / 900, x DESC, n) WHERE x > 0;")
    assert sql == ('CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,'
                   ' n BIGINT, x DOUBLE PRECISION, "offset" BIGINT);\n'
                   "CREATE INDEX t_b ON t ((n / 900), x DESC, n) WHERE x > 0;")


# ---------------------------------------------------------------- text
async def test_nul_in_text_is_stored_visibly_rather_than_refused(store):
    result = await store.write(Batch(events=[ev(caller_name="Ann\0Lee")]))
    assert result.stored == 1
    assert await store.fetch_all("SELECT caller_name FROM events") == [("Ann\\x00Lee",)]

