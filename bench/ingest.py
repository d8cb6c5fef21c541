"""queue_log ingest benchmark: callkpi end to end against two floors, on the same file.

Generates (seeded, in a temp dir) a queue_log with the event mix and field layouts of an
Asterisk 22 call center (IVR exits and dispositions from our dialplan's QueueLog(), rings
not answered, answered calls with ACW pauses, abandons, timeouts, transfers, member changes),
then measures on that one file:

1. `callkpi ingest` in its own process into a fresh store: lines/s, and the peak of its
   RSS plus its helper process's (on SQLite a big backfill is shared by two processes);
2. a bare `line.split('|')` loop over the file (the parsing floor);
3. the naive floor of the backend, committed every `batch_lines` lines: SQLite, an
   executemany of the split fields into one table with a unique key, with the store's
   journal settings; PostgreSQL, a COPY of the split fields into a staging table and an
   INSERT ... ON CONFLICT DO NOTHING into one table with a unique key (COPY alone cannot
   skip a line twice in the file).

    .venv/bin/python bench/ingest.py [--lines 1000000] [--seed 1] [--db postgresql://...]

With --db, the PostgreSQL database gets a schema of its own for the run (dropped after);
without, SQLite files in a temporary directory.

Last line: `ingest lines_per_s=N naive_floor_ratio=R peak_rss_mb=M backend=B`
(targets: >= 250000, >= 0.7 on SQLite and >= 0.5 on PostgreSQL, < 200).
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backends import Backend  # noqa: E402
from callkpi.config import QueueLogConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CALLKPI = Path(sys.executable).parent / "callkpi"
QUEUES = ("support", "sales", "billing")
AGENTS = [f"Agent {n}" for n in range(1001, 1091)]
PAUSES = ("lunch", "break", "training", "meeting")
DISPOSITIONS = ("sale", "callback", "7", "resolved", "no-sale")
NAMES = ("Cust", "Jane Doe", "ACME Ltd", "", "O'Brien", "Müller")


class Generator:
    """Calls arrive every ~3 s; each call's lines are emitted in time order across calls."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.t = 1_795_000_000.0
        self.counter = 0
        self.heap: list[tuple[float, int, str]] = []
        self.seq = 0
        self.busy_until = dict.fromkeys(AGENTS, 0.0)  # an agent takes one call at a time

    def lines(self, n: int):
        emitted = 0
        yield f"{int(self.t)}|NONE|NONE|NONE|QUEUESTART|"
        emitted += 1
        while emitted < n:
            self._call()
            # everything more than an hour before the newest call start is final
            while self.heap and self.heap[0][0] < self.t - 3600 and emitted < n:
                yield heapq.heappop(self.heap)[2]
                emitted += 1
        while self.heap and emitted < n:
            yield heapq.heappop(self.heap)[2]
            emitted += 1

    def _at(self, t: float, uid: str, queue: str, agent: str, event: str, data: str) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, f"{int(t)}|{uid}|{queue}|{agent}|{event}|{data}"))

    def _uid(self, t: float) -> str:
        self.counter += 1
        return f"{int(t)}.{self.counter}"

    def _call(self) -> None:
        r = self.rng
        self.t += r.expovariate(1 / 3)
        t, uid, q = self.t, self._uid(self.t), r.choice(QUEUES)
        self._at(t, uid, "NONE", "NONE", "IVREXIT", f"to-queue|main|{q}")
        if r.random() < 0.05:
            self._member_change(t)
        pos = r.randint(1, 6)
        name = r.choice(NAMES)
        cid = f"555{r.randint(0, 9999999):07d}"
        self._at(t, uid, q, "NONE", "ENTERQUEUE", f"|{cid}|{pos}" + (f"|{name}" if name else ""))
        wait = 0
        for _ in range(r.choice((0, 0, 0, 1, 1, 2))):
            ring = r.choice((15000, 15000, 14998, 1000))
            wait += ring // 1000 + 1
            self._at(t + wait, uid, q, r.choice(AGENTS), "RINGNOANSWER", str(ring))
        fate = r.random()
        if fate < 0.12:
            wait += r.randint(1, 120)
            self._at(t + wait, uid, q, "NONE", "ABANDON", f"{r.randint(1, pos)}|{pos}|{wait}")
        elif fate < 0.17:
            wait += 300
            self._at(t + wait, uid, q, "NONE", "EXITWITHTIMEOUT", f"1|{pos}|{wait}")
        elif fate < 0.19:
            wait += r.randint(5, 60)
            self._at(t + wait, uid, q, "NONE", "EXITWITHKEY", f"0|1|{pos}|{wait}")
        elif fate < 0.20:
            self._at(t + wait, uid, q, "NONE", "EXITEMPTY", f"1|{pos}|{wait}")
        else:
            self._answered(t, uid, q, pos, wait)

    def _answered(self, t: float, uid: str, q: str, pos: int, wait: int) -> None:
        r = self.rng
        wait += r.randint(0, 40)
        free = [a for a, until in self.busy_until.items() if until < t + wait]
        if not free:  # nobody to take it: the caller gives up
            self._at(t + wait, uid, q, "NONE", "ABANDON", f"1|{pos}|{wait}")
            return
        agent = r.choice(free)
        ring = r.randint(0, 8)
        member = f"{int(t + wait)}.{self.counter}k"
        self._at(t + wait, uid, q, agent, "CONNECT", f"{wait}|{member}|{ring}")
        talk = int(r.lognormvariate(5, 0.8))
        end = t + wait + talk
        acw = r.randint(5, 60)
        self.busy_until[agent] = end + acw + 1
        how = r.random()
        if how < 0.03:
            self._at(end, uid, q, agent, "BLINDTRANSFER", f"s|survey|{wait}|{talk}|{pos}")
            return
        if how < 0.05:
            bridge = f"{r.getrandbits(64):x}"
            self._at(end, uid, q, agent, "ATTENDEDTRANSFER", f"BRIDGE|{bridge}|{wait}|{talk}|{pos}")
            return
        event = "COMPLETEAGENT" if how < 0.55 else "COMPLETECALLER"
        self._at(end, uid, q, agent, event, f"{wait}|{talk}|{pos}")
        self._at(end, "NONE", "NONE", agent, "PAUSEALL", "ACW")
        self._at(end, "NONE", q, agent, "PAUSE", "ACW")
        self._at(end + acw - 1, uid, q, agent, "DISPOSITION", r.choice(DISPOSITIONS))
        self._at(end + acw, "NONE", "NONE", agent, "UNPAUSEALL", "")
        self._at(end + acw, "NONE", q, agent, "UNPAUSE", "")

    def _member_change(self, t: float) -> None:
        r = self.rng
        agent, q = r.choice(AGENTS), r.choice(QUEUES)
        if r.random() < 0.5:
            reason = r.choice(PAUSES)
            self._at(t, "NONE", q, agent, "PAUSE", reason)
            self._at(t + r.randint(60, 1800), "NONE", q, agent, "UNPAUSE", "")
        else:
            self._at(t, "MANAGER", q, agent, "REMOVEMEMBER", "")
            self._at(t + r.randint(60, 1800), "MANAGER", q, agent, "ADDMEMBER", "")


