"""The post-call survey: the configured questions, who the call was, whether to ask at all, and
the questions asked over one `AgiSession`, each answer recorded the moment it is given (to the
spool, which the writer empties into the store behind the callers: agi_plugin/spool.py).

The call is identified from the three AGI arguments of the documented dialplan line
`AGI(agi://127.0.0.1:4573/csat,${UNIQUEID},<queue>,${MEMBERNAME})`, checked against the
channel (agi_uniqueid) and completed with GET VARIABLE where an argument is missing or unusable.
Every answer's `extra` says where its call id, queue and agent came from.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, TypeVar

from agi_plugin.protocol import AgiHangup, AgiProtocolError, Reply, arguments, quote
from agi_plugin.ratelog import RateLimitedLog
from agi_plugin.session import AgiSession
from agi_plugin.spool import AnswerWriter
from callkpi.config import ConfigError, SurveyConfig
from callkpi.events import SOURCE_AGI, CallEvent, CallLink, Kind, make_event
from callkpi.queries import survey as queries
from callkpi.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

KINDS = ("csat", "resolution")
ANSWERED, INVALID, NO_RESPONSE, HANGUP = "answered", "invalid", "no-response", "hangup"
PROMPT_ALLOWANCE_S = 120.0  # how long a prompt may play before GET DATA starts its timeout
# How long to wait for the call's complete event to reach the store: AMI's AgentComplete comes
# before Queue() returns and the listener commits within ~0.1 s; the caller hears silence meanwhile.
TALK_LOOKUP_S = 1.0
TALK_LOOKUP_STEP_S = 0.25
# A call's complete event and its survey answers come after the call began, and a uniqueid
# starts with the epoch second its channel was created: the lookups read only the events from
# then on (less a margin for a PBX clock ahead of this one).
LOOKBACK_S = 3600
# How long a skip rule's lookup may keep a caller waiting before the answer counts as unknown
# (a caller asked twice after all is still counted once: one survey per call in the reports).
STORE_READ_S = 0.2
MAX_DECIDED = 100_000  # calls remembered as decided (surveyed or skipped) by this server
ANY_KEY = "0123456789*#"
KEYS = set(ANY_KEY)
_QUESTION_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
# A channel's uniqueid as Asterisk makes it (main/channel_internal_api.c): "<epoch>.<n>", or
# "<systemname>-<epoch>.<n>" when asterisk.conf sets systemname (or autosystemname); n is a C
# int that wraps to negative after 2^31 channels without a restart. ASCII digits only (`\d`
# and int() also take other scripts' digits); the system name is printable ASCII without
# space or '|' (queue_log's separator). Group 1 is the epoch second the channel was created.
_UNIQUEID = re.compile(r"(?:[\x21-\x7b\x7d\x7e]{1,80}-)?([0-9]{1,10})\.-?[0-9]{1,10}")
_LANGUAGE = re.compile(r"[A-Za-z0-9_-]{0,32}")  # "" keeps the channel's
_PROMPT = re.compile(r"[A-Za-z0-9_./&-]{1,255}")
MAX_NAME = 128  # queue and member names: Asterisk's own limit is 80 / 128

# The built-in survey: stock sounds of Debian's asterisk-core-sounds-en ("press 1 2 3 4 5";
# "if this is correct, press 1"), stand-ins until you record your own (docs/survey.md).
DEFAULT_QUESTIONS: list[dict[str, Any]] = [
    {"id": "q1", "kind": "csat", "prompt": "vm-press&digits/1&digits/2&digits/3&digits/4&digits/5",
     "digits": "12345", "timeout_s": 6, "retries": 1},
    {"id": "q2", "kind": "resolution", "prompt": "if-correct-press&digits/1", "digits": "12",
     "timeout_s": 6, "retries": 1},
]


@dataclass(frozen=True)
class Question:
    id: str
    kind: str  # csat (digits: the score) | resolution (first digit yes, second no)
    prompt: str  # Asterisk sound file(s) without extension, "&"-joined
    digits: str  # the valid keys
    timeout_s: float
    retries: int  # more tries after an invalid key or silence


def load_questions(config: SurveyConfig) -> list[Question]:
    """The configured questions (the built-in survey when none are), checked: ConfigError
    names the question and the key."""
    tables = config.questions or DEFAULT_QUESTIONS
    questions = [_question(i, table) for i, table in enumerate(tables, 1)]
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"[survey] questions: question ids must be unique, got {ids}")
    for name in ("invalid_prompt", "thank_you"):
        value = getattr(config, name)
        if value and not _PROMPT.fullmatch(value):
            raise ConfigError(f"[survey] {name}: not a sound file name: {value!r}")
    if not _LANGUAGE.fullmatch(config.language):
        raise ConfigError(f"[survey] language: not a language code: {config.language!r}")
    for queue, language in config.languages.items():
        if not _LANGUAGE.fullmatch(language):
            raise ConfigError(f"[survey] languages: not a language code for queue {queue!r}: "
                              f"{language!r}")
    if not 0.0 <= config.sample_rate <= 1.0:
        raise ConfigError(f"[survey] sample_rate: must be between 0 and 1, "
                          f"got {config.sample_rate}")
    return questions


def _question(number: int, table: Any) -> Question:
    where = f"[survey] question {number}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table {{id, kind, prompt, digits, timeout_s, "
                          f"retries}}, got {table!r}")
    unknown = set(table) - {"id", "kind", "prompt", "digits", "timeout_s", "retries"}
    if unknown:
        raise ConfigError(f"{where}: unknown key '{sorted(unknown)[0]}'")
    qid = table.get("id")
    if not isinstance(qid, str) or not _QUESTION_ID.fullmatch(qid):
        raise ConfigError(f"{where}: id must be 1-32 letters, digits, '_', '.', '-', got {qid!r}")
    where = f"[survey] question {qid!r}"
    kind = table.get("kind", "csat")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    prompt = table.get("prompt")
    if not isinstance(prompt, str) or not _PROMPT.fullmatch(prompt):
        raise ConfigError(f"{where}: prompt must be a sound file name (no extension), "
                          f"got {prompt!r}")
    digits = str(table.get("digits", "12345" if kind == "csat" else "12"))
    if not digits or not set(digits) <= KEYS or len(set(digits)) != len(digits):
        raise ConfigError(f"{where}: digits must be distinct keys from 0-9 * #, got {digits!r}")
    if kind == "resolution" and len(digits) != 2:
        raise ConfigError(f"{where}: a resolution question has two digits (yes, then no), "
                          f"got {digits!r}")
    timeout_s, retries = table.get("timeout_s", 6), table.get("retries", 1)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) \
            or not 0 < timeout_s <= 60:
        raise ConfigError(f"{where}: timeout_s must be a number of seconds in (0, 60], "
                          f"got {timeout_s!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 5:
        raise ConfigError(f"{where}: retries must be an integer from 0 to 5, got {retries!r}")
    return Question(qid, kind, prompt, digits, float(timeout_s), retries)


def survey_language(config: SurveyConfig, queue: str) -> str:
    """The language the survey is asked in: the queue's (`[survey] languages`), else
    `[survey] language`; "" keeps the channel's (an IVR's Set(CHANNEL(language)=fa)).
    Asterisk then plays each prompt from sounds/<language>/, else its own fallbacks."""
    return config.languages.get(queue, config.language)


# ------------------------------------------------------------------ who the call is
@dataclass
class SurveyCall:
    """The queue call being surveyed, as checked (`extra` holds where each part came from)."""

    call_id: str
    queue: str
    agent: str
    linkedid: str
    caller_number: str
    language: str
    checks: dict[str, str] = field(default_factory=dict)


class PromptFailed(Exception):
    """Asterisk could not play a prompt on a live channel: a configuration error, not an answer."""


class UnknownCall(Exception):
    """No usable caller uniqueid: answers could not be tied to a call, so none are asked."""


async def identify_call(session: AgiSession) -> SurveyCall:
    """The call from the AGI arguments (uniqueid, queue, member name), checked against the
    channel and completed with GET VARIABLE."""
    env, args = session.env, arguments(session.env) + ["", "", ""]
    checks: dict[str, str] = {}
    call_id = args[0]
    channel_uid = env.get("agi_uniqueid", "")
    if _UNIQUEID.fullmatch(call_id):
        checks["call_id_from"] = "arg" if call_id == channel_uid else "arg-not-channel"
    elif _UNIQUEID.fullmatch(channel_uid):
        call_id, checks["call_id_from"] = channel_uid, "channel"
    else:
        raise UnknownCall(f"no uniqueid in argument 1 ({args[0][:40]!r}) or the channel")
    queue = await _name(session, args[1], "CALLKPI_QUEUE", "queue", checks)
    agent = await _name(session, args[2], "MEMBERNAME", "agent", checks)
    linkedid = (await session.command("GET VARIABLE CHANNEL(linkedid)")).value
    if not _UNIQUEID.fullmatch(linkedid):
        linkedid = ""
    number = env.get("agi_callerid", "")
    caller_number = number if _printable(number) and number != "unknown" else ""
    return SurveyCall(call_id, queue, agent, linkedid, caller_number,
                      env.get("agi_language", ""), checks)


async def _name(session: AgiSession, arg: str, variable: str, what: str,
                checks: dict[str, str]) -> str:
    """A queue or member name: the argument if usable, else the channel variable, else ""."""
    if _printable(arg):
        checks[f"{what}_from"] = "arg"
        return arg
    value = (await session.command(f"GET VARIABLE {variable}")).value
    if _printable(value):
        checks[f"{what}_from"] = "variable"
        return value
    checks[f"{what}_from"] = "missing"
    return ""


def _printable(text: str) -> bool:
    return 0 < len(text) <= MAX_NAME and text.isprintable()


# ------------------------------------------------------------------ whether to ask
class SkipRules:
    """A call surveyed already, sampling, callers surveyed recently, too-short calls.
    `reason(call)` -> why not, or None. A store that does not answer a lookup within
    STORE_READ_S counts as "not known": the caller is asked rather than kept waiting."""

    def __init__(self, config: SurveyConfig, store: Store, server: str,
                 limited: RateLimitedLog, rng: random.Random | None = None) -> None:
        self.config = config
        self.store = store
        self.server = server
        self.limited = limited
        self.rng = rng or random.Random()
        self._decided: OrderedDict[str, None] = OrderedDict()  # calls seen, newest last
        self._since = time.time()  # calls that began after this were all seen by this server
        self._surveyed = SurveyedLookup(store, server)

    async def reason(self, call: SurveyCall) -> str | None:
        if await self._seen_before(call):
            return "already surveyed (one survey per call)"
        if self.config.sample_rate < 1.0 and self.rng.random() >= self.config.sample_rate:
            return "not sampled"
        if self.config.skip_recent_days > 0 and await self._answered_recently(call):
            return f"caller answered a survey in the last {self.config.skip_recent_days:g} days"
        if self.config.min_talk_s > 0:
            talk_s = await self._talk_s(call)
            if talk_s is not None and talk_s < self.config.min_talk_s:
                return f"talked {talk_s:g} s, less than {self.config.min_talk_s:g} s"
        return None

    async def _seen_before(self, call: SurveyCall) -> bool:
        """A call this server decided about already (a second AGI() for it in the dialplan, or
        two sessions at once), or, for a call that began before this server started, one with
        answers in the store (from before the restart). Remembered from here on, whatever the
        decision: a call not sampled once does not get a second draw."""
        if call.call_id in self._decided:
            return True
        self._decided[call.call_id] = None
        if len(self._decided) > MAX_DECIDED:
            self._decided.popitem(last=False)
        if _started(call.call_id) > self._since:
            return False  # nothing but this server can have surveyed it: no lookup to wait for
        try:
            async with asyncio.timeout(STORE_READ_S):
                return await self._surveyed.ask(call.call_id)
        except Exception as exc:  # TimeoutError included
            self._unknown(exc)
            return False

    async def _answered_recently(self, call: SurveyCall) -> bool:
        if not call.caller_number:
            return False  # anonymous callers cannot be recognised
        since = int(time.time() - self.config.skip_recent_days * 86400)
        return await self._read(queries.caller_answered_since(
            self.store, self.server, call.caller_number, since, ANSWERED, call.call_id), False)

    async def _talk_s(self, call: SurveyCall) -> float | None:
        """The call's talk time from its complete (or transfer) event, which the AMI listener
        or a queue_log tail stores within a moment of the agent hanging up; None (ask anyway)
        if it has not arrived within TALK_LOOKUP_S."""
        deadline = time.monotonic() + TALK_LOOKUP_S
        while True:
            talk_s = await self._read(queries.talk_time(
                self.store, self.server, call.call_id, _started(call.call_id) - LOOKBACK_S),
                None)
            if talk_s is not None:
                return talk_s
            if time.monotonic() >= deadline:
                self.limited.log(
                    logging.WARNING, "no-talk-time",
                    "call %s: no talk time in the store after %g s, surveyed anyway "
                    "(min_talk_s needs `callkpi listen` writing to this store)",
                    call.call_id, TALK_LOOKUP_S)
                return None
            await asyncio.sleep(TALK_LOOKUP_STEP_S)

    async def _read(self, lookup: Awaitable[T], unknown: T) -> T:
        """A skip rule's lookup; `unknown` when the store fails or is slow."""
        try:
            async with asyncio.timeout(STORE_READ_S):
                return await lookup
        except Exception as exc:  # TimeoutError included: never a reason to keep the caller
            self._unknown(exc)
            return unknown

    def _unknown(self, exc: Exception) -> None:
        why = f"no answer within {STORE_READ_S:g} s" if isinstance(exc, TimeoutError) \
            else f"{type(exc).__name__}: {exc}"
        self.limited.log(logging.WARNING, "skip-lookup",
                         "a survey skip rule could not read the store (%s): the call is "
                         "surveyed", why)


