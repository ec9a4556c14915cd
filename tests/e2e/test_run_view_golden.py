"""contract-api §8.1 / §15.1 run-view-golden (seed 000 L14): the RunView of an approved run is stable.

The view is pretty-printed (2-space indent), normalised (ISO timestamps -> <ISO_TS>, UUIDs -> <UUID>,
`xx_<16-32 hex>` ids -> <HEX_ID>, 64-hex -> <HEX64>) and compared as a string with
tests/golden/run-view.json. A missing baseline fails. `mise run test:golden:refresh`
(REFRESH_GOLDEN=1) rewrites it: only after an intentional projection change, and commit the result.

Scenario: intent `{"goal":"test goal","inputs":{},"constraints":{},"connectors":[]}`, start
`{"traceId":"test-trace","queuePartitionKey":"golden-tenant"}`, approve at the gate, wait for
`succeeded`. kodo has no mock-planner injection, so the plan and decision are the built-in replay
planner's (OC_MODE=replay): one task `pnpm test`.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from ops.testrun import REPO
from tests.e2e.live import PHASES, STEPS, Json, LiveSystem

GOLDEN = REPO / "tests" / "golden" / "run-view.json"
REFRESH = os.environ.get("REFRESH_GOLDEN") == "1"

_ISO_TS = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_HEX_ID = re.compile(r"\b[a-z]{2,5}_[0-9a-f]{16,32}\b")
_HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


def normalise(text: str) -> str:
    text = _ISO_TS.sub("<ISO_TS>", text)
    text = _UUID.sub("<UUID>", text)
    text = _HEX_ID.sub("<HEX_ID>", text)
    return _HEX64.sub("<HEX64>", text)


def render(view: Json) -> str:
    return normalise(json.dumps(view, indent=2, ensure_ascii=False)) + "\n"


def test_normaliser() -> None:
    raw = {
        "runId": "run_0123456789abcdef",
        "intent": "it_0123456789abcdef0123456789abcdef",
        "at": "2026-02-19T10:11:12.345Z",
        "uuid": "123e4567-e89b-12d3-a456-426614174000",
        "uri": f"artifact://run/run_0123456789abcdef/step/ExecuteST/task/{'ab' * 32}/stdout",
        "short": "it_0123",
    }
    assert json.loads(render(raw)) == {
        "runId": "<HEX_ID>",
        "intent": "<HEX_ID>",
        "at": "<ISO_TS>",
        "uuid": "<UUID>",
        "uri": "artifact://run/<HEX_ID>/step/ExecuteST/task/<HEX64>/stdout",
        "short": "it_0123",
    }
    assert render({"a": [1, {}], "b": []}) == '{\n  "a": [\n    1,\n    {}\n  ],\n  "b": []\n}\n'


@pytest.fixture(scope="module")
def golden_view(live_system: LiveSystem) -> tuple[str, str, Json]:
    """The golden scenario, run once: (intentId, runId, RunView)."""
    sut = live_system
    intent_id = sut.new_intent({"goal": "test goal", "inputs": {}, "constraints": {}, "connectors": []})
    run_id = sut.start_run(intent_id, {"traceId": "test-trace", "queuePartitionKey": "golden-tenant"})
    sut.wait_status(run_id, "waiting_input")
    assert sut.approve(run_id, "golden").status_code == 202
    sut.wait_status(run_id, "succeeded")
    return intent_id, run_id, sut.view(run_id)


def test_run_view_golden(golden_view: tuple[str, str, Json]) -> None:
    actual = render(golden_view[2])
    if REFRESH:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(actual)
        print(f"wrote {GOLDEN.relative_to(REPO)} (commit it)")
    assert GOLDEN.is_file(), (
        f"missing golden baseline {GOLDEN.relative_to(REPO)}: run `mise run test:golden:refresh` and commit it"
    )
    assert actual == GOLDEN.read_text(), (
        "RunView differs from tests/golden/run-view.json (refresh only for an intentional change):\n" + actual
    )


def test_run_view_shape(golden_view: tuple[str, str, Json]) -> None:
    """What §8.1 fixes about the golden run independently of the baseline file."""
    intent_id, run_id, view = golden_view
    assert list(view) == [
        "runId",
        "workflowId",
        "status",
        "steps",
        "artifacts",
        "traceId",
        "lastStep",
        "retryCount",
        "nextAction",
    ]
    assert (view["runId"], view["workflowId"], view["status"]) == (run_id, intent_id, "succeeded")
    assert (view["traceId"], view["lastStep"], view["retryCount"], view["nextAction"]) == (
        "test-trace",
        "ExecuteST",
        0,
        "NONE",
    )
    assert [s["stepId"] for s in view["steps"]] == STEPS
    assert [s["phase"] for s in view["steps"]] == PHASES
    for step in view["steps"]:
        assert list(step) == ["stepId", "phase", "output", "startedAt", "finishedAt", "traceId", "spanId"], (
            step
        )
        assert step["output"]["attempt"] == 1
    execute = view["steps"][3]["output"]
    assert execute["stdout"] == "OK: pnpm test\n"
    assert execute["errCode"] == "NONE"
    # ORDER BY step_id, task_key, idx: ApplyPatchST and DecideST made no artifact (sentinel `none`).
    assert [a["kind"] for a in view["artifacts"]] == [
        "none",
        "plan_card",
        "none",
        "artifact_index",
        "file",
        "timings",
        "raw",
        "stderr",
        "stdout",
    ]
    for artifact in view["artifacts"]:
        assert list(artifact) == ["kind", "uri", "inline", "sha256"], artifact
        assert re.fullmatch(r"[0-9a-f]{64}", artifact["sha256"])
