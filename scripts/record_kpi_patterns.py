"""Record on the real sandbox Asterisk what it writes for the patterns the KPI rules handle
(docs/kpis.md): restarts with callers waiting and talking (`core restart now`, kill -9,
`core stop now`), persistent members and their pauses across them, ADDMEMBER of a paused
member, a blind transfer into another queue, and members named by their interface
(`log_membername_as_agent = no`, Asterisk's default).

    CALLKPI_SANDBOX_ROOT=... CALLKPI_SANDBOX_STATE=... .venv/bin/python scripts/record_kpi_patterns.py OUTDIR

Writes OUTDIR/restarts.{queue_log,ami-condensed.txt} and
OUTDIR/interface-members.{queue_log,ami-condensed.txt}; the tests in tests/test_facts_real.py
are built from the copies in examples/recordings/. Needs root (the sandbox is a chroot).
Every call is an AMI Originate: the customer's phone is a test-layer `sim-agents` extension
that answers and stays on the line, the PBX half runs the product's `callkpi-queue`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from simulator.ami import AmiClient, AmiError, Message
from simulator.sandbox import SCRIPT, Sandbox

SHOWN = ("Channel", "Queue", "Interface", "MemberName", "Membership", "Paused", "PausedReason",
         "Status", "InCall", "LoginTime", "LastPause", "HoldTime", "TalkTime", "Reason",
         "Position", "Shutdown", "Restart", "Uniqueid", "Linkedid", "Exten", "Extension",
         "Context", "Name", "Location")
KEPT = ("Queue", "Agent", "Shutdown", "FullyBooted", "Hangup", "BlindTransfer",
        "OriginateResponse", "Newchannel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """Drives one sandbox over AMI and keeps its events, one line each."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        self.lines: list[str] = []
        self.ami: AmiClient | None = None

    def on_event(self, msg: Message) -> None:
        name = msg.get("Event", "")
        if not name.startswith(KEPT) or name == "TestEvent":
            return
        fields = " ".join(f"{k}={msg[k]}" for k in SHOWN if k in msg)
        # Asterisk's own Timestamp (when it raised the event), then when it arrived here
        stamp = msg.get("Timestamp", "-")
        self.lines.append(f"{stamp} {time.time():.6f} {name:<22} {fields}")

    def note(self, text: str) -> None:
        self.lines.append(f"- {time.time():.6f} # {text}")

    async def connect(self) -> AmiClient:
        deadline = time.monotonic() + 60
        while True:
            ami = AmiClient(self.box.ami_host, self.box.ami_port, self.box.ami_user,
                            self.box.ami_secret, events="call,agent,user,system",
                            on_event=self.on_event)
            try:
                await ami.connect()
                self.ami = ami
                return ami
            except AmiError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def act(self, name: str, **headers: str) -> Message:
        assert self.ami is not None
        # (headers by name: mypy cannot tell them from action()'s own keyword arguments)
        reply = await cast(Any, self.ami).action(name, **headers)
        self.note(f"{name} {headers} -> {reply.get('Response')} {reply.get('Message', '')}")
        return reply

    async def call(self, phone: str, queue: str, number: str) -> None:
        """A customer whose phone (a sim-agents extension) answers and stays 120 s."""
        await self.act("Originate", Channel=f"Local/{phone}@sim-agents/n",
                       Context="callkpi-queue", Exten=queue, Priority="1",
                       CallerID=f'"Caller {number}" <{number}>', Async="true",
                       Variable="__SIM_RING=0,__SIM_TALK=120,SIM_CALL=rec")

    async def member_status(self) -> None:
        await self.act("QueueStatus")
        await asyncio.sleep(0.5)

    async def wait_booted(self) -> None:
        """After a restart: AMI back and the queue members reloaded."""
        if self.ami is not None:
            await self.ami.close()
            self.ami = None
        await asyncio.sleep(1.0)
        await self.connect()
        self.box.rx("core waitfullybooted")

    def pid(self) -> int:
        return int(Path(self.box.state, "asterisk.pid").read_text())


