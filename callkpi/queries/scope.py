"""What a report covers: one queue or all, some servers or all, and whether queues and agents
of the same name on two servers are one (`[report] merge_servers`).

Every query of the report (callkpi/queries/kpis.py) takes its WHERE clause and the names it
groups by from here, so a report of one server, and a fleet whose tenants are kept apart,
read the same facts the same way as a report of everything (docs/reports.md, "Several
servers").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callkpi.store import Store

# how a queue or agent of one server is named when servers are kept apart
SEPARATOR = " @ "


@dataclass(frozen=True)
class Scope:
    queue: str | None = None  # the queue's own name (as Asterisk logs it), None: every queue
    servers: tuple[str, ...] = ()  # (): every server of the store
    merged: bool = True  # a name is one queue or agent on every server

    def where(self, sql: str, params: list[Any], *, queue: bool = True
              ) -> tuple[str, list[Any]]:
        """`sql` (a condition) narrowed to the scope's queue (unless `queue` is false: a
        table without one) and servers."""
        params = list(params)
        if queue and self.queue is not None:
            sql += " AND queue = ?"
            params.append(self.queue)
        if self.servers:
            sql += f" AND server IN ({', '.join('?' for _ in self.servers)})"
            params.extend(self.servers)
        return sql, params

    def name(self, column: str) -> str:
        """The SQL of a queue's or agent's name as the report shows and groups it: the name
        itself, or with servers apart `name @ server` (no name stays no name)."""
        if self.merged:
            return column
        return f"CASE WHEN {column} = '' THEN '' ELSE {column} || '{SEPARATOR}' || server END"


async def servers_in(store: Store, scope: Scope) -> list[str]:
    """The servers the report covers: those asked for, else every server with queue calls
    or agent sessions in the store (the calls' read off their (server, call_id) index, one
    probe a server: a month of a million calls is not scanned for a handful of names)."""
    if scope.servers:
        return sorted(scope.servers)
    rows = await store.fetch_all(
        "WITH RECURSIVE s(server) AS (SELECT min(server) FROM queue_calls UNION ALL"
        " SELECT (SELECT min(server) FROM queue_calls WHERE server > s.server) FROM s"
        " WHERE s.server IS NOT NULL)"
        " SELECT server FROM s WHERE server IS NOT NULL"
        " UNION SELECT DISTINCT server FROM agent_sessions")
    return sorted(server for (server,) in rows)
