"""Alembic environment: runs each revision's SQL file under one advisory lock (see kodo.db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "kodo.db.migrate sets sqlalchemy.url"

# Any number of processes may start at once; the lock makes them apply migrations one after another.
MIGRATION_LOCK_KEY = 7_042_001

engine = create_engine(url)
with engine.connect() as connection:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    connection.commit()
    try:
        context.configure(connection=connection, version_table="kodo_alembic_version")
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.commit()
engine.dispose()