async def record_restarts(box: Sandbox) -> Recorder:
    rec = Recorder(box)
    await rec.connect()
    rec.note("members: 1001 support; 1002 support added paused; 1003 sales, paused 'break'")
    await rec.act("QueueAdd", Queue="support", Interface="Local/1001@sim-agents/n",
                  MemberName="Agent 1001", Paused="false")
    await rec.act("QueueAdd", Queue="support", Interface="Local/1002@sim-agents/n",
                  MemberName="Agent 1002", Paused="true", Reason="lunch")
    await rec.act("QueueAdd", Queue="sales", Interface="Local/1003@sim-agents/n",
                  MemberName="Agent 1003", Paused="false")
    await rec.act("QueuePause", Interface="Local/1003@sim-agents/n", Paused="true",
                  Reason="break")
    await asyncio.sleep(1.2)
    rec.note("graceful: A talks to 1001, B waits in support, C waits in sales; core restart now")
    await rec.call("9001", "support", "5550001")
    await asyncio.sleep(1.5)
    await rec.call("9002", "support", "5550002")
    await rec.call("9003", "sales", "5550003")
    await asyncio.sleep(3.0)
    box.rx("core restart now")
    await rec.wait_booted()
    rec.note("after the graceful restart: who does Asterisk say is a member, paused?")
    await rec.member_status()
    await asyncio.sleep(2.0)
    await rec.act("QueuePause", Queue="sales", Interface="Local/1003@sim-agents/n",
                  Paused="false")
    await rec.act("QueuePause", Queue="support", Interface="Local/1002@sim-agents/n",
                  Paused="false")
    await asyncio.sleep(2.0)
    # 1001 may be in wrap-up (ACW pause of the cut call): unpause everyone before the next part
    await rec.act("QueuePause", Interface="Local/1001@sim-agents/n", Paused="false")
    await rec.act("QueuePause", Interface="Local/1002@sim-agents/n", Paused="true",
                  Reason="meeting")
    await asyncio.sleep(1.2)
    rec.note("kill -9: D talks to 1001, E waits in support (1002 paused 'meeting')")
    await rec.call("9004", "support", "5550004")
    await asyncio.sleep(1.5)
    await rec.call("9005", "support", "5550005")
    await asyncio.sleep(3.0)
    os.kill(rec.pid(), 9)
    rec.note("kill -9 sent")
    await asyncio.sleep(4.0)
    box.restart()  # stop finds no process; start keeps the astdb (persistent members)
    await rec.wait_booted()
    rec.note("after kill -9")
    await rec.member_status()
    await asyncio.sleep(2.0)
    await rec.act("QueuePause", Queue="support", Interface="Local/1002@sim-agents/n",
                  Paused="false")
    await rec.act("QueuePause", Interface="Local/1001@sim-agents/n", Paused="false")
    await asyncio.sleep(1.2)
    rec.note("blind transfer: F talks to 1001 in support, then goes to queue sales (1003)")
    await rec.call("9006", "support", "5550006")
    await asyncio.sleep(3.0)
    channels = box.rx("core show channels concise")
    agent_leg = next(line.split("!")[0] for line in channels.splitlines()
                     if line.startswith("Local/1001@sim-agents") and ";1!" in line)
    await rec.act("BlindTransfer", Channel=agent_leg, Exten="sales", Context="callkpi-queue")
    await asyncio.sleep(5.0)
    rec.note("core stop now: G talks to 1003 in sales; H waits in support (1002 paused)")
    await rec.act("QueuePause", Interface="Local/1001@sim-agents/n", Paused="true",
                  Reason="meeting")
    await rec.act("QueuePause", Interface="Local/1002@sim-agents/n", Paused="true",
                  Reason="meeting")
    await asyncio.sleep(2.0)
    await rec.call("9008", "support", "5550008")
    await asyncio.sleep(3.0)
    box.restart()  # core stop now, then start with the astdb kept
    await rec.wait_booted()
    rec.note("after core stop now + start")
    await rec.member_status()
    if rec.ami:
        await rec.ami.close()
    return rec


async def record_interface_members(box: Sandbox) -> Recorder:
    rec = Recorder(box)
    await rec.connect()
    rec.note("log_membername_as_agent = no: 1004 added as 'Agent 1004', paused, takes a call")
    await rec.act("QueueAdd", Queue="support", Interface="Local/1004@sim-agents/n",
                  MemberName="Agent 1004", Paused="false")
    await rec.act("QueuePause", Queue="support", Interface="Local/1004@sim-agents/n",
                  Paused="true", Reason="break")
    await asyncio.sleep(1.2)
    await rec.act("QueuePause", Queue="support", Interface="Local/1004@sim-agents/n",
                  Paused="false")
    await rec.member_status()
    await rec.act("Originate", Channel="Local/9009@sim-agents/n", Context="callkpi-queue",
                  Exten="support", Priority="1", CallerID='"Caller" <5550009>', Async="true",
                  Variable="__SIM_RING=0,__SIM_TALK=3,SIM_CALL=rec")
    await asyncio.sleep(7.0)
    await rec.act("QueuePause", Interface="Local/1004@sim-agents/n", Paused="false")
    await rec.act("QueueRemove", Queue="support", Interface="Local/1004@sim-agents/n")
    await asyncio.sleep(0.5)
    if rec.ami:
        await rec.ami.close()
    return rec


def save(box: Sandbox, rec: Recorder, out: Path, name: str) -> None:
    shutil.copy(box.queue_log_path, out / f"{name}.queue_log")
    (out / f"{name}.ami-condensed.txt").write_text("\n".join(rec.lines) + "\n")


def interface_conf(base: Path) -> Path:
    """The product configuration with Asterisk's default log_membername_as_agent = no."""
    conf = base / "conf-interface"
    shutil.rmtree(conf, ignore_errors=True)
    shutil.copytree(Path(SCRIPT).parent.parent / "asterisk_conf", conf)
    queues = conf / "queues.conf"
    queues.write_text(queues.read_text().replace("log_membername_as_agent = yes",
                                                 "log_membername_as_agent = no"))
    return conf


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    box = Sandbox(ami_port=free_port(), agi_port=free_port())
    box.install()
    box.stop()
    box.start()
    box.reset_logs()
    try:
        save(box, await record_restarts(box), out, "restarts")
    finally:
        box.stop()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ASTCONF"] = str(interface_conf(Path(tmp)))
        box.start()
        box.reset_logs()
        try:
            save(box, await record_interface_members(box), out, "interface-members")
        finally:
            box.stop()
            del os.environ["ASTCONF"]
    subprocess.run(["ls", "-l", str(out)], check=False)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "recordings-kpi")))
