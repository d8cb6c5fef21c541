"""Survey server benchmark: `callkpi agi`, then in the same run a naive FastAGI survey (the
obvious implementation: each answer INSERTed and committed with sqlite3 before the next
command), each in its own process with a temp store of its own. A load client in a process of
its own speaks FastAGI as Asterisk 22 does (callkpi/testing/fakeasterisk.py) and keeps
CONCURRENCY sessions open, every caller answering the built-in survey with digits.

--load: first writes a 1,000,000-line queue_log (bench/ingest.py's generator); then, while a
side's sessions run, `callkpi ingest` of it into that side's store and `callkpi report`s of the
month one after another, until the ingest has ended and a report has finished (the same load
for both sides). The store's write lock is busy for seconds at a time, as on a PBX whose
backfill or nightly report runs beside calls.

Priority: the servers run 5 nice levels ahead of the load, as the shipped unit runs the survey
server (callkpi-agi.service: Nice=-5; a backfill by hand runs at 0, the nightly report at 10):
at nice -5 when the bench may (root), else with the load at nice 5. The client (Asterisk's
stand-in) runs at the server's priority: the figure is what the server adds, not the client's
own wait for a CPU. --same-priority runs everything at nice 0.
--pace: callers as on a phone: a caller's prompts play 0.15-0.45 s each and its answers take
0.5-1.5 s (drawn per caller, seeded), and the callers' first calls spread over a second, as
calls end at different moments (without it, replies are instant and every session starts at
once: a throughput test).
--restarted: the calls began before the server started, as in the minutes after a restart, so
each is looked up in the store first.

Round trip: from the client's reply to the server's next command (what a caller waits for on
top of Asterisk itself), over every command of every session; with --load, over those that
ended while the load ran. A session fails if it errors, is
not closed by the server after the thank-you, or its two answers are not in the store at the
end (after the server's SIGTERM).

    .venv/bin/python bench/agi.py [--sessions 200] [--concurrency 200] [--load] [--pace]
                                  [--same-priority] [--restarted]

Last line: `agi sessions=N failed=F p99_ms=P naive_p99_ms=Q naive_ratio=R load=0|1 priority=5|0`
(targets: 0 failures, p99 < 50 ms, with the load too).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import ingest as ingest_bench  # noqa: E402  (bench/ingest.py: the queue_log generator)

from callkpi.testing.fakeasterisk import FakeCall, environment  # noqa: E402

CALLKPI = str(Path(sys.executable).parent / "callkpi")
CONFIG = """
[server]
name = "bench"
[survey]
announce_text = true
"""
PLAY_S, THINK_S = (0.15, 0.45), (0.5, 1.5)  # --pace: a caller's range, drawn per caller
MONTH = ("2026-11-01", "2026-11-30")
PRIORITY = 5  # nice levels the survey server runs ahead of a backfill (callkpi-agi.service)  # the generated queue_log's days are in it
QUESTIONS = (("q1", "vm-press&digits/1&digits/2&digits/3&digits/4&digits/5"),
             ("q2", "if-correct-press&digits/1"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_listening(port: int, timeout_s: float = 30.0) -> None:
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


# ------------------------------------------------------------------ the naive server
async def naive_server(port: int, db: Path) -> None:
    """The same questions, each answer committed by sqlite3 in the event loop before the next
    command: every caller of the server waits while one commit waits for the write lock."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")  # the store's own settings
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS naive_answers (call_id TEXT, question TEXT,"
                 " value TEXT)")

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env = {}
        while line := (await reader.readline()).decode().rstrip("\n"):
            key, _, value = line.partition(":")
            env[key] = value.strip()
        if not env:  # a port probe (wait_listening)
            writer.close()
            return

        async def command(text: str) -> str:
            writer.write(text.encode() + b"\n")
            await writer.drain()
            return (await reader.readline()).decode()

        await command("GET VARIABLE CHANNEL(linkedid)")
        await command("ANSWER")
        for question, prompt in QUESTIONS:
            await command(f'SEND TEXT "SURVEY:{question}"')
            *intro, last = prompt.split("&")
            for sound in intro:
                await command(f'STREAM FILE {sound} "0123456789*#"')
            reply = await command(f"GET DATA {last} 6000 1")
            conn.execute("INSERT INTO naive_answers VALUES (?, ?, ?)",
                         (env["agi_arg_1"], question, reply.partition("result=")[2].split()[0]))
        await command('STREAM FILE auth-thankyou ""')
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port, backlog=1024)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    server.close()


