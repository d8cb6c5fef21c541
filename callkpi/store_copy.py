"""`callkpi db copy SRC DST`: one store's whole content into another (e.g. an SQLite file
into a PostgreSQL database), nothing lost or doubled, resumable after an interruption.

Every row is copied as it is, ids included, so the copy's facts, their watermark and the
followed files' checkpoints stay true: the collectors, pointed at the copy, resume exactly
where they stopped writing to the original, and its new events' ids go on after the copied. A table with an `id`
(events, quarantine, the per-call facts) goes in chunks in id order, each committed on its
own: a rerun starts after the highest id the copy holds. Every other table is small and is
replaced whole in one transaction, the write counter and the facts' state last, so an
interrupted copy never claims facts it does not hold.

The destination must be new, or a copy of this source interrupted before (checked: for
each table with an id, what it holds is exactly the source's rows up to its highest id).
Stop the collectors writing to the source before copying, and start them on the copy after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from callkpi.store import Store, StoreError

CHUNK = 20_000
LAST = ("write_seq", "facts_state")  # copied after everything they describe


class CopyError(StoreError):
    """The destination holds something else than an earlier copy of the source."""


@dataclass
class CopyStats:
    copied: dict[str, int] = field(default_factory=dict)  # rows copied now, per table
    kept: dict[str, int] = field(default_factory=dict)  # rows an earlier run had copied

    def summary(self) -> str:
        return "\n".join(
            f"{table}: {n} copied" + (f" ({self.kept[table]} already there)"
                                      if self.kept.get(table) else "")
            for table, n in self.copied.items())


async def copy_store(src: Store, dst: Store,
                     progress: Callable[[str, int], None] | None = None) -> CopyStats:
    """Copy every table of `src` into `dst`; `progress(table, rows)` after each chunk."""
    tables = await src.schema_tables()
    dst_tables = await dst.schema_tables()
    if tables != dst_tables:
        raise CopyError(f"{src.path} and {dst.path} have different schemas: open both with "
                        "the same callkpi version")
    stats = CopyStats()
    ordered = sorted(tables, key=lambda t: (t in LAST, LAST.index(t) if t in LAST else 0, t))
    for table in ordered:
        columns = tables[table]
        if "id" in columns and table not in LAST:
            await _copy_by_id(src, dst, table, columns, stats, progress)
        else:
            rows = await src.fetch_all(f"SELECT {_select(columns)} FROM {table}")
            await dst.insert_rows(table, columns, rows, replace=True)
            stats.copied[table] = len(rows)
            if progress:
                progress(table, len(rows))
    return stats


async def _copy_by_id(src: Store, dst: Store, table: str, columns: list[str],
                      stats: CopyStats, progress: Callable[[str, int], None] | None) -> None:
    last, stats.kept[table] = await _resume_after(src, dst, table, columns)
    stats.copied[table] = 0
    select = (f"SELECT {_select(columns)} FROM {table} WHERE id > ? ORDER BY id"
              f" LIMIT {CHUNK}")
    while rows := await src.fetch_all(select, (last,)):
        await dst.insert_rows(table, columns, rows)
        last = rows[-1][columns.index("id")]
        stats.copied[table] += len(rows)
        if progress:
            progress(table, len(rows))


async def _resume_after(src: Store, dst: Store, table: str,
                        columns: list[str]) -> tuple[int, int]:
    """The highest id the destination holds and how many rows, once sure they are the
    source's rows up to that id."""
    ((last, count),) = await dst.fetch_all(f"SELECT max(id), count(*) FROM {table}")
    if last is None:
        return 0, 0
    ((src_count,),) = await src.fetch_all(f"SELECT count(*) FROM {table} WHERE id <= ?",
                                          (last,))
    query = f"SELECT {_select(columns)} FROM {table} WHERE id = ?"
    if src_count != count or await src.fetch_all(query, (last,)) != await dst.fetch_all(
            query, (last,)):
        raise CopyError(f"{dst.path} already holds {table} that are not a copy of "
                        f"{src.path}'s: copy into a new store")
    return int(last), int(count)


def _select(columns: list[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)

