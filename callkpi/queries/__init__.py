"""The SQL of every layer above the store, one module per area, as named async functions.

Each function says what it reads or writes, takes the store (or, for what must be one
transaction with other statements, the transaction from `store.transaction()`) and typed
arguments, and returns typed rows or values; the layers above hold no SQL text. The SQL is
portable (`?` placeholders, every value a parameter): each backend turns it into its own
dialect in one place (store_sqlite.py, store_postgres.py). These modules import the store's
interface and the core types only, never a layer above them.

- `events`: what the AMI listener reads back of the calls in progress;
- `survey`: the survey's skip rules' lookups;
- `facts`: the facts refresh (events -> queue_calls, agent sessions and pauses, survey
  answers, IVR paths) and the queues it has seen;
- `kpis`: the report's aggregates over the facts;
- `roster`: the agents' employment periods;
- `mail`: the days mailed and the claims on sending them.
"""

from __future__ import annotations

from typing import Any, Iterable

from callkpi.store import Store, Transaction

# a read that runs on its own or inside a write transaction
Reader = Store | Transaction


def marks(values: Iterable[Any]) -> str:
    """`?, ?, ...`: one placeholder per value (an IN list)."""
    return ", ".join("?" for _ in values)
