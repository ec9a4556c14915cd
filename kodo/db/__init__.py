"""Postgres adapter: the connection pool, the named queries and the migration runner."""
