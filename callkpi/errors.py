"""The one base of every error a user (an admin, a manager) caused and can fix.

Library code raises a `UserError` subclass with a message meant for that user; the edge (the
CLI today, the web layer next) translates it once, into one line and `exit_code`. Anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what was asked or configured; `str(exc)` is the whole message."""

    exit_code = 1
