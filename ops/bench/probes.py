"""How the benchmark sees a workflow finish: a probe per system reads the rows it wrote.

kodo and DBOS: `dbos.workflow_status` / `dbos.operation_outputs` (the same shape in both); raw Celery:
`public.bench_raw`, one row per INSERT of the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ops.bench import BenchError
from ops.bench.services import Conn


class Probe(Protocol):
    def progress(self, keys: Sequence[str]) -> tuple[int, int, float | None]:
        """(done, failed, last completion epoch ms) over `keys`."""
        ...

    def completion_ms(self, key: str) -> float | None:
        """Completion epoch ms of one key, None while not done; raises BenchError if it failed."""
        ...

    def timeline(self, keys: Sequence[str]) -> dict[str, list[float | None]]:
        """Per key: the epoch-ms points named by `labels` (for the latency breakdown)."""
        ...

    labels: list[str]


_FAILED = ("ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


class WorkflowStatusProbe:
    """kodo and DBOS share the shape of `dbos.workflow_status` / `dbos.operation_outputs`."""

    def __init__(self, conn: Conn, claimed_label: str) -> None:
        self.conn = conn
        self.labels = [
            "row inserted",
            claimed_label,
            "step 1 done",
            "step 2 done",
            "step 3 done",
            "step 4 done",
            "SUCCESS written",
        ]

    def progress(self, keys: Sequence[str]) -> tuple[int, int, float | None]:
        row = self.conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'SUCCESS') AS done,"
            " count(*) FILTER (WHERE status = ANY(%(failed)s)) AS failed,"
            " max(updated_at) FILTER (WHERE status = 'SUCCESS') AS last"
            " FROM dbos.workflow_status WHERE workflow_uuid = ANY(%(keys)s)",
            {"keys": list(keys), "failed": list(_FAILED)},
        ).fetchone()
        assert row is not None
        return int(row["done"]), int(row["failed"]), None if row["last"] is None else float(row["last"])

    def completion_ms(self, key: str) -> float | None:
        row = self.conn.execute(
            "SELECT status, updated_at, error FROM dbos.workflow_status WHERE workflow_uuid = %s", (key,)
        ).fetchone()
        if row is None or row["status"] in ("ENQUEUED", "PENDING", "DELAYED"):
            return None
        if row["status"] != "SUCCESS":
            raise BenchError(f"workflow {key} ended {row['status']}: {str(row['error'])[:300]}")
        return float(row["updated_at"])

    def timeline(self, keys: Sequence[str]) -> dict[str, list[float | None]]:
        rows = self.conn.execute(
            "SELECT w.workflow_uuid AS k, w.created_at, w.started_at_epoch_ms, w.updated_at,"
            " array_agg(o.completed_at_epoch_ms ORDER BY o.function_id) AS steps"
            " FROM dbos.workflow_status w LEFT JOIN dbos.operation_outputs o USING (workflow_uuid)"
            " WHERE w.workflow_uuid = ANY(%s) GROUP BY 1, 2, 3, 4",
            (list(keys),),
        ).fetchall()
        out: dict[str, list[float | None]] = {}
        for r in rows:
            steps = [s for s in (r["steps"] or []) if s is not None]
            if len(steps) != 4:
                continue
            out[r["k"]] = [r["created_at"], r["started_at_epoch_ms"], *steps, r["updated_at"]]
        return out


class RawProbe:
    """Raw Celery: completion is the timestamp of the task's fourth INSERT."""

    labels = ["insert 1", "insert 2", "insert 3", "insert 4"]

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def progress(self, keys: Sequence[str]) -> tuple[int, int, float | None]:
        row = self.conn.execute(
            "SELECT count(*) AS done, max(ts_ms) AS last FROM public.bench_raw"
            " WHERE step = 4 AND task_key = ANY(%s)",
            (list(keys),),
        ).fetchone()
        assert row is not None
        return int(row["done"]), 0, None if row["last"] is None else float(row["last"])

    def completion_ms(self, key: str) -> float | None:
        row = self.conn.execute(
            "SELECT ts_ms FROM public.bench_raw WHERE task_key = %s AND step = 4", (key,)
        ).fetchone()
        return None if row is None else float(row["ts_ms"])

    def timeline(self, keys: Sequence[str]) -> dict[str, list[float | None]]:
        rows = self.conn.execute(
            "SELECT task_key AS k, array_agg(ts_ms ORDER BY step) AS ts FROM public.bench_raw"
            " WHERE task_key = ANY(%s) GROUP BY 1",
            (list(keys),),
        ).fetchall()
        return {r["k"]: list(r["ts"]) for r in rows if len(r["ts"]) == 4}