# ------------------------------------------------------------------ the load
@dataclass
class Load:
    """A 1M-line ingest into the store, and month reports one after another beside it."""

    db: Path
    config: Path
    queue_log: Path
    niced: list[str]  # the command prefix that runs it (nice -n 5, or nothing)
    reports: int = 0
    ingest: subprocess.Popen | None = None
    ingest_s: float = 0.0
    report_s: list[float] = field(default_factory=list)

    def busy(self) -> bool:
        return self.ingest is not None and (self.ingest.poll() is None or self.reports == 0)

    def start(self) -> None:
        self._started = time.perf_counter()
        self._log = self.db.with_suffix(".ingest.log")
        with self._log.open("w") as log:
            self.ingest = subprocess.Popen(
                [*self.niced, CALLKPI, "--config", str(self.config), "ingest",
                 str(self.queue_log), "--db", str(self.db)], stdout=log,
                stderr=subprocess.STDOUT)

    def failed(self) -> RuntimeError:
        return RuntimeError(f"ingest failed: {self._log.read_text()[-2000:]}")

    async def writing(self) -> None:
        """Return once the ingest has stored its first events (the load is on)."""
        while True:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
                try:
                    if conn.execute("SELECT 1 FROM events WHERE source = 'queue_log' LIMIT 1"
                                    ).fetchone():
                        return
                except sqlite3.OperationalError:  # the naive store: no events table yet
                    pass
            if self.ingest is not None and self.ingest.poll() is not None:
                raise self.failed()
            await asyncio.sleep(0.05)

    async def reports_beside(self) -> None:
        assert self.ingest is not None
        while self.busy():
            started = time.perf_counter()
            report = await asyncio.create_subprocess_exec(
                *self.niced, CALLKPI, "--config", str(self.config), "report", "--from", MONTH[0], "--to",
                MONTH[1], "--format", "json", "--db", str(self.db),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, err = await report.communicate()
            if report.returncode != 0:
                raise RuntimeError(f"report failed: {err.decode()}")
            self.report_s.append(time.perf_counter() - started)
            self.reports += 1
            if self.ingest.poll() is not None and not self.ingest_s:
                self.ingest_s = time.perf_counter() - self._started
        if not self.ingest_s:
            self.ingest_s = time.perf_counter() - self._started
        if self.ingest.returncode != 0:
            raise self.failed()


# ------------------------------------------------------------------ the callers
def make_call(i: int, pace: random.Random | None, began: int) -> FakeCall:
    uid = f"{began}.{i}"
    call = FakeCall(environment(uid, [uid, "support", f"Agent {1000 + i % 50}"],
                                callerid=f"555{i:07d}"),
                    [str(1 + i % 5), str(1 + i % 2)])
    call.variables["CHANNEL(linkedid)"] = uid
    if pace is not None:
        call.play_s, call.think_s = pace.uniform(*PLAY_S), pace.uniform(*THINK_S)
    return call


async def client(port: int, first: int, sessions: int, concurrency: int, pace: bool,
                 restarted: bool, stop: Path) -> dict:
    """One side's caller load, in a process of its own (as Asterisk is): CONCURRENCY sessions
    at a time, back to back, until `sessions` have run and the file `stop` exists. The calls
    began now (after the server started), or with `restarted` a minute ago: as in the minutes
    after a restart, each is then looked up in the store before its survey."""
    if not restarted:  # calls that began after the server started, not in its second
        await asyncio.sleep(1 - time.time() % 1)
    began = int(time.time()) - (60 if restarted else 0)
    numbers = itertools.count(first)
    calls: list[FakeCall] = []
    errors = 0
    rng = random.Random(first) if pace else None

    async def caller() -> None:
        nonlocal errors
        if rng is not None:
            await asyncio.sleep(rng.uniform(0, 1))
        while len(calls) < sessions or not stop.exists():
            call = make_call(next(numbers), rng, began)
            calls.append(call)
            try:
                await call.run("127.0.0.1", port, timeout_s=120)
            except Exception as exc:  # counted as a failure, the run goes on
                errors += 1
                print(f"session error: {exc!r}", file=sys.stderr)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return {"seconds": time.perf_counter() - started, "errors": errors,
            "calls": [(c.env["agi_uniqueid"], c.closed_by_server) for c in calls],
            "round_trips": [(at, rt) for c in calls for at, rt in zip(c.arrived_at,
                                                                    c.round_trips)]}


@dataclass
class Side:
    """One server under test, its client process, and what the client measured."""

    name: str
    port: int
    server: subprocess.Popen
    first: int  # its callers' first number (uniqueids differ between sides)
    ahead: list[str]  # the command prefix of the server's priority
    client: subprocess.Popen | None = None
    result: dict = field(default_factory=dict)
    failed: int = 0
    window: tuple[float, float] = (0.0, float("inf"))  # the load's, in time.time()

    def start_client(self, args: argparse.Namespace, stop: Path, out: Path) -> None:
        self.out = out
        self.client = subprocess.Popen(
            [*self.ahead, sys.executable, __file__, "--client", str(self.port), str(self.first),
             str(args.sessions), str(args.concurrency), str(int(args.pace)),
             str(int(args.restarted)), str(stop), str(out)])

    def finish(self) -> None:
        assert self.client is not None
        if self.client.wait() != 0:
            raise RuntimeError(f"{self.name}: the client failed")
        self.result = json.loads(self.out.read_text())

    def round_trips(self) -> list[float]:
        """Every round trip, or with a load only those that ended while it ran."""
        start, end = self.window
        return sorted(rt for at, rt in self.result["round_trips"] if start <= at <= end)


async def drive(side: Side, args: argparse.Namespace, load: Load | None, tmp: Path) -> None:
    """The client until the side has run --sessions and the load (if any) is over."""
    stop = tmp / f"stop-{side.port}"
    if load is not None:
        load.start()
        await load.writing()
    else:
        stop.touch()
    side.start_client(args, stop, tmp / f"{side.port}.json")
    if load is not None:
        started = time.time()
        await load.reports_beside()
        side.window = (started, time.time())
        stop.touch()
    await asyncio.to_thread(side.finish)


def answered(db: Path, sql: str) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute(sql).fetchall())


