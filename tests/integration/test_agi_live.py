"""The survey server against the real sandbox Asterisk: the smoke scenario's callers answer the
survey with SendDTMF on their Local channel (a digit, `*` for invalid, silence, a hang-up), and
the survey-answer events `AgiServer` stores must equal the simulator's ground truth, with the
queue and agent of each call.

Run: flock /tmp/callkpi-sandbox.lock .venv/bin/pytest tests/integration/test_agi_live.py -x -q
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agi_plugin.server import AgiServer
from agi_plugin.survey import load_questions
from callkpi.config import Config, SurveyConfig
from callkpi.store import open_store
from simulator.ami import AmiClient
from simulator.runner import run_scenario
from simulator.scenario import load_scenario
from simulator.truth import Truth

pytestmark = pytest.mark.integration

# The smoke scenario's callers answer the prompts with keys 1-5 (simulator/scenario.py), one
# answer per announced prompt, in order: a retry is announced again and takes the caller's next
# answer, and the truth keeps the last answer per question, which is the one that decides.
# q2 is a resolution question, so a 3-5 there is a wrong key, stored as invalid. q1 plays three
# files ("&"), as the built-in survey's prompts do: the caller's key (0.2 s after the text)
# comes while the first two play (STREAM FILE, 0.9 s), so it is read from STREAM FILE's reply.
QUESTIONS = [
    {"id": "q1", "kind": "csat", "prompt": "beep&beep&beep", "digits": "12345", "timeout_s": 3,
     "retries": 1},
    {"id": "q2", "kind": "resolution", "prompt": "beep", "digits": "12", "timeout_s": 3,
     "retries": 0},
    {"id": "q3", "kind": "csat", "prompt": "beep", "digits": "12345", "timeout_s": 3,
     "retries": 1},
]
DIGITS = {str(q["id"]): str(q["digits"]) for q in QUESTIONS}
# smoke's callers, with more of the rarer answers so one run has every kind of them
SURVEY_WEIGHTS = {"digit": 0.4, "invalid": 0.25, "none": 0.15, "hangup": 0.2}


@dataclasses.dataclass
class SurveyRun:
    truth: Truth
    rows: list[tuple]  # call_id, queue, agent, discr, value, reason, caller_number, extra
    links: dict[str, str]
    stats: object


@pytest.fixture(scope="module")
def survey_run(asterisk, tmp_path_factory) -> SurveyRun:
    config = Config()
    config.server.name = "sandbox"
    config.agi.port = asterisk.agi_port
    config.survey.questions = QUESTIONS
    config.survey.announce_text = True  # the simulated callers wait for SURVEY:<id>
    config.survey.invalid_prompt = "beeperr"
    db = tmp_path_factory.mktemp("agi") / "callkpi.db"
    config.store.db = str(db)  # the spool goes beside it

    async def run() -> SurveyRun:
        store = await open_store(db)
        async with store:
            server = await AgiServer(config, store).start()
            try:
                scenario = dataclasses.replace(load_scenario("smoke"), survey=SURVEY_WEIGHTS)
                truth = await run_scenario(scenario, asterisk.ami_host,
                                           asterisk.ami_port, asterisk.ami_user,
                                           asterisk.ami_secret)
            finally:
                await server.stop(grace_s=30)
            rows = await store.fetch_all(
                "SELECT call_id, queue, agent, discr, value, reason, caller_number, extra"
                " FROM events WHERE kind = 'survey-answer' ORDER BY ts")
            links = dict(await store.fetch_all("SELECT uniqueid, linked_id FROM call_links"))
            return SurveyRun(truth, rows, links, server.stats)

    asterisk.reset_logs()
    result = asyncio.run(run())
    assert result.truth.complete, result.truth.problems
    return result


def expected(question: str, answer: str) -> tuple[str, str]:
    """What the server stores for a simulated caller's answer to a question."""
    if answer == "invalid":
        return "*", "invalid"  # the simulated caller presses *
    if answer == "none":
        return "", "no-response"
    if answer == "hangup":
        return "", "hangup"
    return answer, "answered" if answer in DIGITS[question] else "invalid"


