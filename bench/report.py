"""Report benchmark: a store holding N queue calls over a 30-day month, then the month's
report timed as JSON and as HTML, each beside one bare aggregate scan of the same calls in the
same run (`SELECT queue, count(*), sum(wait_s) ... GROUP BY queue`): seconds move with the
machine, the ratio much less.

The store is filled directly at the facts layer (queue_calls, survey answers, agent sessions
and pauses, plus IVR and ring-no-answer events), with the facts watermark set, so what is
timed is what a nightly report costs once the facts are current: refresh_and_build (its
facts refresh finds nothing new) and the renderer. On PostgreSQL the store is then vacuumed and
analysed, as autovacuum does to a store in use.

    .venv/bin/python bench/report.py [--calls 1000000] [--db postgresql://...]

With --db, the PostgreSQL database gets a schema of its own for the run (dropped after);
without, SQLite in a temporary directory.

Last line: `report calls=N json_s=X html_s=Y scan_s=S json_scan_ratio=R html_scan_ratio=H
backend=B` (targets: json < 3 s, html < 6 s); html_s=nan when reports.render_html is not
importable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backends import Backend  # noqa: E402
from callkpi.config import Config  # noqa: E402
from callkpi.events import Kind, make_event  # noqa: E402
from callkpi.store import Batch  # noqa: E402
from callkpi.store import open_store  # noqa: E402
from callkpi.queries.facts import CALL_COLUMNS, SURVEY_COLUMNS  # noqa: E402
from reports.facts import BUCKET_S, settings_fingerprint  # noqa: E402
from reports.kpis import refresh_and_build  # noqa: E402
from reports.render_json import render_json  # noqa: E402

MONTH_START = dt.date(2026, 3, 1)
DAYS = 30
QUEUES = ("support", "sales", "billing", "tech", "vip")
AGENTS = [f"Agent {1000 + i}" for i in range(120)]
CHUNK = 50_000


def fake_calls(n: int, start: float, rng: random.Random):
    """Queue calls spread over the month, with every outcome and some repeat callers."""
    span = DAYS * 86400
    for i in range(n):
        entered = start + span * i / n
        queue = QUEUES[i % len(QUEUES)]
        number = f"555{rng.randrange(400_000):06d}"
        r = rng.random()
        wait = round(rng.expovariate(1 / 25), 1)
        if r < 0.82:
            talk, hold = rng.uniform(30, 600), rng.choice((0.0, 0.0, 0.0, rng.uniform(5, 60)))
            connect = entered + wait
            end = connect + talk
            yield (i + 1, "pbx", f"{entered:.0f}.{i}", queue, entered, int(entered), end,
                   "answered", wait, connect, AGENTS[i % len(AGENTS)], talk, talk - min(hold, talk),
                   min(hold, talk), rng.uniform(0, 60), number,
                   rng.choice(("sale", "info", "callback", "")), int(rng.random() < 0.05),
                   None, None, 0, int(entered) // BUCKET_S, 0, 1, None)
        else:
            outcome = rng.choice(("abandoned", "abandoned", "abandoned", "timeout", "exit_key",
                                  "exit_empty"))
            yield (i + 1, "pbx", f"{entered:.0f}.{i}", queue, entered, int(entered),
                   entered + wait, outcome, wait, None, "", None, None, None, None, number, "",
                   0, None, None, 0, int(entered) // BUCKET_S, 0, 1, None)


def caller_gaps(rows: list[tuple]) -> list[tuple]:
    """prev/next gaps per caller number, as reports.facts computes them."""
    last: dict[str, int] = {}
    out = [list(r) for r in rows]
    for idx, row in enumerate(out):
        number = row[15]
        if number in last:
            prev = out[last[number]]
            row[18] = row[4] - prev[4]
            prev[19] = row[4] - prev[4]
            row[24] = row[18] if prev[7] == "answered" else None
        last[number] = idx
    return [tuple(r) for r in out]


async def build_store(path: str, n: int, config: Config) -> None:
    rng = random.Random(7)
    start = dt.datetime.combine(MONTH_START, dt.time(0), dt.timezone.utc).timestamp()
    store = await open_store(path)
    async with store:
        rows = caller_gaps(list(fake_calls(n, start, rng)))
        for lo in range(0, n, CHUNK):
            await store.insert_rows("queue_calls", CALL_COLUMNS, rows[lo:lo + CHUNK])
        answers = [(2 * r[0] + j, r[1], r[2], r[0], r[3], r[10], r[5], 1, q, kind,
                    str(rng.randint(1, 5) if kind == "csat" else rng.randint(1, 2)),
                    "answered", r[6] + 5, f"s{r[0]}", 1)
                   for r in rows if r[7] == "answered" and r[0] % 5 == 0
                   for j, (q, kind) in enumerate((("q1", "csat"), ("q2", "resolution")))]
        for lo in range(0, len(answers), CHUNK):
            await store.insert_rows("survey_answers", SURVEY_COLUMNS, answers[lo:lo + CHUNK])
        await store.executemany(
            "INSERT INTO agent_sessions (server, agent, queue, start_ts, end_ts)"
            " VALUES (?, ?, ?, ?, ?)",
            [("pbx", a, QUEUES[i % len(QUEUES)], start + d * 86400 + 8 * 3600,
              start + d * 86400 + 17 * 3600)
             for d in range(DAYS) for i, a in enumerate(AGENTS)])
        await store.executemany(
            "INSERT INTO agent_pauses (server, agent, reason, start_ts, end_ts)"
            " VALUES (?, ?, ?, ?, ?)",
            [("pbx", a, "lunch", start + d * 86400 + 12 * 3600, start + d * 86400 + 12.5 * 3600)
             for d in range(DAYS) for a in AGENTS])
        events = [make_event(server="pbx", kind=Kind.IVR_EXIT, ts=start + DAYS * 86400 * i / 50_000,
                             source="queue_log", call_id=f"ivr{i}", discr="main",
                             value=rng.choice(("self-service", "to-queue", "hangup")))
                  for i in range(50_000)]
        events += [make_event(server="pbx", kind=Kind.RING_NO_ANSWER,
                              ts=start + DAYS * 86400 * i / 20_000, source="queue_log",
                              call_id=f"rna{i}", queue=QUEUES[i % 5], agent=AGENTS[i % 120],
                              ring_s=15) for i in range(20_000)]
        await store.write(Batch(events=events))
        (last_id, data_end), = await store.fetch_all("SELECT max(id), max(ts) FROM events")
        await store.executemany(
            "INSERT INTO facts_state (name, value) VALUES (?, ?)",
            [("events_id", str(last_id)), ("settings", settings_fingerprint(config.kpi)),
             ("data_end", str(start + DAYS * 86400 + 7 * 86400))])


async def time_report(path: str, config: Config) -> tuple[dict, float]:
    store = await open_store(path)
    async with store:
        t0 = time.perf_counter()
        report = await refresh_and_build(store, config, MONTH_START,
                                    MONTH_START + dt.timedelta(days=DAYS - 1))
        render_json(report)
        return report, time.perf_counter() - t0


def time_html(path: str, config: Config) -> float:
    try:
        from reports.render_html import render_html
    except ImportError as exc:
        print(f"html: reports.render_html not importable ({exc}); html_s=nan")
        return float("nan")

    async def run() -> None:
        store = await open_store(path)
        async with store:
            report = await refresh_and_build(store, config, MONTH_START,
                                        MONTH_START + dt.timedelta(days=DAYS - 1))
            render_html(report)

    t0 = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - t0


async def time_scan(path: str) -> float:
    """One bare aggregate scan of the month's calls: the floor any report of them stands on."""
    lo = int(dt.datetime.combine(MONTH_START, dt.time(0), dt.timezone.utc).timestamp())
    store = await open_store(path)
    async with store:
        t0 = time.perf_counter()
        await store.fetch_all(
            "SELECT queue, count(*), sum(wait_s) FROM queue_calls"
            " WHERE entered_bucket >= ? AND entered_bucket < ? GROUP BY queue",
            (lo // BUCKET_S, (lo + DAYS * 86400) // BUCKET_S))
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--db", help="a postgresql:// URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    config = Config()
    with tempfile.TemporaryDirectory() as tmp, Backend(args.db, Path(tmp)) as backend:
        path = backend.store_url("bench")
        t0 = time.perf_counter()
        asyncio.run(build_store(path, args.calls, config))
        backend.settle()
        print(f"store ({backend.name}): {args.calls} queue calls built in "
              f"{time.perf_counter() - t0:.1f} s")
        report, json_s = asyncio.run(time_report(path, config))
        print(f"json: offered={report['totals']['offered']} "
              f"agents={len(report['agents'])} in {json_s:.2f} s")
        html_s = time_html(path, config)
        scan_s = asyncio.run(time_scan(path))
        print(f"bare aggregate scan of the month's calls: {scan_s:.3f} s (json at "
              f"{json_s / scan_s:.1f}x, html at {html_s / scan_s:.1f}x)")
        print(f"report calls={report['totals']['offered']} json_s={json_s:.2f} "
              f"html_s={html_s:.2f} scan_s={scan_s:.3f} json_scan_ratio={json_s / scan_s:.1f} "
              f"html_scan_ratio={html_s / scan_s:.1f} backend={backend.name}")


if __name__ == "__main__":
    main()
