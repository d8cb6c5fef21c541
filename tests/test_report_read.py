"""Building a report is a read: only `refresh_and_build`, the commands and the e-mail job
bring the facts up to date first."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import json
from typing import Any

import pytest
from click.testing import CliRunner

from callkpi.cli import cli
from callkpi.config import Config
from callkpi.events import Kind
from callkpi.store import Store, open_store
from reports.kpis import build_report, refresh_and_build
from test_facts_helpers import Calls, epoch

pytestmark = pytest.mark.backends("sqlite", "postgresql")

T = epoch("2026-03-10T09:00:00+00:00")
DAY = "2026-03-10"
D = dt.date.fromisoformat(DAY)
WRITES = ("write", "execute", "executemany", "transaction", "insert_rows", "bulk_writer")
FACT_TABLES = ("queue_calls", "agent_sessions", "agent_pauses", "survey_answers", "ivr_paths",
               "agent_aliases")


def utc() -> Config:
    config = Config()
    config.report.timezone = "UTC"
    return config


def first_calls() -> Calls:
    c = Calls().member("A", "q", T - 60, None)
    c.answered("c1", "q", "A", T, wait=5, talk=60, number="111")
    return c.left(Kind.ABANDON, "c2", "q", T + 100, wait=40)


def later_calls() -> Calls:
    return Calls().answered("c3", "q", "A", T + 600, wait=8, talk=30, number="222")


async def state(store: Store) -> dict[str, Any]:
    """Everything a refresh writes, and the store's write counter."""
    out: dict[str, Any] = {
        "facts_state": sorted(await store.fetch_all("SELECT name, value FROM facts_state")),
        "write_seq": await store.fetch_all("SELECT seq FROM write_seq")}
    for table in FACT_TABLES:
        out[table] = (await store.fetch_all(f"SELECT count(*) FROM {table}"))[0][0]
    return out


def record_writes(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The store's write methods, each noting its call before doing it."""
    called: list[str] = []
    for name in WRITES:
        method = getattr(store, name)

        def noting(*args: Any, _name: str = name, _method: Any = method, **kw: Any) -> Any:
            called.append(_name)
            return _method(*args, **kw)

        monkeypatch.setattr(store, name, noting)
    return called


async def test_build_report_writes_nothing_and_reads_the_facts_as_last_refreshed(
        store, monkeypatch):
    await first_calls().store_in(store)
    first = await refresh_and_build(store, utc(), D, D)
    assert first["totals"]["offered"] == 2
    await later_calls().store_in(store)  # new events the facts have not seen yet
    before = await state(store)
    writes = record_writes(store, monkeypatch)

    report = await build_report(store, utc(), D, D, interval="hour")

    assert writes == []  # no write, no write transaction opened
    assert await state(store) == before
    assert report["totals"]["offered"] == 2  # the facts as last refreshed
    monkeypatch.undo()
    assert (await refresh_and_build(store, utc(), D, D))["totals"]["offered"] == 3


# ---------------------------------------------------------------- the commands refresh
async def store_calls(url: str, calls: Calls) -> None:
    store = await open_store(url)
    async with store:
        await calls.store_in(store)


@pytest.fixture
def env(tmp_path, store_url):
    config = tmp_path / "callkpi.toml"
    config.write_text('[report]\ntimezone = "UTC"\n[smtp]\nsender = "callkpi@example.com"\n')
    return {"CALLKPI_CONFIG": str(config), "CALLKPI_DB": store_url}


def invoke(env, *args):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_callkpi_report_shows_the_events_stored_since_the_last_report(env):
    asyncio.run(store_calls(env["CALLKPI_DB"], first_calls()))
    report = ("report", "--from", DAY, "--to", DAY, "--format", "json")
    assert json.loads(invoke(env, *report).stdout)["totals"]["offered"] == 2
    asyncio.run(store_calls(env["CALLKPI_DB"], later_calls()))
    assert json.loads(invoke(env, *report).stdout)["totals"]["offered"] == 3
    by_queue = invoke(env, *report, "--queue", "q")
    assert json.loads(by_queue.stdout)["totals"]["offered"] == 3


def test_callkpi_email_reports_the_events_stored_since_the_last_run(env, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    eml = tmp_path / f"callkpi-report-{DAY}.eml"

    def mailed_offered() -> str:
        result = invoke(env, "email", "--from", DAY, "--to", DAY, "--recipient",
                        "a@example.com", "--dry-run")
        assert result.exit_code == 0, result.output
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        plain = message.get_body(("plain",))
        assert isinstance(plain, email.message.EmailMessage)
        return plain.get_content()

    asyncio.run(store_calls(env["CALLKPI_DB"], first_calls()))
    assert "Calls: 2 offered" in mailed_offered()
    asyncio.run(store_calls(env["CALLKPI_DB"], later_calls()))
    assert "Calls: 3 offered" in mailed_offered()