def test_stored_answers_equal_the_truth(survey_run):
    answered = [c for c in survey_run.truth.calls if c.outcome == "answered"]
    surveyed = [c for c in answered if c.survey]
    assert surveyed, "the smoke scenario surveys some callers"
    kinds = {a for c in surveyed for a in c.survey.values()}
    assert {"hangup", "none", "invalid"} <= kinds and kinds - {"hangup", "none", "invalid"}, kinds
    stored: dict[str, dict[str, tuple]] = {}
    for row in survey_run.rows:
        stored.setdefault(row[0], {})[row[3]] = row
    assert set(stored) == {c.uniqueid for c in surveyed}
    for call in surveyed:
        mine = stored[call.uniqueid]
        assert {q: (r[4], r[5]) for q, r in mine.items()} == {
            q: expected(q, a) for q, a in call.survey.items()}, call.call
        for row in mine.values():
            assert row[1:3] == (call.queue, call.agent), call.call
            assert row[6] == call.caller_number
            extra = json.loads(row[7])
            assert extra["call_id_from"] == extra["queue_from"] == extra["agent_from"] == "arg"
            assert extra["question_kind"] == ("resolution" if row[3] == "q2" else "csat")
            assert extra["linkedid"] and survey_run.links[call.uniqueid] == extra["linkedid"]
        assert len({json.loads(r[7])["session"] for r in mine.values()}) == 1
    assert any(json.loads(r[7])["attempts"] == 2 for r in survey_run.rows)  # a retry happened


def test_the_built_in_survey_uses_stock_sounds_asterisk_has(asterisk):
    config = SurveyConfig()
    prompts = [q.prompt for q in load_questions(config)] + [config.invalid_prompt,
                                                           config.thank_you]
    sounds = in_chroot(Path(asterisk.sandbox.root), Path("/usr/share/asterisk/sounds/en"))
    for sound in (s for p in prompts for s in p.split("&")):
        assert list(sounds.glob(f"{sound}.*")), sound


def in_chroot(root: Path, path: Path) -> Path:
    """`path` inside the sandbox root, following its absolute symlinks (en -> /etc/alternatives
    -> the voice Debian installed) as Asterisk in the chroot sees them."""
    resolved = root
    for part in path.parts[1:]:
        resolved = resolved / part
        while resolved.is_symlink():
            target = Path(os.readlink(resolved))
            resolved = root / target.relative_to("/") if target.is_absolute() \
                else resolved.parent / target
    return resolved


async def test_where_asterisk_finds_prompts_for_the_survey_language(asterisk, tmp_path, caplog):
    """What docs/survey.md promises, with [survey] language = "fr": a prompt plays from
    sounds/fr/, else from sounds/ (no language), else from the default language (en); one that
    is nowhere is logged and stores nothing."""
    sounds = in_chroot(Path(asterisk.sandbox.root), Path("/usr/share/asterisk/sounds"))
    beep = (sounds / "en_US_f_Allison" / "beep.gsm").read_bytes()
    recordings = [sounds / "fr" / "custom" / "callkpi-test-fr.gsm",
                  sounds / "custom" / "callkpi-test-any.gsm",
                  in_chroot(Path(asterisk.sandbox.root),
                            Path("/usr/share/asterisk/sounds/en/custom/callkpi-test-en.gsm"))]
    made = [d for r in recordings for d in (r.parent.parent, r.parent) if not d.exists()]
    for recording in recordings:
        recording.parent.mkdir(parents=True, exist_ok=True)
        recording.write_bytes(beep)
    config = Config()
    config.server.name = "sandbox"
    config.agi.port = asterisk.agi_port
    config.survey.language = "fr"
    config.survey.thank_you = ""
    config.survey.questions = [
        {"id": qid, "prompt": f"custom/callkpi-test-{qid}", "timeout_s": 1, "retries": 0}
        for qid in ("fr", "any", "en", "nowhere")]
    ami = AmiClient(asterisk.ami_host, asterisk.ami_port, asterisk.ami_user, asterisk.ami_secret)
    config.store.db = str(tmp_path / "callkpi.db")
    store = await open_store(config.store.db)
    server = await AgiServer(config, store).start()
    try:
        await ami.connect()
        # sim-phone answers and stays 10 s; its other half runs the survey, nobody presses
        await ami.action("Originate", Channel="Local/s@sim-phone/n", Application="AGI",
                         Data=f"agi://127.0.0.1:{asterisk.agi_port}/csat", Async="true")
        async with asyncio.timeout(15):
            while not server.stats.connections or server.running:
                await asyncio.sleep(0.1)
            await server.stored_all()
        rows = await store.fetch_all("SELECT discr, reason, extra FROM events ORDER BY ts")
    finally:
        await ami.close()
        await server.stop(grace_s=5)
        await store.close()
        for recording in recordings:
            recording.unlink()
        for directory in reversed(made):  # leave the cached sandbox as it was
            directory.rmdir()
    assert [(d, r, json.loads(e)["language"]) for d, r, e in rows] == [
        ("fr", "no-response", "fr"), ("any", "no-response", "fr"), ("en", "no-response", "fr")]
    assert "'custom/callkpi-test-nowhere' could not be played on a live channel" in caplog.text


