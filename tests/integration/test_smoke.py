"""The smallest end-to-end proof: a real worker runs a workflow to SUCCESS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import workflows as t


def test_four_steps_succeed_through_a_real_worker(
    rt: Runtime, start_worker: Callable[..., Any], sql: Callable[..., list[dict[str, Any]]]
) -> None:
    start_worker()
    started = rt.client.start(t.four_steps, workflow_id="smoke-four")
    row = rt.client.wait(started.workflow_id, 20)
    assert row["status"] == "SUCCESS"
    assert row["output"] == "6"
    assert [s["function_name"] for s in rt.client.steps("smoke-four")] == ["t.noop"] * 4


def test_effects_run_once(
    rt: Runtime, start_worker: Callable[..., Any], sql: Callable[..., list[dict[str, Any]]]
) -> None:
    start_worker()
    rt.client.start(t.effects, 4, workflow_id="smoke-effects")
    assert rt.client.wait("smoke-effects", 20)["status"] == "SUCCESS"
    assert effects_of(sql, "smoke-effects") == {"e0": 1, "e1": 1, "e2": 1, "e3": 1}
