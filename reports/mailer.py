"""The report by e-mail: one multipart message (a plain-text summary, the HTML page, its charts
as inline images by Content-ID) sent over SMTP as [smtp] in the config says, and the days
already sent recorded in the store so a catch-up run does not send a day twice.

Sent once, whatever fails:
- a mail the relay took (its 250 after DATA) is sent and recorded as such, whatever happens to
  the end of the session (a relay failing QUIT made every rerun send it again);
- sending is claimed in the store first (`report_claims`), so two runs for the same day and
  recipients send it once; a claim is dropped when the relay refused the mail (a retry sends),
  and one left by a run that died while sending, or whose connection broke after the message
  was handed over, means "may have gone": only --force sends that mail again.

The TLS mode is explicit (none | starttls | ssl) with an explicit ssl.SSLContext: a mail
library's defaults differ between versions and a silently unencrypted login is a leak.
The password is sent to the server only; it is never logged or put in a message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Sequence

from callkpi.config import Config, SmtpConfig
from callkpi.errors import UserError
from callkpi.net import is_loopback
from callkpi.queries import mail as q
from callkpi.store import Store
from reports.kpis import build_report
from reports.render_html import render_email_parts, render_text, subject_line

log = logging.getLogger(__name__)

TLS_MODES = ("none", "starttls", "ssl")
SMTP_TIMEOUT_S = 30.0
QUIT_TIMEOUT_S = 5.0  # saying goodbye once the relay has taken the mail
# A claim by a process on another host (a shared store) counts as abandoned after this long.
CLAIM_LEASE_S = 3600.0

SENT_NOW, ALREADY_SENT, BEING_SENT = "sent", "already sent", "being sent"


class MailError(UserError):
    """The report could not be sent; the message says why in one line, without secrets."""


class MailMaybeSent(MailError):
    """The connection broke after the message was handed to the relay and before its answer:
    whether the relay took it is unknown, so it is not sent again without --force."""


@dataclass
class Outcome:
    """What became of one day's mail."""

    status: str  # SENT_NOW | ALREADY_SENT | BEING_SENT
    refused: dict[str, str] = field(default_factory=dict)  # recipient -> the relay's reply
    sender: str = ""  # BEING_SENT: the run sending it


def build_message(report: dict[str, Any], *, sender: str, recipients: Sequence[str],
                  title: str | None = None, targets: dict[str, float] | None = None,
                  locale: str = "en") -> EmailMessage:
    """multipart/alternative: text/plain, then multipart/related (text/html + image/png
    parts whose Content-IDs the page's `cid:` images name), in the report's language."""
    html, images = render_email_parts(report, title=title, targets=targets, locale=locale)
    message = EmailMessage()
    message["Subject"] = subject_line(report, title=title, locale=locale)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies
    message.set_content(render_text(report, title=title, targets=targets, locale=locale))
    message.add_alternative(html, subtype="html")
    html_part = message.get_body(("html",))
    assert isinstance(html_part, EmailMessage)
    for cid, png in images.items():
        html_part.add_related(png, maintype="image", subtype="png", cid=f"<{cid}>",
                              filename=cid.partition("@")[0] + ".png", disposition="inline")
    return message


def send_message(message: EmailMessage, smtp: SmtpConfig) -> dict[str, str]:
    """Deliver over SMTP as configured. Until the relay has taken the mail, a failure is a
    MailError naming the server (MailMaybeSent if the connection broke while it had the
    message); once it has, the mail is sent and nothing after that raises. Returns the
    recipients the relay refused while taking the mail for the others, with its reply."""
    if smtp.tls not in TLS_MODES:
        raise MailError(f"[smtp] tls must be one of {', '.join(TLS_MODES)}, not {smtp.tls!r}")
    if smtp.username and smtp.tls == "none" and not is_loopback(smtp.host):
        raise MailError(f"refusing to send the SMTP password to {smtp.host} unencrypted: "
                        "set [smtp] tls to starttls or ssl")
    where = f"{smtp.host}:{smtp.port}"
    log.info("sending %r to %s via %s (tls %s%s)", message["Subject"], message["To"], where,
             smtp.tls, f", login {smtp.username}" if smtp.username else "")
    try:
        client = _connect(smtp)
    except (smtplib.SMTPException, OSError) as exc:
        raise _failure(exc, smtp, where) from None
    try:
        if smtp.username:
            client.login(smtp.username, smtp.password)
        refused = client.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        client.close()
        if client.handed_over and not isinstance(exc, smtplib.SMTPResponseException):
            raise MailMaybeSent(f"the connection to {where} broke after the mail was handed "
                                f"over ({_os_reason(exc)}): whether it was taken is unknown"
                                ) from None
        raise _failure(exc, smtp, where) from None
    _goodbye(client, where)
    refusals = {rcpt: _reply(*reply) for rcpt, reply in refused.items()}
    if refusals:
        log.warning("%s took the mail but refused %s", where,
                    ", ".join(f"{r} ({why})" for r, why in refusals.items()))
    return refusals


