"""A report mail goes out once, against real aiosmtpd relays that misbehave and real `callkpi
email` processes: a relay that takes the mail and then fails QUIT, one that breaks the
connection after the message was handed over, one that refuses a recipient; two runs at once
for the same day; a run killed with SIGKILL while the relay holds its mail."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from ports import free_port
from reports import mailer
from reports.mailer import ALREADY_SENT, SENT_NOW, MailError, send_report
from test_email import Inbox, cli_config, config_for  # noqa: F401  (cli_config: a fixture)

CALLKPI = str(Path(sys.executable).parent / "callkpi")
DAY = dt.date(2026, 11, 24)


@dataclass
class BadQuit(Inbox):
    """Takes the mail, then fails the end of the session."""

    how: str = "421"

    async def handle_QUIT(self, server, session, envelope) -> str:
        if self.how == "reset":
            server.transport.abort()
        elif self.how == "hang":
            await asyncio.sleep(60)
        return "421 4.3.2 service shutting down"


@dataclass
class LostAfterData(Inbox):
    """Keeps the mail, then the connection breaks before its 250 reaches the sender."""

    async def handle_DATA(self, server, session, envelope) -> str:
        await super().handle_DATA(server, session, envelope)
        server.transport.abort()
        return "250 OK queued"


@dataclass
class Holding(Inbox):
    """Takes each mail and holds its 250 until released (a slow relay)."""

    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server, session, envelope) -> str:
        status = await super().handle_DATA(server, session, envelope)
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        return status


@dataclass
class RefusesOne(Inbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address.startswith("gone@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def relay():
    """relay(handler) -> its port, a real SMTP server on loopback."""
    controllers = []

    def start(handler: Inbox) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append((controller, handler))
        return port

    yield start
    for controller, handler in controllers:
        if isinstance(handler, Holding):
            handler.release.set()
        controller.stop()


async def claims(store) -> list[tuple]:
    return await store.fetch_all("SELECT day, recipients FROM report_claims")


@pytest.mark.parametrize("how", ["421", "reset", "hang"])
async def test_a_mail_the_relay_took_is_sent_whatever_quit_does(store, relay, how,
                                                                monkeypatch, caplog):
    monkeypatch.setattr(mailer, "QUIT_TIMEOUT_S", 0.3)
    inbox = BadQuit(how=how)
    config = config_for(relay(inbox))
    assert (await send_report(store, config, DAY, ["a@example.com"])).status == SENT_NOW
    assert "took the mail, then" in caplog.text and "the mail is sent" in caplog.text
    assert (await send_report(store, config, DAY, ["a@example.com"])).status == ALREADY_SENT
    assert len(inbox.mails) == 1  # the rerun (and the timer's retries) send nothing more
    assert await store.fetch_all("SELECT day FROM reports_sent") == [("2026-11-24",)]
    assert await claims(store) == []


async def test_a_refused_mail_releases_its_claim_so_a_retry_sends_it(store, relay):
    class Refusing(Inbox):
        async def handle_DATA(self, server, session, envelope) -> str:
            return "554 5.7.1 rejected: try later"

    config = config_for(relay(Refusing()))
    with pytest.raises(MailError, match="refused the mail: 554"):
        await send_report(store, config, DAY, ["a@example.com"])
    assert await claims(store) == [] and await store.fetch_all("SELECT * FROM reports_sent") == []
    inbox = Inbox()
    config.smtp.port = relay(inbox)
    assert (await send_report(store, config, DAY, ["a@example.com"])).status == SENT_NOW
    assert len(inbox.mails) == 1


async def test_a_recipient_the_relay_refuses_is_named_and_the_others_get_it(store, relay):
    inbox = RefusesOne()
    config = config_for(relay(inbox))
    outcome = await send_report(store, config, DAY, ["a@example.com", "gone@example.com"])
    assert outcome.status == SENT_NOW
    assert outcome.refused == {"gone@example.com": "550 5.1.1 no such user"}
    assert inbox.mails[0]["to"] == ["a@example.com"]


def email(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([CALLKPI, "--config", str(config), "email", "--from", str(DAY),
                             "--to", str(DAY), "--recipient", "a@example.com", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(run: subprocess.Popen) -> tuple[int, str, str]:
    out, err = run.communicate(timeout=120)
    return run.returncode, out, err


def wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the state waited for did not come")
        time.sleep(0.05)


def test_two_runs_at_once_send_the_mail_once(relay, cli_config):
    """The relay holds the first mail that reaches it until the other run has ended: without
    a claim, the other run would reach the relay too and be held there as well."""
    inbox = Holding()
    config = cli_config(relay(inbox))
    runs = [email(config), email(config)]
    try:
        wait_for(lambda: any(r.poll() is not None for r in runs) or len(inbox.mails) > 1)
        assert len(inbox.mails) <= 1
        inbox.release.set()
        results = [finish(r) for r in runs]
    finally:
        for run in runs:
            run.kill()
    assert [code for code, _, _ in results] == [0, 0], results
    outs = sorted(out for _, out, _ in results)
    assert outs[0].startswith(f"{DAY}: being sent to a@example.com by another run (process ")
    assert outs[0].rstrip().endswith("not sent again")
    assert outs[1] == f"{DAY}: sent to a@example.com\n"
    assert len(inbox.mails) == 1


def test_a_run_killed_while_sending_leaves_a_mail_that_may_have_gone(relay, cli_config):
    inbox = Holding()
    config = cli_config(relay(inbox))
    run = email(config)
    try:
        wait_for(lambda: len(inbox.mails) == 1)  # the relay has it, its 250 is held
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
    finally:
        run.kill()
    code, out, err = finish(email(config))
    assert code == 1 and out == ""
    assert err.startswith(f"Error: {DAY}: an earlier run (process {run.pid} on ")
    assert "stopped while sending this report to a@example.com: it may have gone" in err
    assert "--force sends it again" in err and len(err.splitlines()) == 1
    inbox.release.set()
    code, out, _ = finish(email(config, "--force"))
    assert (code, out) == (0, f"{DAY}: sent to a@example.com\n")
    assert finish(email(config))[1].startswith(f"{DAY}: already sent")
    assert len(inbox.mails) == 2  # the one killed mid-way, and the one forced


def test_a_connection_lost_after_the_handover_is_not_sent_again_without_force(relay,
                                                                             cli_config):
    inbox = LostAfterData()
    config = cli_config(relay(inbox))
    code, _, err = finish(email(config))
    assert code == 1 and "broke after the mail was handed over" in err
    assert "whether it was taken is unknown; check that a@example.com got it" in err
    code, _, err = finish(email(config))  # the timer's retry
    assert code == 1 and "it may have gone" in err
    assert len(inbox.mails) == 1


def test_the_cli_names_a_refused_recipient(relay, cli_config):
    config = cli_config(relay(RefusesOne()))
    run = subprocess.run([CALLKPI, "--config", str(config), "email", "--from", str(DAY),
                          "--to", str(DAY), "--recipient", "a@example.com",
                          "--recipient", "gone@example.com"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    assert run.stdout == f"{DAY}: sent to a@example.com, gone@example.com\n"
    assert f"{DAY}: the relay refused gone@example.com (550 5.1.1 no such user); the others " \
        "got it" in run.stderr

