"""Scenarios: a small TOML file describing a call-center run, and the call plan drawn from it.

Durations are in seconds (time is compressed: a 5 s talk stands for a 5 min one). A `[lo, hi]`
pair is drawn uniformly per caller/call; probabilities are fractions of 1. See docs/simulator.md
for every key; simulator/scenarios/smoke.toml is a commented example.
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from callkpi.errors import UserError

Range = tuple[float, float]
DEFAULT_SURVEY = {"digit": 1.0}  # without a [survey] table every caller answers with a digit


class ScenarioError(UserError):
    """The scenario file cannot be used; the message says which key is wrong."""


@dataclass(frozen=True)
class QueueSpec:
    name: str
    digit: str  # the IVR key that leads to this queue
    calls_per_min: float
    timeout_s: float = 0.0  # Queue() timeout; 0 = the caller may wait forever
    exit_key: float = 0.0  # fraction of its callers who press 0 to leave (needs context= in queues.conf)


@dataclass(frozen=True)
class AgentSpec:
    extension: str  # 4 digits: the member is Local/<extension>@sim-agents/n
    name: str  # MemberName, what queue_log writes in the agent column
    queues: tuple[str, ...]

    @property
    def interface(self) -> str:
        return f"Local/{self.extension}@sim-agents/n"


AGENT_ACTIONS = ("pause", "logout")
# Faults the timeline can order (simulator/controls.py carries them out):
#   restart        a graceful `core restart now` (Asterisk hangs every call up, then exits
#                  and comes back with its queue members, astdb kept)
#   crash          an abrupt kill -9 of Asterisk, started again `for_s` later (astdb kept)
#   listener-kill  a kill -9 of `callkpi listen`, started again `for_s` later
FAULTS = ("restart", "crash", "listener-kill")


@dataclass(frozen=True)
class AgentAction:
    """A timeline entry: an agent's break or logout, or a fault of the PBX or the listener
    (`agent` empty)."""

    at_s: float
    action: str  # pause | logout | restart | crash | listener-kill
    for_s: float = 0.0
    agent: str = ""  # extension
    reason: str = "break"

    @property
    def is_fault(self) -> bool:
        return self.action in FAULTS


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    arrivals_s: float  # callers arrive during this many seconds
    max_calls: int
    drain_timeout_s: float
    queues: tuple[QueueSpec, ...]
    agents: tuple[AgentSpec, ...]
    timeline: tuple[AgentAction, ...] = ()
    ivr_self_service: float = 0.0
    ivr_hangup: float = 0.0
    self_service_digit: str = "3"
    patience_s: Range = (10.0, 30.0)
    exit_key_after_s: Range = (2.0, 4.0)
    ring_s: Range = (0.5, 2.0)
    talk_s: Range = (3.0, 6.0)
    hold: float = 0.0
    hold_s: Range = (1.0, 2.0)
    acw_s: Range = (1.0, 2.0)
    dispositions: tuple[str, ...] = ("1", "2")
    survey: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SURVEY))
    survey_digits: Range = (1, 5)


@dataclass(frozen=True)
class PlannedCall:
    """Everything the simulated caller and the answering agent will do, drawn in advance."""

    call: str  # the simulator's id
    at_s: float
    caller_number: str
    queue: str  # the queue aimed for ("" for an IVR leaver)
    ivr: str  # digit pressed, or "hangup"
    patience_s: float
    exit_key_after_s: float  # 0 = never
    queue_timeout_s: float
    ring_s: float
    talk_s: float
    hold_at_s: float
    hold_s: float
    acw_s: float
    disposition: str  # digits the agent dials after *47
    survey: tuple[str, ...]  # per prompt: digit | invalid | none | hangup


def builtin_scenario_path(name: str) -> Path:
    return Path(str(resources.files("simulator") / "scenarios" / f"{name}.toml"))


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file; a bare name such as `smoke` means the shipped scenario."""
    path = Path(path)
    if not path.exists() and path.suffix == "" and builtin_scenario_path(path.name).exists():
        path = builtin_scenario_path(path.name)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"scenario file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: invalid TOML: {exc}") from None
    try:
        return _validated(_build(data, path.stem))
    except (KeyError, TypeError, ValueError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def _build(data: dict[str, Any], default_name: str) -> Scenario:
    ivr, caller, agent, survey = (data.pop(k, {}) for k in ("ivr", "caller", "agent", "survey"))
    queues = tuple(QueueSpec(**q) for q in data.pop("queue"))
    agents = tuple(AgentSpec(extension=str(a["extension"]), name=a["name"], queues=tuple(a["queues"]))
                   for a in data.pop("agents"))
    timeline = tuple(AgentAction(**{**t, "agent": str(t.get("agent", ""))})
                     for t in data.pop("timeline", []))
    scenario = Scenario(
        name=data.pop("name", default_name), seed=data.pop("seed", 1),
        arrivals_s=data.pop("arrivals_s"), max_calls=data.pop("max_calls", 1_000),
        drain_timeout_s=data.pop("drain_timeout_s", 120), queues=queues, agents=agents,
        timeline=timeline,
        ivr_self_service=ivr.pop("self_service", 0.0), ivr_hangup=ivr.pop("hangup", 0.0),
        self_service_digit=str(ivr.pop("self_service_digit", "3")),
        patience_s=_range(caller.pop("patience_s", (10, 30))),
        exit_key_after_s=_range(caller.pop("exit_key_after_s", (2, 4))),
        ring_s=_range(agent.pop("ring_s", (0.5, 2))), talk_s=_range(agent.pop("talk_s", (3, 6))),
        hold=agent.pop("hold", 0.0), hold_s=_range(agent.pop("hold_s", (1, 2))),
        acw_s=_range(agent.pop("acw_s", (1, 2))),
        dispositions=tuple(str(d) for d in agent.pop("dispositions", ("1", "2"))),
        survey_digits=_range(survey.pop("digits", (1, 5))),
        survey={k: float(survey.pop(k)) for k in ("digit", "invalid", "none", "hangup")
                if k in survey} or dict(DEFAULT_SURVEY),
    )
    leftovers = {**data, **{f"ivr.{k}": v for k, v in ivr.items()},
                 **{f"caller.{k}": v for k, v in caller.items()},
                 **{f"agent.{k}": v for k, v in agent.items()},
                 **{f"survey.{k}": v for k, v in survey.items()}}
    if leftovers:
        raise ValueError(f"unknown key {sorted(leftovers)[0]!r}")
    return scenario


def _range(value: Any) -> Range:
    lo, hi = value
    if not 0 <= lo <= hi:
        raise ValueError(f"range {value!r} must be [lo, hi] with 0 <= lo <= hi")
    return float(lo), float(hi)


def _validated(s: Scenario) -> Scenario:
    queue_names = {q.name for q in s.queues}
    for a in s.agents:
        if not (len(a.extension) == 4 and a.extension.isdigit()):
            raise ValueError(f"agent extension {a.extension!r} must be 4 digits")
        if unknown := set(a.queues) - queue_names:
            raise ValueError(f"agent {a.extension} is in unknown queue {sorted(unknown)[0]!r}")
    extensions = {a.extension for a in s.agents}
    for t in s.timeline:
        if t.action in AGENT_ACTIONS and t.agent not in extensions:
            raise ValueError(f"timeline entry {t}: unknown agent {t.agent!r}")
        if t.action in FAULTS and t.agent:
            raise ValueError(f"timeline entry {t}: a {t.action} names no agent")
        if t.action not in AGENT_ACTIONS + FAULTS:
            raise ValueError(f"timeline entry {t}: unknown action (one of "
                             f"{', '.join(AGENT_ACTIONS + FAULTS)})")
    if s.ring_s[1] >= 5:
        raise ValueError("agent.ring_s must stay under 5 s: the test queues ring a member 6 s")
    if s.ivr_self_service + s.ivr_hangup > 1 or sum(s.survey.values()) <= 0:
        raise ValueError("ivr fractions must sum to at most 1 and survey weights to more than 0")
    return s


def plan_calls(s: Scenario) -> list[PlannedCall]:
    """The calls of a run: Poisson arrivals per queue, each caller's behaviour drawn with the seed."""
    rng = random.Random(s.seed)
    arrivals = sorted((at, q) for q in s.queues for at in _poisson(rng, q.calls_per_min / 60, s.arrivals_s))
    return [_plan_call(rng, s, n, at, q) for n, (at, q) in enumerate(arrivals[: s.max_calls], 1)]


def _poisson(rng: random.Random, per_s: float, horizon_s: float) -> list[float]:
    times, t = [], rng.expovariate(per_s) if per_s > 0 else horizon_s
    while t < horizon_s:
        times.append(t)
        t += rng.expovariate(per_s)
    return times


def _plan_call(rng: random.Random, s: Scenario, n: int, at: float, q: QueueSpec) -> PlannedCall:
    def draw(r: Range) -> float:
        return round(rng.uniform(*r), 1)

    leave = rng.random()
    ivr = ("hangup" if leave < s.ivr_hangup else
           s.self_service_digit if leave < s.ivr_hangup + s.ivr_self_service else q.digit)
    talk, hold = draw(s.talk_s), draw(s.hold_s) if rng.random() < s.hold else 0.0
    kinds, weights = zip(*s.survey.items())
    survey = tuple(_survey_answer(rng, rng.choices(kinds, weights)[0], s.survey_digits) for _ in range(5))
    return PlannedCall(
        call=f"c{n:04d}", at_s=round(at, 2), caller_number=f"555{n:04d}",
        queue=q.name if ivr == q.digit else "", ivr=ivr,
        patience_s=draw(s.patience_s),
        exit_key_after_s=draw(s.exit_key_after_s) if rng.random() < q.exit_key else 0.0,
        queue_timeout_s=q.timeout_s, ring_s=draw(s.ring_s), talk_s=talk,
        hold_at_s=round(talk / 2, 1) if hold else 0.0, hold_s=hold, acw_s=draw(s.acw_s),
        disposition=rng.choice(s.dispositions), survey=survey)


def _survey_answer(rng: random.Random, kind: str, digits: Range) -> str:
    return str(rng.randint(int(digits[0]), int(digits[1]))) if kind == "digit" else kind
