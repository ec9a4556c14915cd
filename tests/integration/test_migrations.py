"""Migrations apply from zero, re-apply as a no-op, and each reset touches only its own schema."""

from __future__ import annotations

from kodo.db import migrate
from kodo.db.pool import connect

EXPECTED = {
    ("dbos", "workflow_status"),
    ("dbos", "operation_outputs"),
    ("dbos", "notifications"),
    ("dbos", "step_attempts"),
    ("dbos", "schedule_ticks"),
    ("dbos", "queue_limits"),
    ("dbos", "queue_partition_limits"),
    ("dbos", "queue_slots"),
    ("dbos", "queue_slot_deltas"),
    ("dbos", "queue_rate"),
    ("app", "marks"),
    ("app", "workflow_runs"),
    ("app", "intents"),
    ("app", "runs"),
    ("app", "run_steps"),
    ("app", "artifacts"),
    ("app", "recipes"),
    ("app", "opencode_calls"),
    ("app", "mock_receipts"),
    ("app", "plan_approvals"),
    ("app", "sbx_runs"),
    ("app", "v_ops_failures_24h"),
    ("app", "v_ops_slow_steps"),
    ("app", "v_ops_queue_depth"),
}


def _tables(url: str) -> set[tuple[str, str]]:
    with connect(url) as c:
        rows = c.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN ('app','dbos')"
        ).fetchall()
    return {(r["table_schema"], r["table_name"]) for r in rows}


def test_apply_from_zero_then_again_is_a_no_op(scratch_url: str) -> None:
    assert migrate.ensure_database(scratch_url) is True
    migrate.upgrade(scratch_url)
    assert _tables(scratch_url) == EXPECTED
    with connect(scratch_url) as c:
        c.execute("INSERT INTO app.marks (run_id, step) VALUES ('keep', 's1')")
        cols = {
            r["column_name"]
            for r in c.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema='dbos' AND table_name='workflow_status'"
            ).fetchall()
        }
    assert {
        "queue_partition_key",
        "updated_at_epoch_ms",
        "recovery_attempts",
        "lease_epoch",
        "wake_at_epoch_ms",
    } <= cols
    migrate.upgrade(scratch_url)
    with connect(scratch_url) as c:
        assert c.execute("SELECT count(*) AS n FROM app.marks WHERE run_id='keep'").fetchone() == {"n": 1}


def test_resets_touch_only_their_schema(scratch_url: str) -> None:
    migrate.upgrade(scratch_url)
    with connect(scratch_url) as c:
        c.execute("INSERT INTO app.marks (run_id, step) VALUES ('r', 's1')")
        c.execute(
            "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, queue_name, application_version, inputs)"
            " VALUES ('w', 'SUCCESS', 'n', 'intentQ', 'v1', '{}')"
        )
    migrate.reset_schema(scratch_url, "app")
    with connect(scratch_url) as c:
        assert (
            c.execute("SELECT run_id FROM app.marks ORDER BY run_id").fetchall()
            == [{"run_id": "seed_sentinel"}] * 2
        )
        assert c.execute("SELECT count(*) AS n FROM dbos.workflow_status").fetchone() == {"n": 1}
    migrate.reset_schema(scratch_url, "dbos")
    with connect(scratch_url) as c:
        assert c.execute("SELECT count(*) AS n FROM dbos.workflow_status").fetchone() == {"n": 0}
    assert _tables(scratch_url) == EXPECTED