def p99_ms(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] * 1000 if len(values) > 1 else 0.0


def describe(side: Side, failed: int) -> str:
    rts, sessions = side.round_trips(), len(side.result["calls"])
    seconds = side.result["seconds"]
    during = f" ({len(rts)} while the load ran)" if side.window[1] != float("inf") else ""
    return (f"{side.name}: {sessions} sessions ({failed} failed), "
            f"{len(side.result['round_trips'])} commands{during} in {seconds:.1f} s: "
            f"{(sessions - failed) / seconds:.0f} surveys/s, round trip p50 "
            f"{statistics.median(rts) * 1000:.1f} ms, p99 {p99_ms(rts):.1f} ms, max "
            f"{rts[-1] * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200, help="at least this many per server")
    parser.add_argument("--concurrency", type=int, default=200, help="sessions open per server")
    parser.add_argument("--load", action="store_true",
                        help="a 1M-line ingest and month reports into the store meanwhile")
    parser.add_argument("--lines", type=int, default=1_000_000, help="of the --load ingest")
    parser.add_argument("--same-priority", action="store_true",
                        help="the servers at the load's priority (not 5 nice levels ahead)")
    parser.add_argument("--pace", action="store_true",
                        help="callers as on a phone (prompts play, callers think)")
    parser.add_argument("--restarted", action="store_true",
                        help="calls that began before the server started (each is looked up)")
    parser.add_argument("--naive-server", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        asyncio.run(naive_server(int(args.naive_server[0]), Path(args.naive_server[1])))
        return
    if args.client:
        port, first, sessions, concurrency, pace, restarted, stop, out = args.client
        result = asyncio.run(client(int(port), int(first), int(sessions), int(concurrency),
                                    pace == "1", restarted == "1", Path(stop)))
        Path(out).write_text(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        config = tmp / "callkpi.toml"
        config.write_text(CONFIG)
        queue_log = None
        if args.load:
            queue_log = tmp / "queue_log"
            print(f"writing a {args.lines:,}-line queue_log ...", file=sys.stderr)
            ingest_bench.generate(queue_log, args.lines, seed=1)
        ours = phase("callkpi agi", args, config, tmp, queue_log)
        naive = phase("naive", args, config, tmp, queue_log)
    p99, naive_p99 = p99_ms(ours.round_trips()), p99_ms(naive.round_trips())
    print(f"agi sessions={len(ours.result['calls'])} failed={ours.failed} p99_ms={p99:.1f} "
          f"naive_p99_ms={naive_p99:.1f} naive_ratio={p99 / naive_p99 if naive_p99 else 0:.3g} "
          f"load={int(args.load)} priority={0 if args.same_priority else PRIORITY}")


def priorities(same: bool) -> tuple[list[str], list[str]]:
    """The command prefixes of the servers and of the load: PRIORITY nice levels apart."""
    if same:
        return [], []
    if os.geteuid() == 0:
        return ["nice", "-n", str(-PRIORITY)], []
    return [], ["nice", "-n", str(PRIORITY)]


def phase(name: str, args: argparse.Namespace, config: Path, tmp: Path,
          queue_log: Path | None) -> Side:
    """One server in its own store, its client, and the load (the same for both sides, one
    after the other: the two at once would double what the machine runs)."""
    db, port = tmp / f"{name.split()[0]}.db", free_port()
    ahead, behind = priorities(args.same_priority)
    if name == "naive":
        server = subprocess.Popen([*ahead, sys.executable, __file__, "--naive-server",
                                   str(port), str(db)], stdout=subprocess.PIPE, text=True)
    else:
        server = subprocess.Popen([*ahead, CALLKPI, "--config", str(config), "agi", "--port",
                                   str(port), "--db", str(db)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
    side = Side(name, port, server, first=0 if name != "naive" else 10_000_000, ahead=ahead)
    load = Load(db, config, queue_log, behind) if queue_log is not None else None
    try:
        asyncio.run(wait_listening(port))
        asyncio.run(drive(side, args, load, tmp))
        server.send_signal(signal.SIGTERM)
        summary, _ = server.communicate(timeout=90)
    finally:
        server.kill()
        if side.client is not None:
            side.client.kill()
        if load is not None and load.ingest is not None:
            load.ingest.kill()
    if name == "naive":
        stored = answered(db, "SELECT call_id, count(*) FROM naive_answers GROUP BY call_id")
    else:
        stored = answered(db, "SELECT call_id, count(*) FROM events"
                              " WHERE kind = 'survey-answer' AND reason = 'answered'"
                              " GROUP BY call_id")
        print(f"server: {summary.strip().splitlines()[-1]} (exit {server.returncode})")
    side.failed = side.result["errors"] + sum(
        1 for uid, closed in side.result["calls"] if not closed or stored.get(uid) != 2)
    if load is not None:
        print(f"load beside {name}: ingest of {args.lines:,} lines in {load.ingest_s:.1f} s, "
              f"{load.reports} month reports ({', '.join(f'{s:.1f}' for s in load.report_s)} s)")
    print(describe(side, side.failed))
    return side


if __name__ == "__main__":
    main()
