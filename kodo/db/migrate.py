"""Creates the database if missing and applies `migrations/` with Alembic, under an advisory lock."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _sqlalchemy_url(database_url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    return database_url


def ensure_database(database_url: str) -> bool:
    """CREATE DATABASE if it does not exist (via the `postgres` maintenance db). True if created."""
    params = conninfo_to_dict(database_url)
    name = str(params.get("dbname") or "")
    if not name:
        raise ValueError(f"database url has no database name: {database_url}")
    maintenance = make_conninfo(database_url, dbname="postgres")
    with psycopg.connect(maintenance, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False  # another process won the race
        return True


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", _sqlalchemy_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(database_url: str) -> None:
    """Apply every migration not yet applied. Safe to call from many processes at once."""
    ensure_database(database_url)
    command.upgrade(alembic_config(database_url), "head")


def reset_schema(database_url: str, schema: str) -> None:
    """Drop one schema (`app` or `dbos`) and re-apply every (idempotent) migration from zero."""
    if schema not in ("app", "dbos"):
        raise ValueError(f"unknown schema {schema!r}; expected 'app' or 'dbos'")
    ensure_database(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.execute("DROP TABLE IF EXISTS public.kodo_alembic_version")
    upgrade(database_url)
