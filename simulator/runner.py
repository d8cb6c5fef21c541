"""Drive a scenario through a real Asterisk over AMI and record the ground truth.

Every simulated call is one AMI Originate of a Local channel (simulator/test_layer/
extensions.conf explains the dialplan side): the PBX half runs the product's IVR, queue and
survey; the customer half and the agents' phones are test-layer dialplan that report what the
simulated people did with `SimCaller`/`SimAgent` UserEvents. The truth is built from those
reports and from this module's own actions (agent logins, pauses, feature codes); the uniqueid
of each call is read back from OriginateResponse, so the truth is keyed like Asterisk's logs.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, TextIO

from callkpi.errors import UserError
from simulator.ami import AmiClient, AmiError, Message
from simulator.controls import Controls
from simulator.scenario import AgentAction, AgentSpec, PlannedCall, Scenario, plan_calls
from simulator import truth as t

# The product's callkpi-disposition-names (asterisk_conf/extensions.conf): digits the agent
# dials -> the code Asterisk writes. Digits not listed are written as dialled.
DISPOSITION_NAMES = {"1": "resolved", "2": "sale", "3": "callback", "4": "escalated"}
RING_WINDOW_S = 7.0  # a member offered a call is engaged this long at most (queue timeout 6 s)
SURVEY_ALLOWANCE_S = 40.0  # how long a caller stays on the line for the survey
RECONNECT_TIMEOUT_S = 60.0  # after a restart or crash, AMI must answer again within this


class SimulationError(UserError):
    """The run could not start (AMI unreachable, login refused, agents could not log in)."""


@dataclass
class _Call:
    plan: PlannedCall
    uniqueid: str = ""
    started_at: float = 0.0
    ended_at: float | None = None
    caller: dict[str, float] = field(default_factory=dict)  # SimCaller action -> ts
    node: str = ""
    survey: dict[str, str] = field(default_factory=dict)
    agent: str = ""  # extension of the agent who got the call
    agent_times: dict[str, float] = field(default_factory=dict)  # SimAgent action -> ts
    answered_at: dict[str, float] = field(default_factory=dict)  # extension -> its Answer() ts
    acw: tuple[float, float] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    ended_by: str = ""  # restart | crash: the PBX cut the call while it waited or talked
    cut_at: float | None = None  # when it did


@dataclass
class _Agent:
    spec: AgentSpec
    record: t.AgentTruth
    busy: bool = False  # on a call or in its wrap-up
    engaged_until: float = 0.0  # being rung
    logged_in: bool = False

    def idle(self) -> bool:
        return not self.busy and time.time() >= self.engaged_until


async def run_scenario(scenario: Scenario, ami_host: str, ami_port: int, ami_user: str,
                       ami_secret: str, *, capture: TextIO | None = None,
                       controls: Controls | None = None) -> t.Truth:
    """Run `scenario` against the Asterisk at ami_host:ami_port (the AMI user needs
    originate rights) and return what happened. `capture` receives the raw AMI text;
    `controls` carry out the timeline's faults (restart, crash, listener-kill)."""
    controls = controls or Controls()
    for action in scenario.timeline:
        if action.is_fault and (why := controls.missing_for(action.action)):
            raise SimulationError(f"timeline at {action.at_s:g} s: {why}")
    run = _Run(scenario, controls)

    def client() -> AmiClient:
        return AmiClient(ami_host, ami_port, ami_user, ami_secret, on_event=run.on_event,
                         capture=capture)

    run.connect = client
    try:
        run.ami = client()
        await run.ami.connect()
    except AmiError as exc:
        raise SimulationError(str(exc)) from None
    try:
        await run.execute()
    finally:
        await run.ami.close()
    return run.truth