def _failure(exc: BaseException, smtp: SmtpConfig, where: str) -> MailError:
    """What went wrong before the relay took the mail, in one line without secrets."""
    if isinstance(exc, MailError):
        return exc
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return MailError(f"{where} rejected the login of {smtp.username!r}: "
                         f"{_reply(exc.smtp_code, exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPResponseException):
        return MailError(f"{where} refused the mail: {_reply(exc.smtp_code, exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{rcpt} ({_reply(*reply)})" for rcpt, reply in
                            exc.recipients.items())
        return MailError(f"{where} refused the recipients {refused}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MailError(f"TLS with {where} failed: its certificate is not trusted "
                         f"({exc.verify_message}); set [smtp] ca_file to the CA that signed it")
    if isinstance(exc, ssl.SSLError):
        return MailError(f"TLS with {where} failed: {exc.reason or exc}")
    return MailError(f"cannot send mail via {where}: {_os_reason(exc)}")


def _goodbye(client: smtplib.SMTP, where: str) -> None:
    """QUIT, briefly: the mail is sent already, so a relay failing here costs a log line."""
    try:
        if client.sock is not None:
            client.sock.settimeout(QUIT_TIMEOUT_S)
        code, _ = client.quit()
        if code != 221:
            log.warning("%s took the mail, then answered QUIT with %d: the mail is sent",
                        where, code)
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("%s took the mail, then ending the session failed (%s): the mail is sent",
                    where, _os_reason(exc))
    finally:
        client.close()


class _HandOver:
    """Notes when the message goes to the relay (DATA): a broken connection from then on
    leaves the relay's answer unknown, unlike one before it."""

    handed_over = False

    def data(self, msg: Any) -> tuple[int, bytes]:
        self.handed_over = True
        return super().data(msg)  # type: ignore[misc]


class _SMTP(_HandOver, smtplib.SMTP):
    pass


class _SMTP_SSL(_HandOver, smtplib.SMTP_SSL):
    pass


def _connect(smtp: SmtpConfig) -> _SMTP | _SMTP_SSL:
    if smtp.tls == "ssl":
        return _SMTP_SSL(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_S, context=tls_context(smtp))
    client = _SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_S)
    if smtp.tls == "starttls":
        try:
            client.starttls(context=tls_context(smtp))
        except BaseException:
            client.close()
            raise
    return client


def tls_context(smtp: SmtpConfig) -> ssl.SSLContext:
    """Verify the server's certificate and name (with [smtp] ca_file for a private CA)
    unless [smtp] verify is false."""
    try:
        context = ssl.create_default_context(cafile=smtp.ca_file or None)
    except OSError as exc:
        raise MailError(f"cannot read [smtp] ca_file {smtp.ca_file}: {_os_reason(exc)}"
                        ) from None
    if not smtp.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def send_report(store: Store, config: Config, day: dt.date, recipients: Sequence[str],
                      force: bool = False) -> Outcome:
    """E-mail the report of one day unless it was sent to these recipients already (or
    `force`) or another run is sending it; record it as sent. The report is read from the
    facts as last refreshed: `callkpi email` refreshes them once before its days."""
    key = recipients_key(recipients, config.report.servers)
    if not force and await already_sent(store, day, key):
        return Outcome(ALREADY_SENT)
    message = await report_message(store, config, day, recipients)
    me = process_id()
    if (taken := await claim(store, day, key, me, force)) is not None:
        return taken
    try:
        refused = await asyncio.to_thread(send_message, message, config.smtp)
    except MailMaybeSent as exc:  # the claim stays: the next run says the mail may have gone
        raise MailMaybeSent(f"{day}: {exc}; check that {key} got it, then --force sends it "
                            "again if not") from None
    except MailError:  # the relay did not take it: a retry sends it
        await q.release_claim(store, day, key, me)
        raise
    async with store.transaction() as tx:
        await q.record_sent(tx, day, key, time.time())
        await q.release_claim(tx, day, key, me)
    return Outcome(SENT_NOW, refused)