class SurveyedLookup:
    """Which calls have survey answers in the store, asked for many calls in one query: the
    calls asked about while a query runs go together in the next one. A burst of sessions
    (after a restart) would otherwise queue one store round trip each before its first prompt."""

    MAX_CALLS = 500  # per query: well within SQLite's bound on parameters

    def __init__(self, store: Store, server: str) -> None:
        self.store = store
        self.server = server
        self._asked: dict[str, list[asyncio.Future[bool]]] = {}
        self._querying: asyncio.Task[None] | None = None

    async def ask(self, call_id: str) -> bool:
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._asked.setdefault(call_id, []).append(answer)
        if self._querying is None:
            self._querying = asyncio.create_task(self._query_while_asked())
        return await answer

    async def _query_while_asked(self) -> None:
        try:
            await asyncio.sleep(0)  # the sessions of this moment ask too
            while self._asked:
                batch = dict(itertools.islice(self._asked.items(), self.MAX_CALLS))
                for call_id in batch:
                    del self._asked[call_id]
                await self._query(batch)
        finally:
            self._querying = None

    async def _query(self, batch: dict[str, list[asyncio.Future[bool]]]) -> None:
        try:
            found = await queries.surveyed_calls(self.store, self.server, list(batch),
                                                 min(map(_started, batch)) - LOOKBACK_S)
        except Exception as exc:  # each caller decides what an unknown means
            for waiting in batch.values():
                for answer in waiting:
                    if not answer.done():
                        answer.set_exception(exc)
            return
        for call_id, waiting in batch.items():
            for answer in waiting:
                if not answer.done():  # a caller that gave up has cancelled it
                    answer.set_result(call_id in found)


