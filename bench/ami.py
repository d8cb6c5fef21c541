"""AMI listener benchmark: a fake AMI server (in its own process) streams recorded real events.

1. Throughput: N events of the real recording (examples/recordings, only the
   call/agent/user classes the listener's account reads, uniqueids and timestamps shifted per
   repetition so every call is new) as fast as the socket takes; events/s from the first byte
   to the last commit, and how many were lost.
2. Latency: a steady RATE events/s stamped with the time they are sent; p99 of event -> commit.

    .venv/bin/python bench/ami.py [--events 200000] [--rate 1000] [--seconds 5]

Last line: `ami events_per_s=N events_per_cpu_s=C lost=L p99_ms=P` (targets: >= 20000, -, 0,
< 250). events_per_cpu_s divides by the CPU time the listener's process used (the server is a
child process): on a machine shared with other work it moves far less than events_per_s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callkpi.testing.fakeami import FakeAmi, recorded_events  # noqa: E402
from ami_listener.listener import EVENT_MASK, Listener  # noqa: E402
from callkpi.config import AmiConfig  # noqa: E402
from callkpi.store import open_store  # noqa: E402

SECRET = "bench"
CLASSES = set(EVENT_MASK.split(","))
_PRIVILEGE = re.compile(rb"\r\nPrivilege: ([^\r]*)")
_TIMESTAMP = re.compile(rb"\r\nTimestamp: [0-9.]+")
NOT_STREAMED = 1  # FullyBooted, sent at login (the QueueStatus and Status lists are answers)


def listener_events() -> list[bytes]:
    """The recorded events Asterisk would send to the listener's account."""
    out = []
    for block in recorded_events():
        found = _PRIVILEGE.search(block)
        if found and CLASSES & set(found.group(1).decode().split(",")):
            out.append(block)
    return out


def throughput_stream(n: int) -> bytes:
    events = listener_events()
    chunks: list[bytes] = []
    rep = 0
    while len(chunks) < n:
        # 179549xxxx.y -> (179549 + rep)xxxx.y: new uniqueids, timestamps 10^4 s later per rep
        shift = str(179549 + rep).encode()
        chunks.extend(e.replace(b"179549", shift) + b"\r\n\r\n" for e in events)
        rep += 1
    return b"".join(chunks[:n])


# ---------------------------------------------------------------- the server process
def serve(port_pipe, mode: str, n: int, rate: int, seconds: float) -> None:
    asyncio.run(_serve(port_pipe, mode, n, rate, seconds))


async def _serve(port_pipe, mode: str, n: int, rate: int, seconds: float) -> None:
    payload = throughput_stream(n) if mode == "throughput" else b""
    server = await FakeAmi(secret=SECRET).start()
    port_pipe.send(server.port)
    while not server.logged_in:
        await asyncio.sleep(0.01)
    if mode == "throughput":
        # ~1 MiB writes, each of whole messages: the server answers the listener's actions in
        # between, and Asterisk never puts an answer inside another message
        start = 0
        while start < len(payload):
            end = payload.find(b"\r\n\r\n", start + (1 << 20))
            end = len(payload) if end == -1 else end + 4
            await server.write_raw(payload[start:end])
            start = end
    else:
        await _paced(server, rate, seconds)
    port_pipe.send("done")
    await asyncio.sleep(3600)  # until the parent ends us


async def _paced(server: FakeAmi, rate: int, seconds: float) -> None:
    events = throughput_stream(int(rate * seconds)).split(b"\r\n\r\n")[:-1]
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    start = time.monotonic()
    for i in range(0, len(events), per_tick):
        await asyncio.sleep(max(0.0, start + (i // per_tick) * tick - time.monotonic()))
        now = f"\r\nTimestamp: {time.time():.6f}".encode()
        batch = [_TIMESTAMP.sub(now, e) + b"\r\n\r\n" for e in events[i:i + per_tick]]
        await server.write_raw(b"".join(batch))


# ---------------------------------------------------------------- the listener side
async def run_phase(mode: str, n: int, rate: int, seconds: float) -> dict:
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=serve, args=(child, mode, n, rate, seconds),
                                   daemon=True)
    proc.start()
    port = parent.recv()
    expected = n if mode == "throughput" else len(
        throughput_stream(int(rate * seconds)).split(b"\r\n\r\n")[:-1])
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(Path(tmp) / "bench.db")
        async with store:
            listener = Listener(store, AmiConfig(port=port, secret=SECRET), "bench")
            task = asyncio.create_task(listener.run())
            await asyncio.wait_for(listener.connected.wait(), 10)
            started = time.perf_counter()
            cpu_started = time.process_time()
            stats = listener.stats
            stalled_since = time.monotonic()
            last = -1
            while stats.processed + stats.ignored + stats.dropped < expected + NOT_STREAMED:
                await asyncio.sleep(0.005)
                seen = stats.processed + stats.ignored + stats.dropped
                if seen != last:
                    last, stalled_since = seen, time.monotonic()
                elif time.monotonic() - stalled_since > 10:
                    break  # nothing moves any more: what is missing is lost
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            listener.stop()
            await task
            (stored,) = (await store.fetch_all("SELECT count(*) FROM events"))[0]
    proc.terminate()
    handled = stats.processed + stats.ignored - NOT_STREAMED
    latencies = sorted(stats.latencies)
    return {
        "expected": expected,
        "handled": handled,
        "lost": expected - handled,
        "dropped": stats.dropped,
        "stored": stored,
        "events_per_s": handled / elapsed,
        "events_per_cpu_s": handled / cpu,
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0,
        "median_ms": 1000 * statistics.median(latencies) if latencies else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    # the recording's sandbox dialplan sends an IVRExit without our Node header: one warning
    # per such event would drown the figures
    logging.basicConfig(level=logging.ERROR)
    fast = asyncio.run(run_phase("throughput", args.events, args.rate, args.seconds))
    print(f"throughput: {fast['handled']} of {fast['expected']} AMI events in "
          f"{fast['handled'] / fast['events_per_s']:.2f} s = {fast['events_per_s']:.0f}/s "
          f"({fast['events_per_cpu_s']:.0f} per CPU second of the listener); "
          f"{fast['stored']} canonical events stored; lost {fast['lost']} "
          f"(dropped by back-pressure {fast['dropped']})")
    steady = asyncio.run(run_phase("paced", 0, args.rate, args.seconds))
    print(f"latency at {args.rate}/s for {args.seconds:.0f} s: median "
          f"{steady['median_ms']:.1f} ms, p99 {steady['p99_ms']:.1f} ms; lost {steady['lost']}")
    print(f"ami events_per_s={fast['events_per_s']:.0f} "
          f"events_per_cpu_s={fast['events_per_cpu_s']:.0f} "
          f"lost={fast['lost'] + steady['lost']} p99_ms={steady['p99_ms']:.0f}")


if __name__ == "__main__":
    main()
