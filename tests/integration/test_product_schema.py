"""Migration 0004: the product tables of schema app, their exactly-once keys, append-only rules and seeds."""

from __future__ import annotations

import psycopg
import pytest

from kodo.db import migrate
from kodo.db.pool import connect

KEY_COLUMNS = {
    "intents": {"id", "goal", "payload", "created_at"},
    "runs": {
        "id",
        "intent_id",
        "workflow_id",
        "status",
        "trace_id",
        "last_step",
        "error",
        "retry_count",
        "next_action",
        "tenant_id",
        "queue_partition_key",
        "created_at",
        "updated_at",
    },
    "run_steps": {
        "run_id",
        "step_id",
        "phase",
        "output",
        "trace_id",
        "started_at",
        "finished_at",
        "attempt",
        "span_id",
    },
    "artifacts": {
        "run_id",
        "step_id",
        "idx",
        "kind",
        "uri",
        "inline",
        "sha256",
        "task_key",
        "attempt",
        "created_at",
    },
    "recipes": {
        "id",
        "name",
        "version",
        "queue_name",
        "max_concurrency",
        "max_steps",
        "max_sandbox_minutes",
        "spec",
        "created_at",
    },
    "opencode_calls": {
        "id",
        "run_id",
        "step_id",
        "request",
        "response",
        "diff",
        "session_id",
        "agent",
        "schema_hash",
        "prompt",
        "structured",
        "raw_response",
        "tool_calls",
        "duration_ms",
        "error",
        "op_key",
        "created_at",
    },
    "mock_receipts": {
        "receipt_key",
        "run_id",
        "step_id",
        "payload_hash",
        "first_attempt",
        "last_attempt",
        "seen_count",
        "request_payload",
        "response_payload",
        "created_at",
        "updated_at",
    },
    "plan_approvals": {"run_id", "approved_at", "approved_by", "notes"},
    "sbx_runs": {
        "run_id",
        "step_id",
        "task_key",
        "provider",
        "request",
        "response",
        "err_code",
        "metrics",
        "attempt",
        "created_at",
        "updated_at",
    },
}

PRIMARY_KEYS = {
    "intents": ["id"],
    "runs": ["id"],
    "run_steps": ["run_id", "step_id", "attempt"],
    "artifacts": ["run_id", "step_id", "task_key", "idx", "attempt"],
    "recipes": ["id"],
    "opencode_calls": ["id"],
    "mock_receipts": ["receipt_key"],
    "plan_approvals": ["run_id"],
    "sbx_runs": ["run_id", "step_id", "task_key", "attempt"],
}

SEEDS = [
    {
        "id": "rcp_compile_default_v1",
        "name": "compile-default",
        "version": 1,
        "queue_name": "intentQ",
        "max_concurrency": 10,
        "max_steps": 32,
        "max_sandbox_minutes": 15,
        "class": "compile",
    },
    {
        "id": "rcp_control_default_v1",
        "name": "control-default",
        "version": 1,
        "queue_name": "intentQ",
        "max_concurrency": 5,
        "max_steps": 16,
        "max_sandbox_minutes": 10,
        "class": "control",
    },
    {
        "id": "rcp_sandbox_default_v1",
        "name": "sandbox-default",
        "version": 1,
        "queue_name": "intentQ",
        "max_concurrency": 20,
        "max_steps": 128,
        "max_sandbox_minutes": 60,
        "class": "sandbox",
    },
]

# One duplicate insert per exactly-once key (contract-internals §2.13). Keys in PRESENT already hold a row
# (the fixture's run, the recipe seeds), so the first insert is the duplicate; the others are run twice.
PRESENT = {"runs.workflow_id", "recipes (name, version)"}
DUPLICATES = {
    "runs.workflow_id": "INSERT INTO app.runs (id, intent_id, workflow_id, status)"
    " VALUES ('run_' || gen_random_uuid(), 'it_1', 'it_1', 'queued')",
    "run_steps pk": "INSERT INTO app.run_steps (run_id, step_id, phase, attempt) VALUES ('run_1', 'CompileST', 'compilation', 1)",
    "artifacts pk": "INSERT INTO app.artifacts (run_id, step_id, task_key, idx, attempt, kind, sha256)"
    " VALUES ('run_1', 'ExecuteST', 'tk', 0, 1, 'stdout', 'h')",
    "sbx_runs pk": "INSERT INTO app.sbx_runs (run_id, step_id, task_key, attempt, provider, request, response, err_code,"
    " metrics) VALUES ('run_1', 'ExecuteST', 'tk', 1, 'mock', '{}', '{}', 'NONE', '{}')",
    "opencode_calls.op_key": "INSERT INTO app.opencode_calls (id, run_id, step_id, request, response, op_key)"
    " VALUES ('occall_' || gen_random_uuid(), 'run_1', 'CompileST', '{}', '{}', 'op-1')",
    "mock_receipts pk": "INSERT INTO app.mock_receipts (receipt_key, run_id, step_id, payload_hash, first_attempt,"
    " last_attempt, request_payload) VALUES ('rk', 'run_1', 'ExecuteST', 'ph', 1, 1, '{}')",
    "plan_approvals pk": "INSERT INTO app.plan_approvals (run_id) VALUES ('run_1')",
    "recipes (name, version)": "INSERT INTO app.recipes (id, name, version, queue_name, max_concurrency, max_steps,"
    " max_sandbox_minutes) VALUES ('rcp_' || gen_random_uuid(), 'compile-default', 1, 'intentQ', 1, 1, 1)",
}


