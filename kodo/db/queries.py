"""Loads the named DML blocks of `kodo/db/queries/*.sql` (procrastinate's format).

A block starts with `-- name: <name>`, may carry `-- ` description lines, and ends at the next block.
Python refers to a query only as `Q[<name>]`; there is no other SQL in the code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import LiteralString

QUERY_DIR = Path(__file__).resolve().parent / "queries"
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$")


def parse(text: str) -> dict[str, str]:
    """Split one .sql file into {name: sql}; raise on a duplicate or an empty block."""
    out: dict[str, str] = {}
    name: str | None = None
    body: list[str] = []

    def flush() -> None:
        if name is None:
            return
        sql = "\n".join(line for line in body if not line.lstrip().startswith("--")).strip()
        if not sql:
            raise ValueError(f"query {name} is empty")
        if name in out:
            raise ValueError(f"query {name} is defined twice")
        out[name] = sql

    for line in text.splitlines():
        match = _NAME.match(line)
        if match:
            flush()
            name, body = match.group(1), []
        else:
            body.append(line)
    flush()
    return out


def load(directory: Path = QUERY_DIR) -> dict[str, LiteralString]:
    queries: dict[str, LiteralString] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, sql in parse(path.read_text()).items():
            if name in queries:
                raise ValueError(f"query {name} is defined in two files")
            # The files are part of the package, never user input: safe to treat as literal SQL
            # (mypy treats LiteralString as str, so no cast is needed or allowed).
            queries[name] = sql
    return queries


Q: dict[str, LiteralString] = load()
