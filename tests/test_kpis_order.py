"""Rule 4 of docs/kpis.md as a property: any permutation of the files given to `ingest`
and of the lines inside one second gives the same report. Lines: what Asterisk 22 wrote for
restarts, persistent members and a blind transfer (examples/recordings/restarts.queue_log),
with the every-scenario recording of the same machine (holds, wrap-up, transfers, pauses)."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from callkpi.config import Config
from callkpi.store import open_store
from queue_log_parser.ingest import ingest_paths
from reports.kpis import refresh_and_build

RECORDINGS = Path(__file__).parent.parent / "examples" / "recordings"
LINES = [line for name in ("all-scenarios.queue_log", "restarts.queue_log")
         for line in (RECORDINGS / name).read_text().splitlines()]
DAYS = (dt.date(2026, 11, 24), dt.date(2026, 12, 2))
COMPARED = ("totals", "queues", "agents", "intervals", "staffing", "fcr_settled", "warnings",
            "survey")


def by_second(lines: list[str]) -> list[list[str]]:
    seconds: dict[str, list[str]] = {}
    for line in lines:
        seconds.setdefault(line.split("|", 1)[0], []).append(line)
    return list(seconds.values())


SECONDS = by_second(LINES)


async def report_of(files: list[list[str]], url: str) -> str:
    config = Config()
    config.report.timezone = "UTC"
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, lines in enumerate(files):
            path = Path(tmp) / f"queue_log.{i}"
            path.write_text("".join(f"{line}\n" for line in lines))
            paths.append(str(path))
        store = await open_store(url)
        try:
            await ingest_paths(store, paths, server="pbx", batch_lines=50)
            report = await refresh_and_build(store, config, *DAYS, interval="day")
        finally:
            await store.close()
    return json.dumps({k: report[k] for k in COMPARED}, sort_keys=True)


@st.composite
def shuffled_files(draw: st.DrawFn) -> list[list[str]]:
    """The log's seconds, each second's lines permuted, cut into files (a rotation may cut
    inside a second), the files in any order."""
    lines = [line for second in SECONDS for line in draw(st.permutations(second))]
    cuts = sorted(draw(st.lists(st.integers(1, len(lines) - 1), max_size=3, unique=True)))
    files = [lines[lo:hi] for lo, hi in zip([0, *cuts], [*cuts, len(lines)])]
    return draw(st.permutations(files))


EXPECTED: dict[str, str] = {}  # backend -> the report of the lines in the order written


# make_store_url makes a new store at each call: no state passes from one example to the next
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(files=shuffled_files())
async def test_any_file_order_and_same_second_order_give_the_same_report(files, backend,
                                                                         make_store_url):
    if backend not in EXPECTED:
        EXPECTED[backend] = await report_of([LINES], make_store_url())
    assert await report_of(files, make_store_url()) == EXPECTED[backend]
