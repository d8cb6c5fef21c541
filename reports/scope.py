"""A report's servers checked before it is built: a mistyped `--server` is an error, not a
report of nothing (what a report covers: callkpi/queries/scope.py)."""

from __future__ import annotations

from callkpi.errors import UserError
from callkpi.queries.scope import Scope, servers_in
from callkpi.store import Store


class UnknownServer(UserError):
    """A report of a server the store has never seen would be a report of nothing."""


async def require_servers(store: Store, servers: list[str]) -> None:
    """Each named server has calls or agent sessions in the (refreshed) facts, else say
    which servers there are: `--server pbx-pari` is a typo, not a quiet day."""
    known = await servers_in(store, Scope())
    unknown = [s for s in servers if s not in known]
    if unknown:
        raise UnknownServer(f"server {unknown[0]!r} never appeared in the store (servers: "
                            f"{', '.join(known) or 'none yet'})")
