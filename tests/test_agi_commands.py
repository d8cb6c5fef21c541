"""`callkpi agi` and the [survey] configuration: clear one-line errors, SIGTERM lets running
surveys finish and exits 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from callkpi.testing.fakeasterisk import FakeCall, environment
from agi_plugin.survey import DEFAULT_QUESTIONS, load_questions
from callkpi.cli import cli
from callkpi.config import ConfigError, SurveyConfig, load_config
from ports import free_port
from store_helpers import agi_spool, fetch, write_lock_held

CALLKPI = str(Path(sys.executable).parent / "callkpi")


def question(**changes):
    return {"id": "q1", "kind": "csat", "prompt": "custom/csat", "digits": "12345",
            "timeout_s": 5, "retries": 1, **changes}


def test_built_in_survey():
    questions = load_questions(SurveyConfig())
    assert [(q.id, q.kind, q.digits) for q in questions] == [("q1", "csat", "12345"),
                                                             ("q2", "resolution", "12")]
    assert len(DEFAULT_QUESTIONS) == 2


def test_questions_from_toml(tmp_path):
    path = tmp_path / "callkpi.toml"
    path.write_text('[survey]\nquestions = [\n'
                    ' {id = "sat", kind = "csat", prompt = "custom/sat", digits = "123",'
                    ' timeout_s = 4, retries = 2},\n'
                    ' {id = "fcr", kind = "resolution", prompt = "custom/fcr", digits = "19"},\n'
                    ']\n')
    questions = load_questions(load_config(path, env={}).survey)
    assert [(q.id, q.digits, q.timeout_s, q.retries) for q in questions] == [
        ("sat", "123", 4.0, 2), ("fcr", "19", 6.0, 1)]


@pytest.mark.parametrize("table, message", [
    (question(id="q 1"), "id must be"),
    (question(kind="nps"), "kind must be one of csat, resolution"),
    (question(prompt="csat.wav ; rm"), "prompt must be a sound file name"),
    (question(prompt=3), "prompt must be"),
    (question(digits="1a"), "digits must be distinct keys"),
    (question(digits="11"), "digits must be distinct keys"),
    (question(kind="resolution", digits="123"), "two digits"),
    (question(timeout_s=0), "timeout_s must be"),
    (question(timeout_s="5"), "timeout_s must be"),
    (question(retries=True), "retries must be"),
    (question(retries=9), "retries must be"),
    (question(colour="red"), "unknown key 'colour'"),
])
def test_bad_question_is_named(table, message):
    with pytest.raises(ConfigError, match=message) as raised:
        load_questions(SurveyConfig(questions=[table]))
    assert "\n" not in str(raised.value)


def test_questions_from_the_environment_are_refused_clearly(tmp_path):
    config = load_config(None, env={"CALLKPI_SURVEY_QUESTIONS": "q1,q2"})
    with pytest.raises(ConfigError, match="question 1: must be a table"):
        load_questions(config.survey)


def test_duplicate_ids_and_bad_settings():
    with pytest.raises(ConfigError, match="unique"):
        load_questions(SurveyConfig(questions=[question(), question()]))
    with pytest.raises(ConfigError, match="sample_rate"):
        load_questions(SurveyConfig(sample_rate=1.5))
    with pytest.raises(ConfigError, match="language"):
        load_questions(SurveyConfig(language="fr ; x"))
    with pytest.raises(ConfigError, match="thank_you"):
        load_questions(SurveyConfig(thank_you="thanks.wav\nANSWER"))


@pytest.mark.parametrize("args, message", [
    (["--bind", "0.0.0.0"], "not loopback"),
    (["--bind", "0.0.0.0", "--allow", "10.0.0.300"], "not an IP address"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["agi", "--db", str(tmp_path / "x.db"), *args])
    assert result.exit_code == 1
    assert message in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "x.db").exists()  # checked before anything is opened


def test_cli_bad_survey_config_is_one_line(tmp_path):
    config = tmp_path / "callkpi.toml"
    config.write_text('[survey]\nquestions = [{id = "q1", kind = "nps", prompt = "x"}]\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "agi", "--db",
                                      str(tmp_path / "x.db")])
    assert result.exit_code == 1 and "kind must be one of" in result.output
    assert "Traceback" not in result.output


async def test_sigterm_lets_the_running_survey_finish_and_exits_0(tmp_path, store_url):
    port, (_, env) = free_port(), agi_spool(store_url, tmp_path)
    server = subprocess.Popen([CALLKPI, "agi", "--port", str(port), "--db", store_url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        await wait_listening(port)
        call = FakeCall(environment("1795491290.4", ["1795491290.4", "support", "Agent 1001"]),
                        ["5", "1"], think_s=1.0)
        running = asyncio.create_task(call.run("127.0.0.1", port))
        await asked(call, "GET DATA")  # the caller is thinking about q1
        server.send_signal(signal.SIGTERM)
        await refused(port)  # no new sessions once stopping
        assert not running.done()
        await running
        out, err = server.communicate(timeout=10)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert "surveys=1 answers=2" in out
    rows = await fetch(store_url, "SELECT discr, value, reason FROM events ORDER BY discr")
    assert rows == [("q1", "5", "answered"), ("q2", "1", "answered")]


async def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def asked(call: FakeCall, command: str) -> None:
    """Wait until the server has sent the caller `command`."""
    async with asyncio.timeout(10):
        while not any(c.startswith(command) for c in call.commands):
            await asyncio.sleep(0.01)


async def refused(port: int) -> None:
    """Wait until nothing listens on port any more."""
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return
            writer.close()
            await asyncio.sleep(0.01)


async def survey_rows(url: str) -> list[tuple]:
    return await fetch(url, "SELECT call_id, discr, value FROM events"
                            " WHERE kind = 'survey-answer' ORDER BY call_id, discr")


async def test_answers_given_before_a_kill_9_are_stored_once_at_the_next_start(tmp_path,
                                                                               store_url):
    """The store's write lock is held (a big ingest), so the answers wait in the spool when the
    server is killed; the next server stores them, once."""
    port, (spool, env) = free_port(), agi_spool(store_url, tmp_path)
    command = [CALLKPI, "agi", "--port", str(port), "--db", store_url]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env)
    try:
        await wait_listening(port)
        async with write_lock_held(store_url):
            calls = [FakeCall(environment(uid, [uid, "support", "Agent 1001"]), ["4", "2"])
                     for uid in ("1795491290.1", "1795491290.2")]
            await asyncio.gather(*(c.run("127.0.0.1", port) for c in calls))
            assert all(c.commands[-1].startswith("STREAM FILE auth-thankyou") for c in calls)
            server.kill()  # SIGKILL: no shutdown, no last write
            server.wait(timeout=10)
    finally:
        server.kill()
    assert await survey_rows(store_url) == []
    again = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    try:
        await wait_listening(port)
        async with asyncio.timeout(30):
            while len(await survey_rows(store_url)) < 4:
                await asyncio.sleep(0.05)
        again.send_signal(signal.SIGTERM)
        out, err = again.communicate(timeout=30)
    finally:
        again.kill()
    assert "4 survey answers left in" in err, err
    assert await survey_rows(store_url) == [
        ("1795491290.1", "q1", "4"), ("1795491290.1", "q2", "2"),
        ("1795491290.2", "q1", "4"), ("1795491290.2", "q2", "2")]
    assert list(spool.glob("*.jsonl")) == []


async def test_a_second_server_on_the_same_spool_is_refused_in_one_line(tmp_path, store_url):
    port, (spool, env) = free_port(), agi_spool(store_url, tmp_path)
    first = subprocess.Popen([CALLKPI, "agi", "--port", str(port), "--db", store_url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        await wait_listening(port)
        second = subprocess.run([CALLKPI, "agi", "--port", str(free_port()), "--db", store_url],
                                capture_output=True, text=True, timeout=30, env=env)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert second.returncode == 1
    assert second.stderr.endswith(f"Error: [agi] spool {spool} is in use by another "
                                  "survey server (a second one needs its own [agi] spool)\n")
    assert "Traceback" not in second.stderr
