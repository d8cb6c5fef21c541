"""Which asyncio PostgreSQL driver the store is built on: psycopg 3 against asyncpg, on what
the store does with it. Both in one run on the same server and rows (events shaped as the
store's: 19 columns, NULLs among them):

1. COPY of 200,000 rows in batches of 20,000 into a temporary table (the write path):
   rows/s and the client's CPU per row (on two cores, the client's CPU is taken from the
   parser's);
2. reading 400,000 rows back as tuples (what `fetch_all` returns; asyncpg's records
   converted);
3. executemany of 20,000 rows in batches of 2,000;
4. 1,000 `SELECT 1` round trips.

    .venv/bin/pip install asyncpg   # not a dependency of callkpi
    .venv/bin/python bench/pg_driver.py --db postgresql://...

Last line: `pg_driver psycopg_copy=N asyncpg_copy=N psycopg_read=N asyncpg_read=N
psycopg_executemany=N asyncpg_executemany=N` (rows/s).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import psycopg

N_COPY, N_READ, N_MANY = 200_000, 400_000, 20_000
COLUMNS = ("server call_id kind queue agent tsec discr ts source wait_s talk_s ring_s position"
           " orig_position reason caller_number caller_name value extra").split()
TYPES = ["text"] * 5 + ["int8", "text", "float8", "text", "float8", "float8", "float8", "int8",
                        "int8"] + ["text"] * 5
DDL = ("CREATE TEMP TABLE t (" + ", ".join(
    f"{c} {'bigint' if t == 'int8' else 'double precision' if t == 'float8' else 'text'}"
    for c, t in zip(COLUMNS, TYPES)) + ")")
ROWS = [("pbx", f"1795000{i}.{i}", "connect", "support", "Agent 1001", 1795000000 + i, "",
         1795000000.0 + i, "queue_log", 12.0, None, None, 3, None, "", "5551234", "", "", "")
        for i in range(N_COPY)]


async def with_psycopg(url: str) -> dict[str, float]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute(DDL)
    out: dict[str, float] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    async with conn.cursor() as cur:
        for lo in range(0, N_COPY, 20_000):
            async with cur.copy(f"COPY t ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
                                ) as copy:
                copy.set_types(TYPES)
                for row in ROWS[lo:lo + 20_000]:
                    await copy.write_row(row)
    out["copy"], out["copy_cpu_us"] = _rate(N_COPY, wall), _us(N_COPY, cpu)
    await conn.execute("INSERT INTO t SELECT * FROM t")
    wall = time.perf_counter()
    rows = await (await conn.execute("SELECT * FROM t")).fetchall()
    out["read"] = _rate(len(rows), wall)
    await conn.execute("TRUNCATE t")
    wall = time.perf_counter()
    async with conn.cursor() as cur:
        for lo in range(0, N_MANY, 2_000):
            await cur.executemany(f"INSERT INTO t VALUES ({', '.join(['%s'] * 19)})",
                                  ROWS[lo:lo + 2_000])
    out["executemany"] = _rate(N_MANY, wall)
    wall = time.perf_counter()
    for _ in range(1000):
        await (await conn.execute("SELECT 1")).fetchone()
    out["round_trip_ms"] = (time.perf_counter() - wall)
    await conn.close()
    return out


async def with_asyncpg(url: str) -> dict[str, float]:
    import asyncpg

    conn: Any = await asyncpg.connect(url)
    await conn.execute(DDL)
    out: dict[str, float] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    for lo in range(0, N_COPY, 20_000):
        await conn.copy_records_to_table("t", records=ROWS[lo:lo + 20_000], columns=COLUMNS)
    out["copy"], out["copy_cpu_us"] = _rate(N_COPY, wall), _us(N_COPY, cpu)
    await conn.execute("INSERT INTO t SELECT * FROM t")
    wall = time.perf_counter()
    rows = [tuple(r) for r in await conn.fetch("SELECT * FROM t")]
    out["read"] = _rate(len(rows), wall)
    await conn.execute("TRUNCATE t")
    wall = time.perf_counter()
    for lo in range(0, N_MANY, 2_000):
        await conn.executemany(f"INSERT INTO t VALUES ({', '.join(f'${i}' for i in range(1, 20))})",
                               ROWS[lo:lo + 2_000])
    out["executemany"] = _rate(N_MANY, wall)
    wall = time.perf_counter()
    for _ in range(1000):
        await conn.fetchval("SELECT 1")
    out["round_trip_ms"] = (time.perf_counter() - wall)
    await conn.close()
    return out


def _rate(n: int, since: float) -> float:
    return n / (time.perf_counter() - since)


def _us(n: int, cpu_since: float) -> float:
    return (time.process_time() - cpu_since) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a postgresql:// URL")
    args = parser.parse_args()
    results = {}
    for name, run in (("psycopg", with_psycopg), ("asyncpg", with_asyncpg)):
        try:
            results[name] = asyncio.run(run(args.db))
        except ImportError:
            raise SystemExit("asyncpg is not installed: .venv/bin/pip install asyncpg")
        r = results[name]
        print(f"{name}: COPY {r['copy']:,.0f} rows/s ({r['copy_cpu_us']:.2f} µs client CPU a"
              f" row), read as tuples {r['read']:,.0f} rows/s, executemany"
              f" {r['executemany']:,.0f} rows/s, round trip {r['round_trip_ms']:.2f} ms")
    print("pg_driver " + " ".join(f"{name}_{key}={results[name][key]:.0f}"
                                  for key in ("copy", "read", "executemany")
                                  for name in ("psycopg", "asyncpg")))


if __name__ == "__main__":
    main()
