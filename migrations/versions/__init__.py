"""Shared helper for revisions: each one applies `migrations/sql/<revision>_*.sql`."""

from __future__ import annotations

from pathlib import Path

from alembic import op

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def sql_path(revision: str) -> Path:
    matches = sorted(SQL_DIR.glob(f"{revision}_*.sql"))
    if len(matches) != 1:
        raise RuntimeError(f"expected one sql file for revision {revision}, found {matches}")
    return matches[0]


def apply_sql(revision: str) -> None:
    op.execute(sql_path(revision).read_text())
