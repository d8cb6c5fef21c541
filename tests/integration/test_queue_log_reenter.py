"""The same line twice in one second is two events (docs/kpis.md, rule 7), on the real
Asterisk: a caller re-enters an empty queue at once ([sim-reenter] in the test layer), so
Asterisk writes ENTERQUEUE and EXITEMPTY again within the same second, byte for byte. The
store keeps every one of them once, from queue_log, from AMI, and from both.

With CALLKPI_RECORD_TO=<dir> the run is also written there as a recording
(reenter_empty.queue_log, reenter_empty.ami.txt): examples/recordings/ holds the one the unit
tests replay (tests/test_queue_log_occurrences.py)."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from ami_listener.manager import AmiParser
from ami_listener.mapping import AmiMapper
from callkpi.events import Kind
from callkpi.store import Batch, open_store
from queue_log_parser.ingest import ingest_paths
from simulator.ami import AmiClient

pytestmark = pytest.mark.integration

TRIES = 4  # times the caller enters the empty queue


async def reenter(asterisk, capture: io.StringIO) -> str:
    """One caller entering [reenter-empty] TRIES times; its channel's uniqueid."""
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_event(message: dict[str, str]) -> None:
        if message.get("UserEvent") == "SimReenter" and not done.done():
            done.set_result(message["Uniqueid"])

    ami = AmiClient(asterisk.ami_host, asterisk.ami_port, asterisk.ami_user,
                    asterisk.ami_secret, on_event=on_event, capture=capture)
    await ami.connect()
    try:
        await ami.action("QueueStatus")  # what the listener asks for at every login
        await ami.action("Originate", Channel="Local/s@sim-reenter/n", Application="Wait",
                         Data="10", CallerID='"Jane Doe" <5551234>', Async="true",
                         Variable=[f"SIM_REENTER={TRIES}"])
        return await asyncio.wait_for(done, 60)
    finally:
        await ami.close()


def lines_of(path: Path, uniqueid: str, want: int, timeout: float = 30) -> list[str]:
    """The call's queue_log lines, once Asterisk has written `want` of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line + "\n" for line in path.read_text().splitlines()
                 if line.split("|")[1:2] == [uniqueid]]
        if len(lines) >= want or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)  # Asterisk writes them as the dialplan runs: look again


def ami_events(capture: str):
    messages, _ = AmiParser().feed(capture.encode())
    mapper, events = AmiMapper("pbx"), []
    for message in messages:
        if "Event" in message:
            events += mapper.map(message, 0.0).events
    return events


async def stored_kinds(db: Path, uniqueid: str) -> Counter:
    store = await open_store(db)
    try:
        rows = await store.fetch_all("SELECT kind FROM events WHERE call_id = ?", (uniqueid,))
    finally:
        await store.close()
    return Counter(kind for (kind,) in rows)


async def test_a_caller_reentering_an_empty_queue_is_every_entry_once(asterisk, tmp_path):
    capture = io.StringIO()
    uniqueid = await reenter(asterisk, capture)
    lines = lines_of(asterisk.queue_log_path, uniqueid, 2 * TRIES)
    assert [line.split("|")[4] for line in lines] == ["ENTERQUEUE", "EXITEMPTY"] * TRIES
    seconds = Counter(line.split("|")[0] for line in lines)
    assert max(seconds.values()) >= 4, lines  # the same lines again within one second
    if record_to := os.environ.get("CALLKPI_RECORD_TO"):
        Path(record_to, "reenter_empty.queue_log").write_text("".join(lines))
        Path(record_to, "reenter_empty.ami.txt").write_text(capture.getvalue())
    log = tmp_path / "queue_log"
    log.write_text("".join(lines))

    for name, ami_first in (("queue_log.db", None), ("ami-then-log.db", True),
                            ("log-then-ami.db", False)):
        db = tmp_path / name
        store = await open_store(db)
        try:
            if ami_first:
                await store.write(Batch(events=ami_events(capture.getvalue())))
            await ingest_paths(store, [str(log)], server="pbx", batch_lines=3)
            again = await ingest_paths(store, [str(log)], server="pbx", batch_lines=3,
                                       full=True)
            assert again.stored == 0
            if ami_first is False:
                await store.write(Batch(events=ami_events(capture.getvalue())))
        finally:
            await store.close()
        kinds = await stored_kinds(db, uniqueid)
        assert kinds[Kind.ENTER_QUEUE] == TRIES, name
        assert kinds[Kind.EXIT_EMPTY] == TRIES, name

    ami_only = tmp_path / "ami.db"  # the listener alone sees every entry too
    store = await open_store(ami_only)
    try:
        await store.write(Batch(events=ami_events(capture.getvalue())))
    finally:
        await store.close()
    assert (await stored_kinds(ami_only, uniqueid))[Kind.ENTER_QUEUE] == TRIES
