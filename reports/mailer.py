"""The report by e-mail: one multipart message (a plain-text summary, the HTML page, its charts
as inline images by Content-ID) sent over SMTP as [smtp] in the config says, and the days
already sent recorded in the store so a catch-up run does not send a day twice.

The TLS mode is explicit (none | starttls | ssl) with an explicit ssl.SSLContext: a mail
library's defaults differ between versions and a silently unencrypted login is a leak.
The password is sent to the server only; it is never logged or put in a message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Sequence

from callkpi.config import Config, SmtpConfig
from callkpi.errors import UserError
from callkpi.net import is_loopback
from callkpi.store import Store
from reports.kpis import build_report
from reports.render_html import render_email_parts, render_text, subject_line

log = logging.getLogger(__name__)

TLS_MODES = ("none", "starttls", "ssl")
SMTP_TIMEOUT_S = 30.0

SENT = "SELECT 1 FROM reports_sent WHERE day = ? AND recipients = ?"
RECORD_SENT = """
INSERT INTO reports_sent (day, recipients, sent_at) VALUES (?, ?, ?)
ON CONFLICT (day, recipients) DO UPDATE SET sent_at = excluded.sent_at
"""


class MailError(UserError):
    """The report could not be sent; the message says why in one line, without secrets."""


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
    html_part = next(part for part in message.iter_parts()
                     if part.get_content_type() == "text/html")
    for cid, png in images.items():
        html_part.add_related(png, maintype="image", subtype="png", cid=f"<{cid}>",
                              filename=cid.partition("@")[0] + ".png", disposition="inline")
    return message


def send_message(message: EmailMessage, smtp: SmtpConfig) -> None:
    """Deliver over SMTP as configured; any failure is a MailError naming the server."""
    if smtp.tls not in TLS_MODES:
        raise MailError(f"[smtp] tls must be one of {', '.join(TLS_MODES)}, not {smtp.tls!r}")
    if smtp.username and smtp.tls == "none" and not is_loopback(smtp.host):
        raise MailError(f"refusing to send the SMTP password to {smtp.host} unencrypted: "
                        "set [smtp] tls to starttls or ssl")
    where = f"{smtp.host}:{smtp.port}"
    log.info("sending %r to %s via %s (tls %s%s)", message["Subject"], message["To"], where,
             smtp.tls, f", login {smtp.username}" if smtp.username else "")
    try:
        with _connect(smtp) as client:
            if smtp.username:
                client.login(smtp.username, smtp.password)
            client.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"{where} rejected the login of {smtp.username!r}: "
                        f"{_reply(exc.smtp_code, exc.smtp_error)}") from None
    except smtplib.SMTPResponseException as exc:
        raise MailError(f"{where} refused the mail: {_reply(exc.smtp_code, exc.smtp_error)}"
                        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(f"{rcpt} ({_reply(*reply)})" for rcpt, reply in
                            exc.recipients.items())
        raise MailError(f"{where} refused the recipients {refused}") from None
    except ssl.SSLCertVerificationError as exc:
        raise MailError(f"TLS with {where} failed: its certificate is not trusted "
                        f"({exc.verify_message}); set [smtp] ca_file to the CA that signed it"
                        ) from None
    except ssl.SSLError as exc:
        raise MailError(f"TLS with {where} failed: {exc.reason or exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"cannot send mail via {where}: {_os_reason(exc)}") from None


def _connect(smtp: SmtpConfig) -> smtplib.SMTP:
    if smtp.tls == "ssl":
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_S,
                                context=tls_context(smtp))
    client = smtplib.SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_S)
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
                      force: bool = False) -> bool:
    """E-mail the report of one day unless it was already sent to these recipients (or
    `force`); record it as sent. True when a mail went out."""
    key = recipients_key(recipients)
    if not force and await already_sent(store, day, key):
        return False
    message = await report_message(store, config, day, recipients)
    await asyncio.to_thread(send_message, message, config.smtp)
    await store.execute(RECORD_SENT, (day.isoformat(), key, time.time()))
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
    return bool(await store.fetch_all(SENT, (day.isoformat(), key)))


def recipients_key(recipients: Sequence[str]) -> str:
    """The same people in any order are the same recipients."""
    return ",".join(sorted({r.strip().lower() for r in recipients}))


def _reply(code: int, text: bytes | str) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(text.split())}"


def _os_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