class _Run:
    def __init__(self, scenario: Scenario, controls: Controls) -> None:
        self.scenario = scenario
        self.controls = controls
        self.ami: AmiClient
        self.connect: Callable[[], AmiClient]
        self.pbx_up = asyncio.Event()  # cleared while a restart or crash is under way
        self.pbx_up.set()
        self.calls = {p.call: _Call(p) for p in plan_calls(scenario)}
        self.by_uniqueid: dict[str, _Call] = {}
        self.by_action: dict[str, _Call] = {}
        self.agents = {a.extension: _Agent(a, t.AgentTruth(a.name, a.extension, a.interface,
                                                           list(a.queues)))
                       for a in scenario.agents}
        self.by_member = {a.name: self.agents[a.extension] for a in scenario.agents}
        self.truth = t.Truth(scenario.name, scenario.seed, started_at=time.time())
        self.events_per_second: collections.Counter[int] = collections.Counter()
        self.tasks: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- the run
    async def execute(self) -> None:
        try:
            for agent in self.agents.values():
                await self._login(agent)
            start = time.time()
            for action in self.scenario.timeline:
                self._spawn(self._fault(start, action) if action.is_fault
                            else self._agent_action(start, action))
            await self._originate_all(start)
            await self._drain(start + self.scenario.arrivals_s + self.scenario.drain_timeout_s)
        finally:
            for task in list(self.tasks):
                task.cancel()
            await self.logout_all()
        self.truth.finished_at = time.time()
        self.truth.calls = [self._call_truth(c) for c in self.calls.values()]
        self.truth.agents = [a.record for a in self.agents.values()]
        self.truth.ami = self._ami_stats(start)

    async def _drain(self, deadline: float) -> None:
        """Wait for every call to end and every agent to finish its wrap-up and breaks."""
        try:
            await asyncio.wait_for(asyncio.gather(*(c.ended.wait() for c in self.calls.values())),
                                   max(1.0, deadline - time.time()))
            await asyncio.wait_for(asyncio.gather(*self.tasks), max(1.0, deadline - time.time()))
            self.truth.complete = True
        except asyncio.TimeoutError:
            self.truth.problems.append("drain timeout: calls or agent actions still running")

    async def _originate_all(self, start: float) -> None:
        for call in self.calls.values():
            await asyncio.sleep(max(0.0, start + call.plan.at_s - time.time()))
            await self._originate(call)

    async def _originate(self, call: _Call) -> None:
        await self.pbx_up.wait()  # a caller does not get through while the PBX is down
        p = call.plan
        variables = [
            f"__SIM_CALL={p.call}", f"SIM_IVR={p.ivr}",
            f"SIM_PATIENCE={60 if p.ivr == self.scenario.self_service_digit else p.patience_s}",
            f"SIM_EXITKEY_AFTER={p.exit_key_after_s}",
            f"SIM_END_WAIT={p.ring_s + p.talk_s + p.hold_s + SURVEY_ALLOWANCE_S}",
            f"SIM_SURVEY={'-'.join(p.survey)}",
            f"CALLKPI_QUEUE_TIMEOUT={int(p.queue_timeout_s) if p.queue_timeout_s else ''}",
            f"__SIM_RING={p.ring_s}", f"__SIM_TALK={p.talk_s}",
            f"__SIM_HOLD_AT={p.hold_at_s}", f"__SIM_HOLD={p.hold_s}",
        ]
        call.started_at = time.time()
        self.by_action[f"orig-{p.call}"] = call
        reply = await self._action(
            "Originate", action_id=f"orig-{p.call}", Channel="Local/s@sim-caller/n",
            Context="callkpi-ivr-example", Exten="s", Priority="1",
            CallerID=f'"Caller {p.call}" <{p.caller_number}>', Timeout="30000", Async="true",
            Variable=variables)
        if reply.get("Response") != "Success":
            self._not_started(call, reply.get("Message", ""))

    def _not_started(self, call: _Call, why: str) -> None:
        self.truth.problems.append(f"{call.plan.call}: Originate failed: {why}")
        call.ended_at = time.time()
        call.ended.set()

    # ---------------------------------------------------------------- agents
    async def _login(self, agent: _Agent) -> None:
        for queue in agent.spec.queues:
            reply = await self._action("QueueAdd", Queue=queue, Interface=agent.spec.interface,
                                       MemberName=agent.spec.name, Penalty="0", Paused="false")
            if reply.get("Response") != "Success":
                raise SimulationError(f"cannot log {agent.spec.name} into {queue}: "
                                      f"{reply.get('Message', '')} (is the member already there?)")
            agent.record.sessions.append(t.SessionTruth(queue, login=time.time()))
        agent.logged_in = True

    async def logout_all(self) -> None:
        """Every agent leaves its queues, also when the run fails: the next run logs them in."""
        for agent in self.agents.values():
            await self._logout(agent)

    async def _logout(self, agent: _Agent) -> None:
        if not agent.logged_in:
            return
        for session in agent.record.sessions:
            if session.logout is None:
                await self._action("QueueRemove", Queue=session.queue,
                                   Interface=agent.spec.interface)
                session.logout = time.time()
        agent.logged_in = False

    async def _agent_action(self, start: float, action: AgentAction) -> None:
        agent = self.agents[action.agent]
        await asyncio.sleep(max(0.0, start + action.at_s - time.time()))
        while not agent.idle():  # a real agent takes a break between calls, not during one
            await asyncio.sleep(0.1)
        if action.action == "logout":
            await self._logout(agent)
            await asyncio.sleep(action.for_s)
            await self._login(agent)
            return
        agent.busy = True
        await self._pause(agent, action.reason)
        await asyncio.sleep(action.for_s)
        await self._action("QueuePause", Interface=agent.spec.interface, Paused="false")
        agent.record.pauses[-1].end = time.time()
        agent.busy = False

    async def _pause(self, agent: _Agent, reason: str) -> None:
        await self._action("QueuePause", Interface=agent.spec.interface, Paused="true",
                           Reason=reason)
        agent.record.pauses.append(t.PauseTruth(reason, start=time.time()))

    async def _after_call(self, agent: _Agent, call: _Call, hung_up_at: float) -> None:
        """Wrap-up: the PBX paused the agent (ACW) as the call ended; set the disposition, resume."""
        agent.record.pauses.append(t.PauseTruth("ACW", start=hung_up_at))
        await asyncio.sleep(call.plan.acw_s)
        await self._dial(agent, f"*47{call.plan.disposition}")
        end = await self._dial(agent, "*49")
        agent.record.pauses[-1].end = end
        call.acw = (hung_up_at, end)
        agent.busy = False

    async def _dial(self, agent: _Agent, code: str) -> float:
        """The agent's phone dials a feature code of the product (callkpi-agent-codes);
        returns when it was dialled."""
        await self._action("Originate", Channel="Local/s@sim-phone/n",
                           Context="callkpi-agent-codes", Exten=code, Priority="1",
                           CallerID=f"<{agent.spec.extension}>", Async="true")
        dialled = time.time()
        await asyncio.sleep(0.3)  # the code runs; a person does not dial twice in one instant
        return dialled

    # ---------------------------------------------------------------- faults
    async def _action(self, name: str, *, action_id: str = "", timeout: float = 10.0,
                      **headers: str | list[str]) -> Message:
        """An AMI action on the PBX as it is now: while a restart or crash is under way it
        waits for the PBX to be back; one refused by a PBX going down is sent again then."""
        while True:
            await self.pbx_up.wait()
            try:
                reply = await self.ami.action(name, action_id=action_id, timeout=timeout,
                                              **headers)
            except AmiError:
                if self.pbx_up.is_set():
                    raise
                continue
            if reply.get("Response") == "Success" or self.pbx_up.is_set():
                return reply

    async def _fault(self, start: float, action: AgentAction) -> None:
        await asyncio.sleep(max(0.0, start + action.at_s - time.time()))
        begun = time.time()
        if action.action == "listener-kill":
            await self.controls.kill_listener()
            await asyncio.sleep(action.for_s)
            await self.controls.start_listener()
            self.truth.outages.append(t.OutageTruth("listener", begun, time.time()))
            return
        self.pbx_up.clear()
        cut = [c for c in self.calls.values() if c.started_at and not c.ended.is_set()]
        if action.action == "restart":
            await self.controls.restart_pbx()
        else:
            await self.controls.crash_pbx(action.for_s)
        await self._reconnect()
        for call in cut:
            self._cut(call, action.action, begun)
        self.truth.outages.append(t.OutageTruth(action.action, begun, time.time()))
        self.pbx_up.set()

    async def _reconnect(self) -> None:
        """A new AMI session once the PBX is back (the old one ended with it)."""
        old = self.ami
        deadline = time.time() + RECONNECT_TIMEOUT_S
        while True:
            self.ami = self.connect()
            try:
                await self.ami.connect()
                break
            except AmiError:
                if time.time() > deadline:
                    raise SimulationError("AMI did not answer again after the restart") from None
                await asyncio.sleep(0.2)
        await old.close()

    def _cut(self, call: _Call, how: str, at: float) -> None:
        """The PBX ended `call` (restart: it hung the call up, and the agent's wrap-up
        began, as the product dialplan does; crash: the call vanished, nothing ran)."""
        if call.agent and "hangup" in call.agent_times and call.agent_times["hangup"] < at:
            call.ended_at = call.ended_at or at  # its queue call had ended: the survey was cut
            call.ended.set()
            return
        call.ended_by = how
        # the moment the PBX hung it up (its Hangup, when a restart said so), else the fault's
        call.cut_at = call.agent_times.get("hangup", call.ended_at or at)
        if call.agent and "hangup" not in call.agent_times:
            call.agent_times["hangup"] = call.cut_at
            if how == "restart":
                self._spawn(self._after_call(self.agents[call.agent], call, call.cut_at))
            else:
                self.agents[call.agent].busy = False
        call.ended_at = call.ended_at or call.cut_at
        call.ended.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # ---------------------------------------------------------------- AMI events
    def on_event(self, msg: Message) -> None:
        ts = float(msg.get("Timestamp") or time.time())
        self.events_per_second[int(ts)] += 1
        name = msg["Event"]
        if name == "OriginateResponse" and (call := self.by_action.get(msg.get("ActionID", ""))):
            if msg.get("Response") == "Success":
                call.uniqueid = msg["Uniqueid"]
                self.by_uniqueid[call.uniqueid] = call
            else:
                self._not_started(call, f"reason {msg.get('Reason')}")
        elif name == "Hangup" and (call := self.by_uniqueid.get(msg.get("Uniqueid", ""))):
            call.ended_at = ts
            call.ended.set()
            if call.agent and "hangup" not in call.agent_times:  # the caller hung up mid-talk
                self._talk_ended(call, ts)
        elif name == "AgentCalled" and (agent := self.by_member.get(msg.get("MemberName", ""))):
            agent.engaged_until = max(agent.engaged_until, time.time() + RING_WINDOW_S)
        elif (name == "AgentConnect" and (call := self.by_uniqueid.get(msg.get("Uniqueid", "")))
              and (agent := self.by_member.get(msg.get("MemberName", ""))) and not call.agent):
            # The queue bridged the caller to this member: the call is answered (Asterisk logs
            # CONNECT) even when the caller's patience runs out in the moment before the
            # agent's phone says "connected" to it, and the caller hangs up a second later.
            call.agent = agent.spec.extension
            call.answered_at.setdefault(agent.spec.extension, ts)
            agent.busy = True
        elif name == "UserEvent" and (call := self.calls.get(msg.get("Call", ""))):
            if msg["UserEvent"] == "SimCaller":
                self._caller_event(call, msg, ts)
            elif msg["UserEvent"] == "SimAgent":
                self._agent_event(call, msg, ts)

    def _caller_event(self, call: _Call, msg: Message, ts: float) -> None:
        action = msg.get("Action", "")
        call.caller[action] = ts
        if msg.get("Node"):
            call.node = msg["Node"]
        if action == "survey":
            call.survey[msg.get("Question", "")] = msg.get("Answer", "")

    def _agent_event(self, call: _Call, msg: Message, ts: float) -> None:
        action, extension = msg.get("Action", ""), msg.get("Agent", "")
        agent = self.agents.get(extension)
        if action == "answer":
            call.answered_at[extension] = ts
        elif action == "connected" and agent:  # only the member the queue bridged gets here
            call.agent = extension
            agent.busy = True
        if extension != call.agent:
            return
        if action == "hangup":
            self._talk_ended(call, ts)
        else:
            call.agent_times[action] = ts

    def _talk_ended(self, call: _Call, ts: float) -> None:
        call.agent_times["hangup"] = ts
        self._spawn(self._after_call(self.agents[call.agent], call, ts))

    # ---------------------------------------------------------------- the truth
    def _call_truth(self, call: _Call) -> t.CallTruth:
        p, caller = call.plan, call.caller
        pressed = caller.get("pressed")
        record = t.CallTruth(call=p.call, uniqueid=call.uniqueid, caller_number=p.caller_number,
                             queue=p.queue, ivr_node=call.node, outcome=self._outcome(call),
                             survey=call.survey, started_at=call.started_at)
        if record.outcome in (t.IVR_SELF_SERVICE, t.IVR_HANGUP, t.NOT_STARTED):
            record.queue = ""
            return record
        record.ended_by = call.ended_by
        if call.agent:
            times = call.agent_times
            answered = call.answered_at[call.agent]
            record.agent = self.agents[call.agent].spec.name
            record.wait_s = _seconds(answered - pressed) if pressed else None
            record.talk_s = _seconds(times["hangup"] - answered) if "hangup" in times else None
            if "hold" in times:  # on hold until the PBX cut the call, if it did
                record.hold_at = times["hold"]
                record.hold_s = _seconds(times.get("unhold", times["hangup"]) - times["hold"])
            if call.acw:
                record.acw_s = _seconds(call.acw[1] - call.acw[0])
                record.disposition = DISPOSITION_NAMES.get(p.disposition, p.disposition)
            return record
        gave_up = caller.get("abandon") or caller.get("exitkey") or call.cut_at or call.ended_at
        record.wait_s = _seconds(gave_up - pressed) if pressed and gave_up else None
        if record.outcome == t.CLOSED and not pressed:
            record.queue = ""  # cut in the IVR
        return record

    def _outcome(self, call: _Call) -> str:
        p, caller = call.plan, call.caller
        if not call.uniqueid:
            return t.NOT_STARTED
        if p.ivr == "hangup":
            return t.IVR_HANGUP
        if p.ivr == self.scenario.self_service_digit:
            return t.IVR_SELF_SERVICE
        if call.agent:
            return t.ANSWERED
        if call.ended_by:
            return t.CLOSED
        if "abandon" in caller:
            return t.ABANDONED
        if "exitkey" in caller:
            return t.EXIT_KEY
        # The PBX ended the wait: with a Queue() timeout that is the timeout; the test queues
        # have no other way to send a caller away than every agent logging out.
        return t.TIMEOUT if p.queue_timeout_s else t.EXIT_EMPTY

    def _ami_stats(self, start: float) -> t.AmiStats:
        seconds = max(1e-9, self.truth.finished_at - start)
        total = sum(self.events_per_second.values())
        return t.AmiStats(events=total, seconds=round(seconds, 1),
                          events_per_s_avg=round(total / seconds, 1),
                          events_per_s_peak=max(self.events_per_second.values(), default=0))


def _seconds(value: float) -> float:
    return round(value, 3)
