"""Postgres work of one database between two moments: commits (`pg_stat_database`) and statements
(`pg_stat_statements`, when the server has it loaded).

`pg_stat_database.xact_commit` counts every committed transaction, an autocommit statement included.
Backends report it to the cumulative statistics at most once a second (and up to 10 s later when they
go idle), so a delta is exact to about a second's worth of commits at either end. `pg_stat_statements`
is updated as each statement ends; its rows are deltas per (user, query id) of this database only,
without resetting anything (the server may be shared), and the benchmark's own reads of these views are
left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ops.bench.services import Conn

# The benchmark's own statements on these views, left out of the counts.
_OWN = ("pg_stat_statements", "pg_stat_database", "pg_stat_clear_snapshot", "pg_database")


def enable_statements(conn: Conn) -> str | None:
    """CREATE EXTENSION pg_stat_statements in the connected database and read it once; None if it
    works, else why not (not installed, or not in shared_preload_libraries)."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT 1 FROM pg_stat_statements LIMIT 1").fetchall()
    except Exception as exc:  # psycopg errors: the figure is left out, the run goes on
        return str(exc).strip().splitlines()[0]
    return None


@dataclass(frozen=True)
class Statement:
    query: str
    calls: int
    total_ms: float
    rows: int


@dataclass
class PgSample:
    commits: int
    rollbacks: int
    statements: dict[tuple[int, int], Statement] | None = field(default=None)  # None: no extension


def sample(conn: Conn, dbname: str, with_statements: bool) -> PgSample:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s", (dbname,)
    ).fetchone()
    assert row is not None, dbname
    out = PgSample(int(row["xact_commit"]), int(row["xact_rollback"]))
    if with_statements:
        rows = conn.execute(
            "SELECT userid, queryid, query, calls, total_exec_time, rows FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) AND queryid IS NOT NULL",
            (dbname,),
        ).fetchall()
        out.statements = {
            (int(r["userid"]), int(r["queryid"])): Statement(
                str(r["query"]), int(r["calls"]), float(r["total_exec_time"]), int(r["rows"])
            )
            for r in rows
            if not any(own in str(r["query"]) for own in _OWN)
        }
    return out


@dataclass(frozen=True)
class PgDelta:
    commits: int
    rollbacks: int
    statements: list[Statement] | None  # per query: the calls, time and rows in between; most calls first

    @property
    def statement_calls(self) -> int | None:
        return None if self.statements is None else sum(s.calls for s in self.statements)


def delta(before: PgSample, after: PgSample) -> PgDelta:
    stmts: list[Statement] | None = None
    if before.statements is not None and after.statements is not None:
        stmts = []
        for key, a in after.statements.items():
            b = before.statements.get(key)
            calls = a.calls - (b.calls if b else 0)
            if calls > 0:
                stmts.append(
                    Statement(
                        a.query,
                        calls,
                        a.total_ms - (b.total_ms if b else 0.0),
                        a.rows - (b.rows if b else 0),
                    )
                )
        stmts.sort(key=lambda s: s.calls, reverse=True)
    return PgDelta(after.commits - before.commits, after.rollbacks - before.rollbacks, stmts)
