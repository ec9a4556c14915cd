"""Checkpoints and deterministic replay: one operation_outputs row per step, re-execution returns the
recorded outputs (and recorded errors, as the same exception class) without re-running effects, a
different step at a recorded function_id is a NonDeterminismError, and in-step retries.

Re-execution follows DBOS's deterministic recovery test: force the row back to PENDING with SQL and
run the engine (the same code a worker runs) in this process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import workflows as t
from tests.support.helpers import Sql, deliver_until_settled, insert_unpublished

FORCE_PENDING = """
UPDATE dbos.workflow_status SET status = 'PENDING', executor_id = NULL, lease_until_epoch_ms = NULL,
    output = NULL, error = NULL
WHERE workflow_uuid = %s
"""


def _steps(rt: Runtime, wid: str) -> list[tuple[int, str, Any, Any]]:
    return [(s["function_id"], s["function_name"], s["output"], s["error"]) for s in rt.client.steps(wid)]


def test_every_step_is_checkpointed_once_and_replay_reruns_nothing(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    start_worker()
    rt.client.start(t.effects, 4, workflow_id="replay-fx")
    done = rt.client.wait("replay-fx", 20)
    assert done["status"] == "SUCCESS"
    assert json.loads(done["output"]) == ["e0", "e1", "e2", "e3"]
    recorded = _steps(rt, "replay-fx")
    assert [(fid, name) for fid, name, _, _ in recorded] == [
        (1, "t.tx_effect"),
        (2, "t.plain_effect"),
        (3, "t.tx_effect"),
        (4, "t.plain_effect"),
    ]
    assert [json.loads(out) for _, _, out, _ in recorded] == ["e0", "e1", "e2", "e3"]
    counts = sql(
        "SELECT function_id, count(*) AS n FROM dbos.operation_outputs WHERE workflow_uuid = %s "
        "GROUP BY function_id ORDER BY function_id",
        ("replay-fx",),
    )
    assert [r["n"] for r in counts] == [1, 1, 1, 1]

    # Deterministic recovery: the row goes back to PENDING; re-execution replays every step.
    sql(FORCE_PENDING, ("replay-fx",))
    assert str(rt.engine.execute("replay-fx")) == "success"
    again = rt.client.get("replay-fx")
    assert again["status"] == "SUCCESS"
    assert again["output"] == done["output"]
    assert _steps(rt, "replay-fx") == recorded
    assert effects_of(sql, "replay-fx") == {"e0": 1, "e1": 1, "e2": 1, "e3": 1}


def test_replay_returns_recorded_outputs_not_fresh_ones(rt: Runtime, sql: Sql) -> None:
    """If replay ran steps again this workflow's output would change; it returns what is recorded."""
    insert_unpublished(rt, t.four_steps, workflow_id="replay-doctored")
    assert str(rt.engine.execute("replay-doctored")) == "success"
    assert rt.client.get("replay-doctored")["output"] == "6"  # 0 + 1 + 2 + 3
    # Doctor the recorded output of step 2 (noop(1) -> 100): replay must return the record.
    sql(
        "UPDATE dbos.operation_outputs SET output = '100' WHERE workflow_uuid = %s AND function_id = 2",
        ("replay-doctored",),
    )
    sql(FORCE_PENDING, ("replay-doctored",))
    assert str(rt.engine.execute("replay-doctored")) == "success"
    assert rt.client.get("replay-doctored")["output"] == "105"  # 0 + 100 + 2 + 3


def test_a_recorded_step_error_is_replayed_as_the_same_exception_class(rt: Runtime, sql: Sql) -> None:
    insert_unpublished(rt, t.catcher, "boom", workflow_id="replay-err")
    assert str(rt.engine.execute("replay-err")) == "success"
    expected = "tests.support.workflows.StepBoomError:boom:after-catch"
    assert json.loads(rt.client.get("replay-err")["output"]) == expected
    steps = _steps(rt, "replay-err")
    assert [(fid, name) for fid, name, _, _ in steps] == [(1, "t.raising"), (2, "t.plain_effect")]
    assert steps[0][2] is None
    assert json.loads(steps[0][3])["type"] == "tests.support.workflows.StepBoomError"

    sql(FORCE_PENDING, ("replay-err",))
    # The body catches only StepBoomError: were the replayed error any other class, it would fail.
    assert str(rt.engine.execute("replay-err")) == "success"
    assert json.loads(rt.client.get("replay-err")["output"]) == expected
    assert effects_of(sql, "replay-err") == {"raising": 1, "after-catch": 1}
    assert _steps(rt, "replay-err") == steps


