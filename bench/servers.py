"""Several servers in one store: what a report of one server, and a report with servers kept
apart, costs beside the report of everything, over the same month of calls in the same run.

The store is bench/report.py's (N queue calls over 30 days, their survey answers, agent
sessions and pauses, IVR and ring-no-answer events), its rows then dealt round-robin to
--servers PBXs. Timed, each the median of --rounds: the month's JSON report of every server
merged (the default), of one server (`--server`), and of every server kept apart
(`merge_servers = false`, queues and agents as `name @ server`).

    .venv/bin/python bench/servers.py [--calls 1000000] [--servers 4] [--db postgresql://...]

Last line: `servers calls=N servers=S all_s=X one_s=Y apart_s=Z one_ratio=Y/X
apart_ratio=Z/X backend=B`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backends import Backend  # noqa: E402
from report import DAYS, MONTH_START, build_store  # noqa: E402
from callkpi.config import Config, ReportConfig  # noqa: E402
from callkpi.store import open_store  # noqa: E402
from reports.facts import settings_fingerprint  # noqa: E402
from reports.kpis import refresh_and_build  # noqa: E402
from reports.render_json import render_json  # noqa: E402

# table -> what deals its rows (an agent's sessions and pauses stay on one server)
AGENT_NUMBER = "CAST(substr(agent, 7) AS INTEGER)"  # "Agent 1042" -> 1042
TABLES = {"queue_calls": "id", "survey_answers": "queue_call", "events": "id",
          "agent_sessions": AGENT_NUMBER, "agent_pauses": AGENT_NUMBER}


async def deal_to_servers(path: str, servers: int) -> None:
    """Every row to server pbx-<id mod servers> (survey answers with their call, sessions
    and pauses with their agent)."""
    store = await open_store(path)
    async with store:
        for table, key in TABLES.items():
            await store.execute(f"UPDATE {table} SET server = 'pbx-' || ({key} % ?)", (servers,))


async def facts_current_for(path: str, config: Config) -> None:
    """The facts marked derived under `config`'s settings (the bench built them by hand: a
    change of settings would derive them again from events it does not have)."""
    store = await open_store(path)
    async with store:
        await store.execute(
            "UPDATE facts_state SET value = ? WHERE name = 'settings'",
            (settings_fingerprint(config.kpi, config.agents.names,
                                  config.report.merge_servers),))


async def timed(path: str, config: Config) -> float:
    store = await open_store(path)
    async with store:
        t0 = time.perf_counter()
        render_json(await refresh_and_build(store, config, MONTH_START,
                                             MONTH_START + dt.timedelta(days=DAYS - 1)))
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", help="a postgresql:// URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    merged = Config()
    one = dataclasses.replace(merged, report=ReportConfig(servers=["pbx-1"]))
    apart = dataclasses.replace(merged, report=ReportConfig(merge_servers=False))
    with tempfile.TemporaryDirectory() as tmp, Backend(args.db, Path(tmp)) as backend:
        path = backend.store_url("bench")
        t0 = time.perf_counter()
        asyncio.run(build_store(path, args.calls, merged))
        asyncio.run(deal_to_servers(path, args.servers))
        backend.settle()
        print(f"store ({backend.name}): {args.calls} queue calls on {args.servers} servers, "
              f"built in {time.perf_counter() - t0:.1f} s")
        times: dict[str, list[float]] = {"all": [], "one": [], "apart": []}
        for _ in range(args.rounds):
            for name, config in (("all", merged), ("one", one)):
                times[name].append(asyncio.run(timed(path, config)))
        asyncio.run(facts_current_for(path, apart))
        for _ in range(args.rounds):
            times["apart"].append(asyncio.run(timed(path, apart)))
        all_s, one_s, apart_s = (statistics.median(times[k]) for k in ("all", "one", "apart"))
        for name, values in times.items():
            print(f"{name}: " + " ".join(f"{v:.2f}" for v in values) + " s")
        print(f"servers calls={args.calls} servers={args.servers} all_s={all_s:.2f} "
              f"one_s={one_s:.2f} apart_s={apart_s:.2f} one_ratio={one_s / all_s:.2f} "
              f"apart_ratio={apart_s / all_s:.2f} backend={backend.name}")


if __name__ == "__main__":
    main()
