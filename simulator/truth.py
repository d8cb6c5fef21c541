"""Ground truth of a simulator run: what the simulated callers and agents did, keyed like
Asterisk keys calls (the caller channel's uniqueid = queue_log's callid). docs/simulator.md
documents the JSON this writes."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Call outcomes, from the caller's point of view.
ANSWERED = "answered"
ABANDONED = "abandoned"  # the caller ran out of patience in the queue
TIMEOUT = "timeout"  # the queue gave up (Queue() timeout)
EXIT_KEY = "exit_key"  # the caller pressed 0 to leave the queue
EXIT_EMPTY = "exit_empty"  # every agent of the queue logged out while the caller waited
CLOSED = "closed"  # the PBX ended the call (a restart or a crash) before an agent took it
IVR_SELF_SERVICE = "ivr_self_service"
IVR_HANGUP = "ivr_hangup"
NOT_STARTED = "not_started"  # Asterisk refused the Originate: the call never existed


@dataclass
class CallTruth:
    call: str  # the simulator's id
    uniqueid: str  # the caller's channel in the PBX (Local ;1): queue_log callid, AMI Uniqueid
    caller_number: str
    queue: str  # the queue the caller reached; "" if it left in the IVR
    ivr_node: str  # the IVR node the caller left from
    outcome: str
    agent: str = ""  # MemberName of the agent who answered
    wait_s: float | None = None  # digit pressed in the IVR -> answered / gave up / sent away
    talk_s: float | None = None  # agent answered -> agent hung up (hold included, as in queue_log)
    hold_s: float = 0.0
    hold_at: float | None = None  # when the agent put the caller on hold (epoch), if they did
    acw_s: float | None = None  # the agent's wrap-up pause after this call
    disposition: str = ""  # the code Asterisk writes (digits named by callkpi-disposition-names)
    survey: dict[str, str] = field(default_factory=dict)  # question -> digit|invalid|none|hangup
    started_at: float = 0.0  # epoch of the Originate
    # "restart" | "crash" when the PBX ended the call while the caller waited or talked (talk_s
    # and hold_s then run to that moment); "" when the people ended it
    ended_by: str = ""


@dataclass
class SessionTruth:
    queue: str
    login: float
    logout: float | None = None


@dataclass
class PauseTruth:
    reason: str
    start: float
    end: float | None = None


@dataclass
class AgentTruth:
    agent: str  # MemberName
    extension: str
    interface: str
    queues: list[str]
    sessions: list[SessionTruth] = field(default_factory=list)  # one per queue login
    pauses: list[PauseTruth] = field(default_factory=list)  # in all the agent's queues at once


@dataclass
class OutageTruth:
    kind: str  # restart | crash | listener (a kill -9 of `callkpi listen`)
    start: float  # the moment it was ordered
    end: float  # AMI answering again (restart, crash) / the listener logged in again


@dataclass
class AmiStats:
    events: int = 0
    seconds: float = 0.0
    events_per_s_avg: float = 0.0
    events_per_s_peak: int = 0


@dataclass
class Truth:
    scenario: str
    seed: int
    started_at: float
    finished_at: float = 0.0
    complete: bool = False  # every call ended and every agent logged out before the drain timeout
    problems: list[str] = field(default_factory=list)
    calls: list[CallTruth] = field(default_factory=list)
    agents: list[AgentTruth] = field(default_factory=list)
    ami: AmiStats = field(default_factory=AmiStats)
    outages: list[OutageTruth] = field(default_factory=list)  # the timeline's faults

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Truth":
        data = dict(data)
        data["calls"] = [CallTruth(**c) for c in data["calls"]]
        data["agents"] = [AgentTruth(**{**a, "sessions": [SessionTruth(**s) for s in a["sessions"]],
                                         "pauses": [PauseTruth(**p) for p in a["pauses"]]})
                          for a in data["agents"]]
        data["ami"] = AmiStats(**data["ami"])
        data["outages"] = [OutageTruth(**o) for o in data.get("outages", [])]
        return cls(**data)

    @classmethod
    def read(cls, path: str | Path) -> "Truth":
        return cls.from_dict(json.loads(Path(path).read_text()))