def test_a_hangup_ends_the_survey(survey_run):
    for call in survey_run.truth.calls:
        if "hangup" in call.survey.values():
            assert list(call.survey.values())[-1] == "hangup"
    assert survey_run.stats.errors == 0 and survey_run.stats.dropped == 0


def persian_prompt(path: Path, text: str) -> None:
    """A prompt spoken by espeak-ng's Persian voice, as Asterisk plays it (8 kHz mono wav)."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: bash scripts/system-deps.sh installs it")
    spoken = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", "fa", "-w", str(spoken), text], check=True)
    subprocess.run(["sox", "-V1", str(spoken), "-r", "8000", "-c", "1", "-b", "16", str(path)],
                   check=True)
    spoken.unlink()


async def survey_call(asterisk, config: Config, store, queue: str) -> list[tuple]:
    """One sim-phone call surveyed as a call of `queue`; nobody presses a key."""
    ami = AmiClient(asterisk.ami_host, asterisk.ami_port, asterisk.ami_user, asterisk.ami_secret)
    server = await AgiServer(config, store).start()
    try:
        await ami.connect()
        await ami.action("Originate", Channel="Local/s@sim-phone/n", Application="AGI",
                         Data=f"agi://127.0.0.1:{asterisk.agi_port}/csat,,{queue},Agent 1001",
                         Async="true")
        async with asyncio.timeout(20):
            while not server.stats.connections or server.running:
                await asyncio.sleep(0.1)
        return await store.fetch_all(
            "SELECT discr, reason, queue, extra FROM events WHERE queue = ? ORDER BY ts",
            (queue,))
    finally:
        await ami.close()
        await server.stop(grace_s=5)


async def test_a_persian_queue_hears_the_persian_prompt_set(asterisk, tmp_path, caplog):
    """[survey] languages = {support = "fa"}: the survey of a support call plays the Persian
    prompts recorded in sounds/fa/ (here generated with espeak-ng, for this test only), and a
    prompt nobody recorded in Persian falls back to Asterisk's default language; a queue with
    no language of its own keeps the channel's (en), where the Persian-only prompt is not."""
    sounds = in_chroot(Path(asterisk.sandbox.root), Path("/usr/share/asterisk/sounds"))
    recordings = [sounds / "fa" / "custom" / "callkpi-test-csat.wav",
                  sounds / "fa" / "custom" / "callkpi-test-thanks.wav"]
    made = [d for d in (sounds / "fa", sounds / "fa" / "custom") if not d.exists()]
    for directory in made:
        directory.mkdir()
    persian_prompt(recordings[0], "لطفاً رضایت خود را با فشردن یک تا پنج اعلام کنید")
    persian_prompt(recordings[1], "از شما سپاسگزاریم")
    config = Config()
    config.server.name = "sandbox"
    config.agi.port = asterisk.agi_port
    config.survey.language = ""  # the channel's, unless the queue has one
    config.survey.languages = {"support": "fa"}
    config.survey.thank_you = "custom/callkpi-test-thanks"
    config.survey.questions = [
        {"id": "fa-only", "prompt": "custom/callkpi-test-csat", "timeout_s": 1, "retries": 0},
        {"id": "stock", "prompt": "beep", "timeout_s": 1, "retries": 0}]  # en only
    config.store.db = str(tmp_path / "callkpi.db")  # its spool beside it, not in the cwd
    try:
        store = await open_store(config.store.db)
        async with store:
            persian = await survey_call(asterisk, config, store, "support")
            english = await survey_call(asterisk, config, store, "sales")
    finally:
        for path in recordings:
            path.unlink()
        for directory in reversed(made):  # leave the cached sandbox as it was
            directory.rmdir()
    assert [(d, r, json.loads(e)["language"]) for d, r, _q, e in persian] == [
        ("fa-only", "no-response", "fa"), ("stock", "no-response", "fa")]
    assert english == []  # its first prompt exists only in Persian: logged, nothing stored
    assert "'custom/callkpi-test-csat' could not be played on a live channel" in caplog.text
