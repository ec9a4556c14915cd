"""Artifacts of a step attempt are written in one statement (`kodo.intent.artifacts.put_many`): a
repeat of the same set is a no-op, a different artifact in a taken slot is a divergence, and a step
that wrote nothing gets the `none` sentinel."""

from __future__ import annotations

import uuid

import pytest

from kodo.intent import artifacts
from kodo.intent.artifacts import Artifact, ArtifactDivergenceError
from kodo.intent.canonical import sha256_hex
from kodo.runtime import Runtime
from tests.support.helpers import Sql


def _run(sql: Sql) -> str:
    suffix = uuid.uuid4().hex[:16]
    sql("INSERT INTO app.intents (id, goal, payload) VALUES (%s, 'g', '{}'::jsonb)", (f"it_{suffix}",))
    sql(
        "INSERT INTO app.runs (id, intent_id, workflow_id, status) VALUES (%s, %s, %s, 'running')",
        (f"run_{suffix}", f"it_{suffix}", f"it_{suffix}"),
    )
    return f"run_{suffix}"


def _art(name: str, body: dict[str, str]) -> Artifact:
    return Artifact("file", name, body, sha256_hex(body))


def test_a_set_is_one_insert_a_repeat_is_a_no_op_and_a_changed_slot_diverges(rt: Runtime, sql: Sql) -> None:
    run_id = _run(sql)
    items = [(0, _art("a.txt", {"text": "a"})), (1, _art("b.txt", {"text": "b"}))]
    with rt.db.tx() as c:
        refs = artifacts.put_many(c, run_id, "ExecuteST", items, attempt=1, task_key="t1")
    assert refs == [artifacts.uri(run_id, "ExecuteST", n, "t1") for n in ("a.txt", "b.txt")]
    with rt.db.tx() as c:  # the same set again (a re-run attempt): nothing new, no error
        assert artifacts.put_many(c, run_id, "ExecuteST", items, attempt=1, task_key="t1") == refs
    rows = sql("SELECT idx, uri, inline FROM app.artifacts WHERE run_id = %s ORDER BY idx", (run_id,))
    assert [(r["idx"], r["uri"], r["inline"]) for r in rows] == [
        (0, refs[0], {"text": "a"}),
        (1, refs[1], {"text": "b"}),
    ]
    changed = [(0, _art("a.txt", {"text": "a"})), (1, _art("b.txt", {"text": "B"}))]
    with pytest.raises(ArtifactDivergenceError, match=f"{run_id}/ExecuteST/t1/1/1"), rt.db.tx() as c:
        artifacts.put_many(c, run_id, "ExecuteST", changed, attempt=1, task_key="t1")
    assert sql("SELECT count(*) AS n FROM app.artifacts WHERE run_id = %s", (run_id,))[0]["n"] == 2


def test_a_step_that_wrote_nothing_gets_the_sentinel(rt: Runtime, sql: Sql) -> None:
    run_id = _run(sql)
    with rt.db.tx() as c:
        artifacts.ensure_sentinel(c, run_id, "ApplyPatchST", 1, wrote=0)
        artifacts.ensure_sentinel(c, run_id, "DecideST", 1, wrote=2)
    rows = sql("SELECT step_id, idx, kind FROM app.artifacts WHERE run_id = %s", (run_id,))
    assert [(r["step_id"], r["idx"], r["kind"]) for r in rows] == [
        ("ApplyPatchST", artifacts.SENTINEL_IDX, "none")
    ]