def test_a_failed_workflow_replays_to_the_same_error(rt: Runtime, sql: Sql) -> None:
    insert_unpublished(rt, t.fails, "kaput", workflow_id="replay-fail")
    assert str(rt.engine.execute("replay-fail")) == "error"
    first = rt.client.get("replay-fail")
    assert first["status"] == "ERROR"
    assert json.loads(first["error"])["type"] == "builtins.RuntimeError"
    sql(FORCE_PENDING, ("replay-fail",))
    assert str(rt.engine.execute("replay-fail")) == "error"
    second = rt.client.get("replay-fail")
    assert second["status"] == "ERROR"
    assert second["error"] == first["error"]
    assert effects_of(sql, "replay-fail") == {"before-fail": 1}


def test_a_different_step_at_a_recorded_function_id_is_a_non_determinism_error(
    rt: Runtime, sql: Sql, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KODO_TEST_BRANCH", raising=False)
    insert_unpublished(rt, t.branchy, workflow_id="nondet")
    assert str(rt.engine.execute("nondet")) == "success"
    assert json.loads(rt.client.get("nondet")["output"]) == "a"
    assert [(s["function_id"], s["function_name"]) for s in rt.client.steps("nondet")] == [(1, "t.tx_effect")]

    # Same workflow, replayed by a runner whose code now takes the other branch.
    monkeypatch.setenv("KODO_TEST_BRANCH", "b")
    sql(FORCE_PENDING, ("nondet",))
    assert str(rt.engine.execute("nondet")) == "error"
    row = rt.client.get("nondet")
    assert row["status"] == "ERROR"
    err = json.loads(row["error"])
    assert err["type"] == "kodo.errors.NonDeterminismError"
    assert err["message"] == (
        "workflow nondet function_id 1: recorded 't.tx_effect', replay called 't.plain_effect'"
    )
    # Diverging is detected before the step runs: branch b's effect never happened, a's ran once.
    assert effects_of(sql, "nondet") == {"a": 1}
    assert [(s["function_id"], s["function_name"]) for s in rt.client.steps("nondet")] == [(1, "t.tx_effect")]


def test_step_retries_until_success_with_waits_between_attempts(rt: Runtime, sql: Sql) -> None:
    insert_unpublished(rt, t.retrying, 2, workflow_id="retry-ok")
    # The failed attempt parks the workflow for its backoff (no worker waits); the timer resumes it.
    assert deliver_until_settled(rt, "retry-ok") == ["parked", "success"]
    row = rt.client.get("retry-ok")
    assert row["status"] == "SUCCESS"
    assert row["output"] == "2"  # the attempt number that succeeded
    assert effects_of(sql, "retry-ok") == {"flaky-attempt": 2}
    [step] = rt.client.steps("retry-ok")
    assert step["function_name"] == "t.flaky"
    assert step["error"] is None
    # One wait of interval_s = 50 ms before attempt 2.
    assert step["completed_at_epoch_ms"] - step["started_at_epoch_ms"] >= 50


def test_step_retries_stop_after_max_attempts_and_the_workflow_fails(rt: Runtime, sql: Sql) -> None:
    insert_unpublished(rt, t.retrying, 5, workflow_id="retry-exhausted")
    assert deliver_until_settled(rt, "retry-exhausted") == ["parked", "parked", "error"]
    row = rt.client.get("retry-exhausted")
    assert row["status"] == "ERROR"
    err = json.loads(row["error"])
    assert err["type"] == "kodo.errors.StepRetriesExceededError"
    message = "Step t.flaky has exceeded its maximum of 3 retries. Previous error: attempt 3 failed"
    assert err["message"] == message
    assert effects_of(sql, "retry-exhausted") == {"flaky-attempt": 3}
    [step] = rt.client.steps("retry-exhausted")
    assert step["function_name"] == "t.flaky"
    assert json.loads(step["error"])["message"] == message
    # Waits of 50 ms and 100 ms (backoff 2) before attempts 2 and 3.
    assert step["completed_at_epoch_ms"] - step["started_at_epoch_ms"] >= 150
    # The failure is recorded: replay does not retry again.
    sql(FORCE_PENDING, ("retry-exhausted",))
    assert str(rt.engine.execute("retry-exhausted")) == "error"
    assert effects_of(sql, "retry-exhausted") == {"flaky-attempt": 3}
