"""Several PBXs writing into one store at once: N AMI listeners, each in its own process with
its own server name, fed by one fake AMI server (in its own process) streaming the recorded
real events to all of them; the store one PostgreSQL database (or one SQLite file).

1. The store alone: N processes each writing `--events` canonical events (made from the
   recording) in batches of `--batch`, as fast as the store takes them, then one process
   alone: what the store takes, and what the write sequence's row lock (it serialises the
   writers) costs.
2. Throughput: every listener gets `--events` events as fast as its socket takes them;
   events/s stored by all of them together, from the first byte to the last commit; the
   same with one listener alone, in the same run.
3. Latency: `--rate` events/s to each listener for `--seconds`, stamped when sent; p99 of
   event -> commit over every listener's events.

    .venv/bin/python bench/writers.py --db postgresql://... [--writers 4] [--events 50000]
        [--rate 500] [--seconds 5]

Last line: `writers n=N store_events_per_s=S store_one_writer_events_per_s=S1
events_per_s=E one_writer_events_per_s=O p99_ms=P lost=L backend=B`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ami import NOT_STREAMED, SECRET, _paced, throughput_stream  # noqa: E402
from backends import Backend  # noqa: E402
from ami_listener.listener import Listener  # noqa: E402
from callkpi.config import AmiConfig  # noqa: E402
from callkpi.store import open_store  # noqa: E402
from callkpi.testing.fakeami import FakeAmi  # noqa: E402

STALL_S = 10  # nothing handled for this long: what is missing is lost


# ---------------------------------------------------------------- the AMI server process
def serve(pipe: Connection, listeners: int, mode: str, n: int, rate: int,
          seconds: float) -> None:
    asyncio.run(_serve(pipe, listeners, mode, n, rate, seconds))


async def _serve(pipe: Connection, listeners: int, mode: str, n: int, rate: int,
                 seconds: float) -> None:
    payload = throughput_stream(n) if mode == "throughput" else b""
    server = await FakeAmi(secret=SECRET).start()
    pipe.send(server.port)
    while len(server.logged_in) < listeners:
        await asyncio.sleep(0.01)
    pipe.recv()  # every listener is ready: go
    if mode == "throughput":
        view = memoryview(payload)
        for start in range(0, len(view), 1 << 20):
            await server.write_raw(bytes(view[start:start + (1 << 20)]))
    else:
        await _paced(server, rate, seconds)
    await asyncio.sleep(3600)  # until the parent ends us


# ---------------------------------------------------------------- a PBX's listener process
def listen(pipe: Connection, url: str, port: int, name: str, expected: int) -> None:
    logging.basicConfig(level=logging.ERROR)  # the recording's IVRExit lacks our Node header
    pipe.send(asyncio.run(_listen(pipe, url, port, name, expected)))


async def _listen(pipe: Connection, url: str, port: int, name: str, expected: int) -> dict:
    store = await open_store(url)
    async with store:
        listener = Listener(store, AmiConfig(port=port, secret=SECRET), name)
        task = asyncio.create_task(listener.run())
        await asyncio.wait_for(listener.connected.wait(), 30)
        pipe.send("ready")
        stats = listener.stats
        while stats.processed + stats.ignored + stats.dropped < NOT_STREAMED + 1:
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        stalled_since, last = time.monotonic(), -1
        while stats.processed + stats.ignored + stats.dropped < expected + NOT_STREAMED:
            await asyncio.sleep(0.005)
            seen = stats.processed + stats.ignored + stats.dropped
            if seen != last:
                last, stalled_since = seen, time.monotonic()
            elif time.monotonic() - stalled_since > STALL_S:
                break
        elapsed = time.perf_counter() - started
        listener.stop()
        await task
    return {"handled": stats.processed + stats.ignored - NOT_STREAMED, "elapsed": elapsed,
            "latencies": list(stats.latencies)}


# ---------------------------------------------------------------- the store alone
def canonical_events(n: int, name: str) -> list:
    """`n` canonical events as the listener makes them from the recording, of PBX `name`."""
    from ami_listener.manager import AmiParser
    from ami_listener.mapping import AmiMapper

    messages, _ = AmiParser().feed(throughput_stream(n))
    mapper, events = AmiMapper(name), []
    for message in messages:
        events.extend(mapper.map(message, time.time()).events)
    return events


def write_alone(pipe: Connection, url: str, name: str, n: int, batch: int) -> None:
    logging.basicConfig(level=logging.ERROR)
    events = canonical_events(n, name)
    pipe.send("ready")
    pipe.recv()
    pipe.send(asyncio.run(_write_alone(url, events, batch)))


async def _write_alone(url: str, events: list, batch: int) -> dict:
    from callkpi.store import Batch

    store = await open_store(url)
    async with store:
        started = time.perf_counter()
        for lo in range(0, len(events), batch):
            await store.write(Batch(events=events[lo:lo + batch]))
        return {"written": len(events), "elapsed": time.perf_counter() - started}


def run_store_phase(url: str, writers: int, n: int, batch: int, tag: str) -> float:
    pipes, procs = [], []
    for i in range(writers):
        ours, theirs = multiprocessing.Pipe()
        proc = multiprocessing.Process(target=write_alone, daemon=True,
                                       args=(theirs, url, f"{tag}{i + 1}", n, batch))
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    for pipe in pipes:
        pipe.send("go")
    results = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join()
    return sum(r["written"] for r in results) / max(r["elapsed"] for r in results)


# ---------------------------------------------------------------- one phase
def run_phase(url: str, writers: int, mode: str, n: int, rate: int, seconds: float) -> dict:
    expected = n if mode == "throughput" else len(
        throughput_stream(int(rate * seconds)).split(b"\r\n\r\n")[:-1])
    server_pipe, theirs = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, daemon=True,
                                     args=(theirs, writers, mode, n, rate, seconds))
    server.start()
    port = server_pipe.recv()
    pipes, procs = [], []
    for i in range(writers):
        ours, theirs = multiprocessing.Pipe()
        proc = multiprocessing.Process(target=listen, args=(theirs, url, port, f"pbx{i + 1}",
                                                            expected), daemon=True)
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    server_pipe.send("go")
    results = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join()
    server.terminate()
    handled = sum(r["handled"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    return {
        "expected": expected * writers,
        "handled": handled,
        "lost": expected * writers - handled,
        "events_per_s": handled / max(r["elapsed"] for r in results),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="a postgresql:// URL (default: one SQLite file)")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--events", type=int, default=50_000, help="per writer")
    parser.add_argument("--rate", type=int, default=500, help="events/s per writer")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=200, help="events per write, phase 1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Backend(args.db, Path(tmp)) as backend:
        url = backend.store_url("writers")
        asyncio.run(_create(url))
        store_many = run_store_phase(url, args.writers, args.events, args.batch, "many")
        store_one = run_store_phase(url, 1, args.events, args.batch, "one")
        print(f"the store alone, batches of {args.batch}: {args.writers} writers at once"
              f" {store_many:.0f} events/s together, 1 writer {store_one:.0f}/s")
        one = run_phase(url, 1, "throughput", args.events, args.rate, args.seconds)
        print(f"1 writer: {one['handled']} AMI events at {one['events_per_s']:.0f}/s,"
              f" lost {one['lost']}")
        many = run_phase(url, args.writers, "throughput", args.events, args.rate,
                         args.seconds)
        print(f"{args.writers} writers at once: {many['handled']} AMI events at"
              f" {many['events_per_s']:.0f}/s together ({many['events_per_s'] / one['events_per_s']:.2f}x"
              f" one writer), lost {many['lost']}")
        steady = run_phase(url, args.writers, "paced", 0, args.rate, args.seconds)
        print(f"{args.writers} writers at {args.rate}/s each for {args.seconds:.0f} s: p99 event"
              f" -> store {steady['p99_ms']:.1f} ms, lost {steady['lost']}")
        print(f"writers n={args.writers} store_events_per_s={store_many:.0f} "
              f"store_one_writer_events_per_s={store_one:.0f} "
              f"events_per_s={many['events_per_s']:.0f} "
              f"one_writer_events_per_s={one['events_per_s']:.0f} "
              f"p99_ms={steady['p99_ms']:.0f} lost={one['lost'] + many['lost'] + steady['lost']} "
              f"backend={backend.name}")


async def _create(url: str) -> None:
    """The store exists (migrated) before the writers start, as it would in production."""
    store = await open_store(url)
    await store.close()


if __name__ == "__main__":
    main()