def generate(path: Path, n: int, seed: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        buf = []
        for line in Generator(seed).lines(n):
            buf.append(line)
            if len(buf) >= 50_000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")


def measure_callkpi(path: Path, db: str) -> tuple[float, float, str]:
    """Wall time of `callkpi ingest` in its own process, and the peak of its RSS plus its
    helper process's (MB), sampled every 10 ms."""
    env = {**os.environ, "CALLKPI_CONFIG": os.devnull}
    start = time.perf_counter()
    proc = subprocess.Popen([str(CALLKPI), "ingest", "--db", db, str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_kb = 0
    while proc.poll() is None:
        peak_kb = max(peak_kb, tree_rss_kb(proc.pid))
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    out, err = proc.communicate()
    if proc.returncode:
        sys.exit(f"callkpi ingest failed: {err.strip()}")
    return elapsed, peak_kb / 1024, out.strip()


def tree_rss_kb(pid: int) -> int:
    """The resident memory of a process and all its descendants, in KB (0 once gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0
    rss = next((int(line.split()[1]) for line in status.splitlines()
                if line.startswith("VmRSS:")), 0)
    return rss + sum(tree_rss_kb(int(child)) for child in children)


def measure_split(path: Path) -> float:
    start = time.perf_counter()
    with path.open(encoding="utf-8", errors="backslashreplace") as f:
        for line in f:
            line.split("|")
    return time.perf_counter() - start


def measure_naive(path: Path, db: Path, batch: int) -> float:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE log (epoch, callid, queue, agent, event, data,"
                 " UNIQUE (epoch, callid, queue, agent, event, data))")
    sql = "INSERT OR IGNORE INTO log VALUES (?, ?, ?, ?, ?, ?)"
    start = time.perf_counter()
    with path.open(encoding="utf-8", errors="backslashreplace") as f:
        rows = []
        for line in f:
            rows.append(line.rstrip("\n").split("|", 5))
            if len(rows) == batch:
                conn.execute("BEGIN")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
                rows = []
        conn.execute("BEGIN")
        conn.executemany(sql, [r for r in rows if len(r) == 6])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def measure_naive_copy(path: Path, url: str, batch: int) -> float:
    """PostgreSQL's naive floor (see the module doc), in the run's own schema."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE log (epoch text, callid text, queue text, agent text,"
                     " event text, data text, UNIQUE (epoch, callid, queue, agent, event, data))")
        conn.execute("CREATE TEMP TABLE staging (LIKE log) ON COMMIT DELETE ROWS")
        start = time.perf_counter()
        with path.open(encoding="utf-8", errors="backslashreplace") as f:
            rows: list[list[str]] = []
            for line in f:
                rows.append(line.rstrip("\n").split("|", 5))
                if len(rows) == batch:
                    _copy_batch(conn, rows)
                    rows = []
            _copy_batch(conn, [r for r in rows if len(r) == 6])
        return time.perf_counter() - start


def _copy_batch(conn, rows: list[list[str]]) -> None:
    with conn.transaction():
        with conn.cursor().copy("COPY staging FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute("INSERT INTO log SELECT * FROM staging ON CONFLICT DO NOTHING")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--db", help="a postgresql:// URL (default: SQLite in a temp dir)")
    args = ap.parse_args()
    batch = QueueLogConfig().batch_lines
    with tempfile.TemporaryDirectory(prefix="callkpi-bench-") as tmp, \
            Backend(args.db, Path(tmp)) as backend:
        log = Path(tmp) / "queue_log"
        t0 = time.perf_counter()
        generate(log, args.lines, args.seed)
        size_mb = log.stat().st_size / 1e6
        print(f"generated {args.lines} lines ({size_mb:.0f} MB)"
              f" in {time.perf_counter() - t0:.1f} s")
        callkpi_s, peak_mb, summary = measure_callkpi(log, backend.store_url())
        print(f"callkpi ingest ({backend.name}): {callkpi_s:.2f} s, "
              f"{args.lines / callkpi_s:,.0f} lines/s, peak RSS {peak_mb:.0f} MB ({summary})")
        split_s = measure_split(log)
        print(f"split('|') loop: {split_s:.2f} s, {args.lines / split_s:,.0f} lines/s "
              f"(callkpi at {split_s / callkpi_s:.2f}x)")
        if backend.url:
            naive_name = "naive COPY + INSERT ON CONFLICT"
            naive_s = measure_naive_copy(log, backend.store_url(), batch)
        else:
            naive_name = "naive sqlite3 executemany"
            naive_s = measure_naive(log, Path(tmp) / "naive.db", batch)
        print(f"{naive_name}: {naive_s:.2f} s, {args.lines / naive_s:,.0f} lines/s "
              f"(callkpi at {naive_s / callkpi_s:.2f}x)")
        print(f"ingest lines_per_s={args.lines / callkpi_s:.0f} "
              f"naive_floor_ratio={naive_s / callkpi_s:.2f} peak_rss_mb={peak_mb:.0f} "
              f"backend={backend.name}")


if __name__ == "__main__":
    main()