# ------------------------------------------------------------------ asking
@dataclass
class Outcome:
    reason: str  # answered | invalid | no-response | hangup
    value: str = ""  # the key pressed ("" for no-response and hangup)
    attempts: int = 0


class Survey:
    """Runs the configured questions over one session, storing each answer at once."""

    def __init__(self, config: SurveyConfig, questions: list[Question], writer: AnswerWriter,
                 server: str) -> None:
        self.config = config
        self.questions = questions
        self.writer = writer
        self.server = server

    async def run(self, session: AgiSession, call: SurveyCall) -> None:
        """Ask every question until the caller hangs up, recording each answer as it comes."""
        session_id = uuid.uuid4().hex[:16]
        await self._prepare(session, call)
        for number, question in enumerate(self.questions):
            outcome = await self._ask(session, question)
            event = self._event(call, question, outcome, session_id)
            await self._record(event, call, first=number == 0)
            if outcome.reason == HANGUP:
                return  # the survey is incomplete; unasked questions store nothing
        await self._play(session, self.config.thank_you)

    async def _prepare(self, session: AgiSession, call: SurveyCall) -> None:
        await session.command("ANSWER")
        language = survey_language(self.config, call.queue)
        if language and language != call.language:
            await session.command(f"SET VARIABLE CHANNEL(language) {quote(language)}")
            call.language = language

    async def _ask(self, session: AgiSession, question: Question) -> Outcome:
        """One question, asked again after a wrong key or silence while retries last; when
        they are used up, the last try decides: a wrong key is invalid, silence no response."""
        for attempt in range(1, question.retries + 2):
            try:
                reply = await self._get_data(session, question)
            except AgiHangup:
                return Outcome(HANGUP, attempts=attempt)
            key = reply.result[:1]
            if key and key in question.digits:
                return Outcome(ANSWERED, key, attempt)
            wrong = key or ("" if reply.timed_out else "#")  # "result=": # alone ends input
            if wrong and attempt <= question.retries:
                await self._play(session, self.config.invalid_prompt)
        return Outcome(INVALID, wrong, attempt) if wrong else Outcome(NO_RESPONSE, "", attempt)

    async def _get_data(self, session: AgiSession, question: Question) -> Reply:
        """The caller's key. GET DATA plays one file (Asterisk 22 does not split "&" there), so
        the files of the prompt before the last are played by STREAM FILE, which any key
        interrupts: a key pressed there is the answer."""
        if self.config.announce_text:
            await session.command(f'SEND TEXT {quote("SURVEY:" + question.id)}')
        *intro, last = question.prompt.split("&")
        for sound in intro:
            reply = await session.command(f"STREAM FILE {sound} {quote(ANY_KEY)}",
                                          timeout_s=PROMPT_ALLOWANCE_S)
            await _check_played(session, reply, sound)
            if reply.result != "0":
                return reply._replace(result=_pressed(reply), data="")
        reply = await session.command(f"GET DATA {last} {int(question.timeout_s * 1000)} 1",
                                      timeout_s=question.timeout_s + PROMPT_ALLOWANCE_S)
        await _check_played(session, reply, last)
        return reply

    async def _play(self, session: AgiSession, prompt: str) -> None:
        """Play a prompt nobody answers (invalid key, thank you). A missing file is logged,
        not fatal; a hang-up here is noticed by the next command."""
        for sound in prompt.split("&") if prompt else ():
            try:
                reply = await session.command(f'STREAM FILE {sound} ""',
                                              timeout_s=PROMPT_ALLOWANCE_S)
                await _check_played(session, reply, sound)
            except AgiHangup:
                return
            except PromptFailed as exc:
                log.warning("%s: %s", session.peer, exc)

    def _event(self, call: SurveyCall, question: Question, outcome: Outcome,
               session_id: str) -> CallEvent:
        extra = {"question_kind": question.kind, "linkedid": call.linkedid,
                 "session": session_id, "attempts": outcome.attempts, **call.checks}
        if call.language:
            extra["language"] = call.language
        return make_event(server=self.server, kind=Kind.SURVEY_ANSWER, ts=time.time(),
                          source=SOURCE_AGI, call_id=call.call_id, queue=call.queue,
                          agent=call.agent, discr=question.id, value=outcome.value,
                          reason=outcome.reason, caller_number=call.caller_number, extra=extra)

    async def _record(self, event: CallEvent, call: SurveyCall, *, first: bool) -> None:
        """Into the spool before the next prompt; the writer takes it to the store behind the
        caller."""
        links = [CallLink(self.server, call.call_id, call.linkedid, event.ts)] \
            if first and call.linkedid else []
        await self.writer.record(event, links)


async def _check_played(session: AgiSession, reply: Reply, sound: str) -> None:
    """result=-1 is both "the caller hung up" and "the file cannot be played": ANSWER is refused
    (511) on a dead channel and accepted on a live one."""
    if reply.result == "-1":
        await session.command("ANSWER")
        raise PromptFailed(f"sound {sound!r} could not be played on a live channel (is it "
                           f"installed for the channel's language?)")


def _pressed(reply: Reply) -> str:
    """STREAM FILE reports the key that interrupted it as its character code."""
    if reply.result.isdigit() and int(reply.result) < 128 and chr(int(reply.result)) in ANY_KEY:
        return chr(int(reply.result))
    raise AgiProtocolError(f"STREAM FILE: unexpected result {reply.raw[:80]!r}")


def _started(uniqueid: str) -> int:
    """The epoch second a channel was created, from its uniqueid (checked by _UNIQUEID)."""
    match = _UNIQUEID.fullmatch(uniqueid)
    assert match is not None, uniqueid
    return int(match.group(1))
