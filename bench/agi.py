"""Survey server benchmark: `callkpi agi` (its own process, a temp store) against a local load
client speaking FastAGI as Asterisk 22 does (callkpi/testing/fakeasterisk.py), SESSIONS calls with
CONCURRENCY of them open at once, each answering the built-in survey with digits.

Round trip: from the client's reply to the server's next command (what a caller waits for on
top of Asterisk itself), over every command of every session; an answer's round trip includes
its store commit. A session fails if it errors, is not closed by the server after the
thank-you, or its two answers are not in the store.

    .venv/bin/python bench/agi.py [--sessions 200] [--concurrency 200]

Last line: `agi sessions=N failed=F p99_ms=P` (targets: 0 failures, p99 < 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callkpi.testing.fakeasterisk import FakeCall, environment  # noqa: E402

CALLKPI = str(Path(sys.executable).parent / "callkpi")
CONFIG = """
[server]
name = "bench"
[survey]
announce_text = true
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_listening(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def make_call(i: int) -> FakeCall:
    uid = f"{1795000000 + i}.{i}"
    call = FakeCall(environment(uid, [uid, "support", f"Agent {1000 + i % 50}"],
                                callerid=f"555{i:07d}"),
                    [str(1 + i % 5), str(1 + i % 2)])
    call.variables["CHANNEL(linkedid)"] = uid
    return call


async def run_calls(port: int, sessions: int,
                    concurrency: int) -> tuple[list[FakeCall], int, float]:
    slots = asyncio.Semaphore(concurrency)
    calls = [make_call(i) for i in range(sessions)]
    errors = 0

    async def one(call: FakeCall) -> None:
        nonlocal errors
        async with slots:
            try:
                await call.run("127.0.0.1", port, timeout_s=60)
            except Exception as exc:  # counted as a failure, the run goes on
                errors += 1
                print(f"session error: {exc!r}", file=sys.stderr)

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in calls))
    return calls, errors, time.perf_counter() - started


def stored_answers(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT call_id, count(*) FROM events WHERE kind = 'survey-answer'"
                            " AND reason = 'answered' GROUP BY call_id").fetchall()
    return dict(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config, db, port = Path(tmp) / "callkpi.toml", Path(tmp) / "callkpi.db", free_port()
        config.write_text(CONFIG)
        server = subprocess.Popen([CALLKPI, "--config", str(config), "agi", "--port", str(port),
                                   "--db", str(db)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        try:
            asyncio.run(wait_listening(port))
            calls, errors, seconds = asyncio.run(run_calls(port, args.sessions, args.concurrency))
            server.send_signal(signal.SIGTERM)
            summary, _ = server.communicate(timeout=90)
        finally:
            server.kill()
        answers = stored_answers(db)
    failed = errors + sum(1 for c in calls if not c.closed_by_server
                          or answers.get(c.env["agi_uniqueid"]) != 2)
    round_trips = sorted(rt for c in calls for rt in c.round_trips)
    p99_ms = statistics.quantiles(round_trips, n=100)[98] * 1000 if len(round_trips) > 1 else 0.0
    p50_ms = statistics.median(round_trips) * 1000 if round_trips else 0.0
    print(f"server: {summary.strip()} (exit {server.returncode})")
    print(f"{args.sessions} sessions, {args.concurrency} at once, {len(round_trips)} commands "
          f"in {seconds:.2f} s: {(args.sessions - failed) / seconds:.0f} completed surveys/s, "
          f"round trip p50 {p50_ms:.1f} ms, p99 {p99_ms:.1f} ms, "
          f"max {round_trips[-1] * 1000 if round_trips else 0:.1f} ms")
    print(f"agi sessions={args.sessions} failed={failed} p99_ms={p99_ms:.1f}")


if __name__ == "__main__":
    main()
