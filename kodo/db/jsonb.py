"""The JSON parameter adapter: layers above kodo.db pass `Jsonb(value)` for a jsonb column.

Re-exported from here so that only kodo.db imports psycopg.
"""

from __future__ import annotations

from psycopg.types.json import Jsonb

__all__ = ["Jsonb"]