@pytest.fixture
def migrated(scratch_url: str) -> str:
    migrate.upgrade(scratch_url)
    with connect(scratch_url) as c:
        c.execute("INSERT INTO app.intents (id, goal, payload) VALUES ('it_1', 'g', '{}')")
        c.execute(
            "INSERT INTO app.runs (id, intent_id, workflow_id, status) VALUES ('run_1', 'it_1', 'it_1', 'queued')"
        )
    return scratch_url


def _seeds(url: str) -> list[dict[str, object]]:
    with connect(url) as c:
        return c.execute(
            "SELECT id, name, version, queue_name, max_concurrency, max_steps, max_sandbox_minutes,"
            " spec->>'class' AS class FROM app.recipes ORDER BY name"
        ).fetchall()


def test_tables_exist_with_their_columns_and_keys(migrated: str) -> None:
    with connect(migrated) as c:
        for table, columns in KEY_COLUMNS.items():
            rows = c.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema='app' AND table_name=%s",
                (table,),
            ).fetchall()
            assert columns <= {r["column_name"] for r in rows}, table
            pk = c.execute(
                "SELECT a.attname FROM pg_index i"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                " WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
                (f"app.{table}",),
            ).fetchall()
            assert [r["attname"] for r in pk] == PRIMARY_KEYS[table], table
        views = c.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema='app' ORDER BY 1"
        ).fetchall()
        # Only the operators' views (migration 0008): no product table is a view.
        assert [v["table_name"] for v in views] == [
            "v_ops_failures_24h",
            "v_ops_queue_depth",
            "v_ops_slow_steps",
        ]


@pytest.mark.parametrize("key", sorted(DUPLICATES))
def test_exactly_once_keys_reject_a_duplicate(migrated: str, key: str) -> None:
    with connect(migrated) as c:
        if key not in PRESENT:
            c.execute(DUPLICATES[key])
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute(DUPLICATES[key])


def test_checks_and_foreign_keys(migrated: str) -> None:
    with connect(migrated) as c:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            c.execute(
                "INSERT INTO app.runs (id, intent_id, workflow_id, status) VALUES ('r', 'nope', 'w', 'queued')"
            )
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            c.execute("INSERT INTO app.plan_approvals (run_id) VALUES ('nope')")
        with pytest.raises(psycopg.errors.CheckViolation):
            c.execute(
                "INSERT INTO app.recipes (id, name, version, queue_name, max_concurrency, max_steps, max_sandbox_minutes)"
                " VALUES ('x', 'x', 1, 'otherQ', 1, 1, 1)"
            )
        with pytest.raises(psycopg.errors.CheckViolation):
            c.execute(
                "INSERT INTO app.mock_receipts (receipt_key, run_id, step_id, payload_hash, first_attempt, last_attempt,"
                " request_payload, seen_count) VALUES ('rk', 'run_1', 'ExecuteST', 'ph', 1, 1, '{}', 0)"
            )
        # runs.status deliberately has no CHECK (the sleep smoke writes 'PENDING').
        c.execute("UPDATE app.runs SET status = 'PENDING' WHERE id = 'run_1'")
        c.execute("INSERT INTO app.plan_approvals (run_id) VALUES ('run_1')")
        assert c.execute("SELECT approved_by FROM app.plan_approvals").fetchone() == {"approved_by": "system"}


@pytest.mark.parametrize(
    ("table", "insert"),
    [("run_steps", DUPLICATES["run_steps pk"]), ("sbx_runs", DUPLICATES["sbx_runs pk"])],
)
def test_append_only_tables_refuse_update_and_delete(migrated: str, table: str, insert: str) -> None:
    with connect(migrated) as c:
        c.execute(insert)
        c.execute(insert + " ON CONFLICT DO NOTHING")
        with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
            c.execute(f"UPDATE app.{table} SET step_id = 'other'")
        with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
            c.execute(f"DELETE FROM app.{table}")
        assert c.execute(f"SELECT count(*) AS n FROM app.{table}").fetchone() == {"n": 1}


def test_seeds_survive_reapply_and_reset_exactly_once(scratch_url: str) -> None:
    migrate.upgrade(scratch_url)
    assert _seeds(scratch_url) == SEEDS
    migrate.upgrade(scratch_url)
    assert _seeds(scratch_url) == SEEDS
    migrate.reset_schema(scratch_url, "app")
    assert _seeds(scratch_url) == SEEDS
    migrate.upgrade(scratch_url)
    assert _seeds(scratch_url) == SEEDS
