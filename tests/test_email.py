"""The report by e-mail against a real SMTP server (aiosmtpd) on loopback: plain, STARTTLS
and SSL with a certificate made here, AUTH LOGIN, the message's structure, refusals, the
days-sent record, and no password anywhere in what callkpi logs or prints."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import re
import shutil
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner

from callkpi.cli import cli
from callkpi.config import Config, SmtpConfig, load_config
from ports import free_port
from queue_log_parser.ingest import ingest_paths
from report_fixture import empty_report, make_report
from reports.email_command import local_today
from reports.facts import refresh_facts
from reports.mailer import (ALREADY_SENT, SENT_NOW, MailError, build_message,
                            recipients_key, send_message, send_report)
from store_helpers import created, no_store_error

RECORDINGS = Path(__file__).parent.parent / "examples" / "recordings"

USER, PASSWORD = "reports", "S3cret-pw-9f2c"
SAMPLE = RECORDINGS / "all-scenarios.queue_log"
SAMPLE_DAY = dt.date(2026, 11, 24)  # its calls, in UTC


@dataclass
class Inbox:
    """An aiosmtpd handler that keeps what it was given."""

    mails: list[dict[str, Any]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.mails.append({
            "from": envelope.mail_from, "to": list(envelope.rcpt_tos),
            "message": email.message_from_bytes(envelope.original_content,
                                                policy=email.policy.default),
            "authenticated": session.authenticated,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
        })
        return "250 OK queued"


MECHANISMS: list[str] = []  # what check_login was asked to check, in order


def check_login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    MECHANISMS.append(mechanism)
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(), auth_data.password.decode()) == (USER, PASSWORD)
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@pytest.fixture(scope="session")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1: (cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make the test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


@pytest.fixture
def smtp_server(certificate):
    """Start an SMTP server on loopback: `smtp_server(**aiosmtpd options) -> (port, inbox)`."""
    started = []

    def start(*, tls: str = "none", bind: str = "127.0.0.1", **options: Any
              ) -> tuple[int, Inbox]:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(*certificate)
        if tls == "ssl":
            options["ssl_context"] = server_context
            options["server_hostname"] = "localhost"
        elif tls == "starttls":
            options["tls_context"] = server_context
        inbox, port = Inbox(), free_port(bind)
        controller = Controller(inbox, hostname=bind, port=port, **options)
        controller.start()
        started.append(controller)
        return port, inbox

    yield start
    for controller in started:
        controller.stop()


def smtp_config(port: int, **values: Any) -> SmtpConfig:
    defaults: dict[str, Any] = {"host": "127.0.0.1", "port": port, "sender": "callkpi@example.com"}
    return SmtpConfig(**(defaults | values))


def message(report: dict | None = None):
    return build_message(report or make_report(), sender="callkpi@example.com",
                         recipients=["boss@example.com", "team@example.com"],
                         title="Support daily")


# ------------------------------------------------------------------ the message
def test_the_message_is_text_then_html_with_its_charts_by_content_id(smtp_server):
    port, inbox = smtp_server()
    send_message(message(), smtp_config(port))
    [mail] = inbox.mails
    assert mail["from"] == "callkpi@example.com"
    assert mail["to"] == ["boss@example.com", "team@example.com"]
    got = mail["message"]
    assert got["Subject"] == "Support daily: Tuesday 24 November 2026"
    assert got["To"] == "boss@example.com, team@example.com"
    assert got["Message-ID"] and got["Date"]
    assert got["Auto-Submitted"] == "auto-generated"
    assert got.get_content_type() == "multipart/alternative"
    plain, related = got.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert "Service level: 76.5 % (target ≥ 80.0 %, missed)" in plain.get_content()
    assert related.get_content_type() == "multipart/related"
    html_part, *images = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    page = html_part.get_content()
    referenced = re.findall(r'src="cid:([^"]+)"', page)
    assert len(referenced) == 3
    assert sorted(i["Content-ID"].strip("<>") for i in images) == sorted(referenced)
    for image in images:
        assert image.get_content_type() == "image/png"
        assert image.get_content_disposition() == "inline"
        assert image.get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:" not in page and "76.5" in page


def test_a_day_without_calls_is_a_mail_without_images(smtp_server):
    port, inbox = smtp_server()
    send_message(message(empty_report()), smtp_config(port))
    parts = inbox.mails[0]["message"].get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]


# ------------------------------------------------------------------ transport
def test_starttls_verified_with_the_ca_file_and_login(smtp_server, certificate):
    port, inbox = smtp_server(tls="starttls", require_starttls=True, auth_required=True,
                              authenticator=check_login)
    send_message(message(), smtp_config(port, tls="starttls", ca_file=str(certificate[0]),
                                        username=USER, password=PASSWORD))
    [mail] = inbox.mails
    assert mail["tls"] and mail["authenticated"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_ssl_from_the_first_byte(smtp_server, certificate):
    # aiosmtpd only counts STARTTLS as TLS for AUTH: on an SSL port it must be told
    port, inbox = smtp_server(tls="ssl", auth_required=True, auth_require_tls=False,
                              authenticator=check_login)
    send_message(message(), smtp_config(port, tls="ssl", ca_file=str(certificate[0]),
                                        username=USER, password=PASSWORD))
    [mail] = inbox.mails
    assert mail["tls"] and mail["authenticated"]


@pytest.mark.parametrize("offered, used", [(None, "PLAIN"), (["PLAIN"], "LOGIN")])
def test_auth_plain_and_auth_login(smtp_server, certificate, offered, used):
    port, inbox = smtp_server(tls="starttls", authenticator=check_login,
                              auth_exclude_mechanism=offered)
    MECHANISMS.clear()
    send_message(message(), smtp_config(port, tls="starttls", ca_file=str(certificate[0]),
                                        username=USER, password=PASSWORD))
    assert MECHANISMS == [used] and inbox.mails[0]["authenticated"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_plain_login_on_loopback(smtp_server):
    port, inbox = smtp_server(auth_required=True, auth_require_tls=False,
                              authenticator=check_login)
    send_message(message(), smtp_config(port, username=USER, password=PASSWORD))
    assert inbox.mails[0]["authenticated"] and not inbox.mails[0]["tls"]


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_an_untrusted_certificate_is_refused_unless_verify_is_off(smtp_server, tls):
    port, inbox = smtp_server(tls=tls)
    with pytest.raises(MailError, match=r"certificate is not trusted .*ca_file"):
        send_message(message(), smtp_config(port, tls=tls))
    assert inbox.mails == []
    send_message(message(), smtp_config(port, tls=tls, verify=False))
    assert len(inbox.mails) == 1


def test_the_certificate_must_name_the_host(smtp_server, certificate):
    port, _ = smtp_server(tls="ssl", bind="127.0.0.2")
    with pytest.raises(MailError, match="not trusted"):
        # the certificate is for localhost and 127.0.0.1, not for 127.0.0.2
        send_message(message(), smtp_config(port, host="127.0.0.2", tls="ssl",
                                            ca_file=str(certificate[0])))


def test_a_wrong_password_is_a_clear_error_without_the_password(smtp_server, certificate):
    port, inbox = smtp_server(tls="starttls", authenticator=check_login)
    wrong = "wrong-" + PASSWORD
    with pytest.raises(MailError) as failure:
        send_message(message(), smtp_config(port, tls="starttls", ca_file=str(certificate[0]),
                                            username=USER, password=wrong))
    assert str(failure.value).startswith(f"127.0.0.1:{port} rejected the login of 'reports': 535")
    assert wrong not in str(failure.value) and inbox.mails == []


def test_a_server_demanding_starttls_refuses_a_plain_mail(smtp_server):
    port, inbox = smtp_server(tls="starttls", require_starttls=True)
    with pytest.raises(MailError, match=rf"127.0.0.1:{port} refused the mail: 530"):
        send_message(message(), smtp_config(port))
    assert inbox.mails == []


def test_no_server_listening():
    port = free_port()
    with pytest.raises(MailError, match=rf"cannot send mail via 127.0.0.1:{port}: "
                                        "Connection refused"):
        send_message(message(), smtp_config(port))


def test_no_password_to_a_remote_host_in_clear_text():
    config = SmtpConfig(host="smtp.example.com", port=25, username=USER, password=PASSWORD)
    with pytest.raises(MailError, match="refusing to send the SMTP password to smtp.example.com"):
        send_message(message(), config)


def test_an_unknown_tls_mode():
    with pytest.raises(MailError, match=r"\[smtp\] tls must be one of none, starttls, ssl"):
        send_message(message(), SmtpConfig(tls="tls"))


def test_an_unreadable_ca_file(tmp_path):
    with pytest.raises(MailError, match="cannot read \\[smtp\\] ca_file"):
        send_message(message(), SmtpConfig(tls="ssl", ca_file=str(tmp_path / "missing.pem")))


def test_the_password_is_never_logged(smtp_server, certificate, caplog):
    caplog.set_level(logging.DEBUG)
    port, inbox = smtp_server(tls="starttls", authenticator=check_login)
    good = smtp_config(port, tls="starttls", ca_file=str(certificate[0]), username=USER,
                       password=PASSWORD)
    send_message(message(), good)
    with pytest.raises(MailError):
        send_message(message(), smtp_config(port, tls="starttls", ca_file=str(certificate[0]),
                                            username=USER, password=PASSWORD + "x"))
    assert len(inbox.mails) == 1
    assert any("reports.mailer" == r.name for r in caplog.records)  # it did log
    assert PASSWORD not in caplog.text


# ------------------------------------------------------------------ days sent
def config_for(port: int, **smtp: Any) -> Config:
    config = load_config(env={})
    config.smtp = smtp_config(port, **smtp)
    return config


async def test_a_day_is_sent_once_per_recipients_unless_forced(store, smtp_server):
    port, inbox = smtp_server()
    config = config_for(port)
    day = dt.date(2026, 11, 24)

    async def send(recipients, **kwargs):
        return (await send_report(store, config, day, recipients, **kwargs)).status

    assert await send(["a@example.com", "b@example.com"]) == SENT_NOW
    assert await send(["B@example.com", "a@example.com"]) == ALREADY_SENT
    assert len(inbox.mails) == 1
    assert await send(["a@example.com"]) == SENT_NOW  # someone else
    assert await send(["a@example.com"], force=True) == SENT_NOW
    assert len(inbox.mails) == 3
    assert await store.fetch_all("SELECT * FROM report_claims") == []
    rows = await store.fetch_all("SELECT day, recipients FROM reports_sent ORDER BY 2")
    assert rows == [("2026-11-24", "a@example.com"), ("2026-11-24", "a@example.com,b@example.com")]


async def test_a_failed_send_is_not_recorded(store):
    config = config_for(free_port())
    with pytest.raises(MailError):
        await send_report(store, config, dt.date(2026, 11, 24), ["a@example.com"])
    assert await store.fetch_all("SELECT * FROM reports_sent") == []
    assert await store.fetch_all("SELECT * FROM report_claims") == []  # a retry sends it


def test_recipients_key():
    assert recipients_key([" B@x.org", "a@x.org", "b@x.org"]) == "a@x.org,b@x.org"


async def test_the_mail_of_a_day_recorded_from_real_asterisk(store, smtp_server):
    """End to end: queue_log -> store -> facts -> KPIs -> the mail that arrives."""
    port, inbox = smtp_server()
    config = config_for(port)
    await ingest_paths(store, [str(SAMPLE)], server="pbx1", batch_lines=1000)
    await refresh_facts(store, config.kpi)  # as the e-mail job does before sending
    assert (await send_report(store, config, SAMPLE_DAY, ["boss@example.com"])).status == SENT_NOW
    got = inbox.mails[0]["message"]
    plain = got.get_body(("plain",)).get_content()
    offered = sum(1 for line in SAMPLE.read_text().splitlines() if "|ENTERQUEUE|" in line)
    assert f"Calls: {offered} offered" in plain
    page = got.get_body(("html",)).get_content()
    assert "support" in page and "Agent 1001" in page
    assert len(re.findall(r'src="cid:', page)) >= 2  # calls per hour and waits at least


# ------------------------------------------------------------------ callkpi email
@pytest.fixture
def cli_config(tmp_path, store_url):
    created(store_url)

    def write(port: int, *extra: str) -> Path:
        path = tmp_path / "callkpi.toml"
        path.write_text("\n".join([
            "[store]", f'db = "{store_url}"',
            "[report]", 'timezone = "Europe/Berlin"',
            "[smtp]", 'host = "127.0.0.1"', f"port = {port}", 'sender = "callkpi@example.com"',
            *extra]) + "\n")
        return path
    return write


def callkpi(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_callkpi_email_sends_a_day_once(smtp_server, cli_config):
    port, inbox = smtp_server()
    config = cli_config(port)
    first = callkpi("--config", str(config), "email", "--from", "2026-11-24", "--to",
                    "2026-11-24", "--recipient", "boss@example.com", "--recipient",
                    "team@example.com")
    assert first.exit_code == 0, first.output
    assert first.stdout == "2026-11-24: sent to boss@example.com, team@example.com\n"
    again = callkpi("--config", str(config), "email", "--from", "2026-11-24", "--to",
                    "2026-11-24", "--recipient", "team@example.com", "--recipient",
                    "boss@example.com")
    assert again.exit_code == 0
    assert "already sent" in again.stdout and "--force" in again.stdout
    assert len(inbox.mails) == 1
    forced = callkpi("--config", str(config), "email", "--from", "2026-11-24", "--to",
                     "2026-11-24", "--recipient", "boss@example.com", "--recipient",
                     "team@example.com", "--force")
    assert forced.exit_code == 0 and len(inbox.mails) == 2


def test_callkpi_email_catches_up_a_range_once(smtp_server, cli_config):
    port, inbox = smtp_server()
    config = cli_config(port)
    callkpi("--config", str(config), "email", "--from", "2026-11-22", "--to", "2026-11-22",
            "--recipient", "a@example.com")
    run = callkpi("--config", str(config), "email", "--from", "2026-11-21", "--to",
                  "2026-11-24", "--recipient", "a@example.com")
    assert run.exit_code == 0, run.output
    assert [m["message"]["Subject"].split(": ")[1] for m in inbox.mails] == [
        "Sunday 22 November 2026", "Saturday 21 November 2026", "Monday 23 November 2026",
        "Tuesday 24 November 2026"]
    assert "2026-11-22: already sent" in run.stdout
    rerun = callkpi("--config", str(config), "email", "--from", "2026-11-21", "--to",
                    "2026-11-24", "--recipient", "a@example.com")
    assert rerun.stdout.count("already sent") == 4 and len(inbox.mails) == 4


def test_the_spellings_of_0_1_still_work_for_one_release(smtp_server, cli_config):
    port, inbox = smtp_server()
    config = str(cli_config(port))
    day = callkpi("--config", config, "email", "--date", "2026-11-22", "--to", "a@example.com",
                  "--to", "b@example.com")
    assert day.exit_code == 0, day.output
    assert day.stdout == "2026-11-22: sent to a@example.com, b@example.com\n"
    assert day.stderr == (
        "Warning: --to ADDRESS is now --recipient ADDRESS; the old spelling goes in the next"
        " release\nWarning: --date DAY is now --from DAY --to DAY; the old spelling goes in the"
        " next release\n")
    days = callkpi("--config", config, "email", "--from", "2026-11-23", "--until", "2026-11-24",
                   "--to", "a@example.com")
    assert days.exit_code == 0, days.output
    assert "--until DAY is now --to DAY" in days.stderr
    assert [m["to"] for m in inbox.mails] == [["a@example.com", "b@example.com"],
                                             ["a@example.com"], ["a@example.com"]]
    both = callkpi("--config", config, "email", "--from", "2026-11-23", "--until", "2026-11-24",
                   "--to", "2026-11-24", "--recipient", "a@example.com")
    assert both.exit_code == 2 and "not both" in both.stderr


def test_callkpi_email_fails_in_one_line_when_the_server_is_down(cli_config):
    port = free_port()
    config = cli_config(port, 'username = "reports"', 'tls = "none"')
    result = callkpi("--config", str(config), "email", "--yesterday", "--recipient",
                     "a@example.com", env={"CALLKPI_SMTP_PASSWORD": PASSWORD})
    assert result.exit_code == 1
    assert result.stderr == (f"Error: cannot send mail via 127.0.0.1:{port}: "
                             "Connection refused\n")
    assert PASSWORD not in result.output
    again = callkpi("--config", str(config), "email", "--yesterday", "--recipient", "a@example.com")
    assert again.exit_code == 1  # nothing was recorded as sent


def test_callkpi_email_recipients_from_the_environment(smtp_server, cli_config):
    port, inbox = smtp_server()
    result = callkpi("--config", str(cli_config(port)), "email", "--yesterday",
                     env={"CALLKPI_EMAIL_TO": "a@example.com  b@example.com"})
    assert result.exit_code == 0, result.output
    assert inbox.mails[0]["to"] == ["a@example.com", "b@example.com"]


def test_callkpi_email_dry_run_writes_the_eml(smtp_server, cli_config, tmp_path, monkeypatch):
    port, inbox = smtp_server()
    monkeypatch.chdir(tmp_path)
    result = callkpi("--config", str(cli_config(port)), "email", "--from", "2026-11-24",
                     "--to", "2026-11-24", "--recipient", "a@example.com", "--dry-run")
    assert result.exit_code == 0, result.output
    eml = tmp_path / "callkpi-report-2026-11-24.eml"
    assert result.stdout == f"2026-11-24: wrote {eml}\n"
    written = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert written.get_content_type() == "multipart/alternative"
    assert inbox.mails == []
    sent = callkpi("--config", str(cli_config(port)), "email", "--from", "2026-11-24",
                   "--to", "2026-11-24", "--recipient", "a@example.com")
    assert "sent to" in sent.stdout  # a dry run records nothing


@pytest.mark.parametrize("args, error", [
    ([], "give one of --yesterday, --from DAY --to DAY"),
    (["--yesterday", "--from", "2026-11-24", "--to", "2026-11-24"], "give one of"),
    (["--to", "2026-11-25"], "give one of"),
    (["--from", "2026-11-24"], "--from needs --to"),
    (["--from", "2026-11-24", "--to", "2026-11-23"], "--to 2026-11-23 is before"),
    (["--from", "2026-11-24", "--to", "2026-11-24", "--to", "2026-11-25"], "more than once"),
])
def test_callkpi_email_usage_errors(cli_config, args, error):
    result = callkpi("--config", str(cli_config(free_port())), "email", *args,
                     "--recipient", "a@example.com")
    assert result.exit_code == 2 and error in result.stderr


@pytest.mark.parametrize("address", ["bob", "a@x.org\nBcc: victim@x.org", "a@x.org, b@x.org"])
def test_callkpi_email_refuses_what_is_not_one_address(cli_config, address):
    result = callkpi("--config", str(cli_config(free_port())), "email", "--yesterday",
                     "--recipient", address)
    assert result.exit_code == 2 and "not an e-mail address" in result.stderr


def test_callkpi_email_needs_an_existing_database(cli_config, make_store_url):
    typo = make_store_url(empty=True)
    for _ in range(2):  # and the first run created nothing there
        result = callkpi("--config", str(cli_config(free_port())), "email", "--yesterday",
                         "--recipient", "a@example.com", "--db", typo)
        assert result.exit_code == 1
        assert result.stderr == no_store_error(typo) + "\n"


def test_callkpi_email_without_recipients(cli_config):
    result = callkpi("--config", str(cli_config(free_port())), "email", "--yesterday")
    assert result.exit_code == 2 and "no recipient" in result.stderr


def test_yesterday_is_in_the_report_time_zone():
    # UTC+14 and UTC-11 are 25 hours apart: never the same date
    for timezone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        assert local_today(timezone) == dt.datetime.now(ZoneInfo(timezone)).date()
    assert local_today("Pacific/Kiritimati") != local_today("Pacific/Pago_Pago")


@pytest.mark.parametrize("day", [["--yesterday"], ["--from", "2026-11-24", "--to", "2026-11-24"]])
def test_an_unknown_time_zone(cli_config, day):
    result = callkpi("--config", str(cli_config(free_port())), "email", *day,
                     "--recipient", "a@example.com",
                     env={"CALLKPI_REPORT_TIMEZONE": "Mars/Olympus"})
    assert result.exit_code == 1
    assert result.stderr == "Error: unknown time zone 'Mars/Olympus' in [report]\n"


def test_callkpi_email_tells_the_manager_in_persian(smtp_server, cli_config):
    """[report] locale = "fa": what the command says is Persian, the day a Jalali date; the
    addresses and options it names stay as typed, each in its own isolate."""
    port, inbox = smtp_server()
    config = str(cli_config(port))
    env = {"CALLKPI_REPORT_LOCALE": "fa"}
    args = ["--config", config, "email", "--from", "2026-11-24", "--to", "2026-11-24",
            "--recipient", "boss@example.com", "--recipient", "team@example.com"]
    first = callkpi(*args, env=env)
    assert first.exit_code == 0, first.output
    assert first.stdout == ("۳ آذر ۱۴۰۵: برای \u2068boss@example.com\u2069، "
                            "\u2068team@example.com\u2069 فرستاده شد\n")
    again = callkpi(*args, env=env)
    assert again.stdout == ("۳ آذر ۱۴۰۵: پیش‌تر برای \u2068boss@example.com\u2069، "
                            "\u2068team@example.com\u2069 فرستاده شده است (\u2068--force\u2069 "
                            "آن را دوباره می‌فرستد)\n")
    old = callkpi("--config", config, "email", "--locale", "fa", "--date", "2026-11-23",
                  "--recipient", "boss@example.com")
    assert old.exit_code == 0, old.output
    assert old.stderr == ("هشدار: \u2068--date DAY\u2069 اکنون \u2068--from DAY --to DAY\u2069 "
                          "است؛ شکل قدیمی در نسخهٔ بعدی حذف می‌شود\n")
    messages = first.stdout + again.stdout + old.stdout + old.stderr
    assert not re.search(r"[A-Za-z0-9]", re.sub("\u2068[^\u2069]*\u2069", "", messages))
    assert len(inbox.mails) == 2
