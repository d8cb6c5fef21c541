"""What the AMI listener reads back of the events it wrote: the queue calls still in
progress when it logs in again (ami_listener/listener.py, `_recall`)."""

from __future__ import annotations

from typing import Literal, Sequence

from callkpi.queries import marks
from callkpi.store import Store

# values per IN (...) list: well within every backend's bound on a statement's parameters
IN_CHUNK = 500

# (call_id, kind, queue, agent, ts, position): what ami_listener.mapping.stored_calls reads
CallEventRow = tuple[str, str, str, str, float, int | None]


async def call_events_since(store: Store, server: str, since_tsec: int, kinds: Sequence[str]
                            ) -> list[CallEventRow]:
    """The server's events of `kinds` from `since_tsec` on that belong to a call, in time
    order."""
    return await store.fetch_all(
        "SELECT call_id, kind, queue, agent, ts, position FROM events"
        " WHERE server = ? AND tsec >= ? AND call_id <> ''"
        f" AND kind IN ({marks(kinds)}) ORDER BY ts", (server, since_tsec, *kinds))


async def links_of_channels(store: Store, server: str, uniqueids: Sequence[str]
                            ) -> list[tuple[str, str]]:
    """(uniqueid, linked_id) of these channels."""
    return await _links(store, server, "uniqueid", uniqueids)


async def links_of_calls(store: Store, server: str, linked_ids: Sequence[str]
                         ) -> list[tuple[str, str]]:
    """(uniqueid, linked_id) of every channel of these calls (linked ids)."""
    return await _links(store, server, "linked_id", linked_ids)


async def _links(store: Store, server: str, column: Literal["uniqueid", "linked_id"],
                 values: Sequence[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start:start + IN_CHUNK]
        found += [(uid, linked) for uid, linked in await store.fetch_all(
            f"SELECT uniqueid, linked_id FROM call_links WHERE server = ?"
            f" AND {column} IN ({marks(chunk)})", (server, *chunk))]
    return found
