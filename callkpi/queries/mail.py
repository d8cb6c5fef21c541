"""The nightly mail's SQL: the days already mailed to a set of recipients (`reports_sent`)
and the claims on sending one (`report_claims`); reports/mailer.py keeps the rules."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from callkpi.queries import Reader
from callkpi.store import Store, Transaction


class Claim(NamedTuple):
    owner: str  # the process sending it (mailer.process_id)
    claimed_at: float


async def was_sent(db: Reader, day: dt.date, recipients: str) -> bool:
    return bool(await db.fetch_all(
        "SELECT 1 FROM reports_sent WHERE day = ? AND recipients = ?",
        (day.isoformat(), recipients)))


async def record_sent(tx: Transaction, day: dt.date, recipients: str, sent_at: float) -> None:
    await tx.execute(
        "INSERT INTO reports_sent (day, recipients, sent_at) VALUES (?, ?, ?)"
        " ON CONFLICT (day, recipients) DO UPDATE SET sent_at = excluded.sent_at",
        (day.isoformat(), recipients, sent_at))


async def claim(tx: Transaction, day: dt.date, recipients: str, owner: str, now: float
                ) -> bool:
    """Claim the sending for `owner`: False when another claim holds it."""
    return bool(await tx.execute(
        "INSERT INTO report_claims (day, recipients, owner, claimed_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (day, recipients) DO NOTHING", (day.isoformat(), recipients, owner, now)))


async def claim_of(tx: Transaction, day: dt.date, recipients: str) -> Claim | None:
    rows = await tx.fetch_all(
        "SELECT owner, claimed_at FROM report_claims WHERE day = ? AND recipients = ?",
        (day.isoformat(), recipients))
    return Claim(*rows[0]) if rows else None


async def take_over_claim(tx: Transaction, day: dt.date, recipients: str, owner: str,
                          now: float) -> None:
    await tx.execute(
        "UPDATE report_claims SET owner = ?, claimed_at = ? WHERE day = ? AND recipients = ?",
        (owner, now, day.isoformat(), recipients))


async def release_claim(db: Store | Transaction, day: dt.date, recipients: str, owner: str
                        ) -> None:
    """Drop `owner`'s claim (in its own transaction when given the store)."""
    await db.execute("DELETE FROM report_claims WHERE day = ? AND recipients = ? AND owner = ?",
                     (day.isoformat(), recipients, owner))