async def claim(store: Store, day: dt.date, key: str, me: str, force: bool) -> Outcome | None:
    """Claim the sending of the day's mail to `key` for process `me`: None once it is ours,
    else why it is not to be sent. MailError if a run died while sending it (unless `force`).
    The claim comes before the check of reports_sent: a run that recorded the mail between
    this run's first check and its claim is then seen, on any backend's isolation level."""
    for _ in range(3):  # a claim can go between our insert and our read of it
        async with store.transaction() as tx:
            if await q.claim(tx, day, key, me, time.time()):
                if not force and await q.was_sent(tx, day, key):
                    await q.release_claim(tx, day, key, me)
                    return Outcome(ALREADY_SENT)
                return None
            held = await q.claim_of(tx, day, key)
            if held is None:
                continue
            holder, since = held
            if is_running(holder, since):
                return Outcome(BEING_SENT, sender=describe(holder, since))
            if not force:
                raise MailError(f"{day}: an earlier run ({describe(holder, since)}) stopped "
                                f"while sending this report to {key}: it may have gone. Check "
                                "that it arrived, then --force sends it again if not")
            await q.take_over_claim(tx, day, key, me, time.time())
            return None
    raise MailError(f"{day}: cannot claim the sending of this report (claims keep changing)")


def process_id() -> str:
    """This process, as a claim's owner: host:pid:boot:start, so a pid reused after the
    process died (or after a reboot) never passes for it."""
    return f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"


def is_running(owner: str, claimed_at: float) -> bool:
    host, pid, started = owner.rsplit(":", 2)
    if host != socket.gethostname():  # cannot look: a lease
        return time.time() - claimed_at < CLAIM_LEASE_S
    return _started(int(pid)) == started if started else _exists(int(pid))


def describe(owner: str, claimed_at: float) -> str:
    host, pid, _ = owner.rsplit(":", 2)
    when = dt.datetime.fromtimestamp(claimed_at).strftime("%Y-%m-%d %H:%M:%S")
    return f"process {pid} on {host}, since {when}"


def _started(pid: int) -> str:
    """The boot and the clock tick a process started at ("" where /proc cannot say)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return f"{boot}/{fields[19]}" if len(fields) > 19 else ""  # field 22: starttime


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def write_report_eml(store: Store, config: Config, day: dt.date,
                           recipients: Sequence[str], directory: Path) -> Path:
    """The mail `send_report` would send, as an .eml file (nothing sent or recorded)."""
    message = await report_message(store, config, day, recipients)
    path = directory / f"callkpi-report-{day.isoformat()}.eml"
    path.write_bytes(message.as_bytes())
    return path


async def report_message(store: Store, config: Config, day: dt.date,
                         recipients: Sequence[str]) -> EmailMessage:
    report = await build_report(store, config, day, day, interval="hour")
    return build_message(report, sender=config.smtp.sender, recipients=recipients,
                         title=config.report.title, targets=config.report.targets,
                         locale=config.report.locale)


async def already_sent(store: Store, day: dt.date, key: str) -> bool:
    return await q.was_sent(store, day, key)


def recipients_key(recipients: Sequence[str], servers: Sequence[str] = ()) -> str:
    """The same people in any order are the same recipients; the report of some servers
    only is another mail than the report of them all."""
    key = ",".join(sorted({r.strip().lower() for r in recipients}))
    return f"{key} (servers {', '.join(sorted(set(servers)))})" if servers else key


def _reply(code: int, text: bytes | str) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(text.split())}"


def _os_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
