"""Where a benchmark's stores go: SQLite files in the run's temporary directory, or a schema
of the run's own in the PostgreSQL database named by --db (dropped at the end), so a bench
never touches what a database already holds."""

from __future__ import annotations

import os
from pathlib import Path


class Backend:
    def __init__(self, db: str | None, tmp: Path) -> None:
        if db and not db.startswith(("postgresql://", "postgres://")):
            raise SystemExit(f"--db takes a postgresql:// URL, not {db!r}")
        self.url, self.tmp = db, Path(tmp)
        self.name = "postgresql" if db else "sqlite"
        self.schema = f"callkpi_bench_{os.getpid()}"

    def __enter__(self) -> "Backend":
        self.sql(f"CREATE SCHEMA {self.schema}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.sql(f"DROP SCHEMA {self.schema} CASCADE")

    def store_url(self, name: str = "callkpi") -> str:
        """A store's URL: a file of the run (SQLite), or the run's schema (PostgreSQL, where
        every name is the one schema: use one store per run)."""
        if not self.url:
            return str(self.tmp / f"{name}.db")
        options = f"options=-csearch_path%3D{self.schema}"
        return f"{self.url}{'&' if '?' in self.url else '?'}{options}"

    def sql(self, statement: str) -> None:
        """Run a statement outside any transaction (PostgreSQL only: VACUUM, schemas)."""
        if not self.url:
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"SET search_path = {self.schema}")
            conn.execute(statement)

    def settle(self) -> None:
        """What a store that has been in use for a while has: statistics and a visibility map
        (autovacuum's work), so a read may use an index alone."""
        self.sql("VACUUM ANALYZE")
