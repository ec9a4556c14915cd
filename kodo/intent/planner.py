"""The compiler: plan (CompileST) and build decision (DecideST), contract-internals §3.3-§3.4, §7.

`OC_MODE=replay` (the default) is the built-in deterministic planner and decider of the original:
plan `design=["Design for: <goal>"]`, decision `test_command` = `FAIL_ME` when the goal contains
"fail me" (case-sensitive), else `pnpm test`. Two optional hooks in `constraints.testHooks` let an
operator drive the mock sandbox without a model: `tests` (list of strings, one fan-out task each)
and `testCommand` (e.g. `INFRA_FAIL`, `TIMEOUT_ME`, `FLAKY_INFRA_FAIL`).

`live`/`record` talk to an OpenCode daemon, which this build does not ship: they fail the step with
a clear error instead of silently falling back to replay.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from kodo.db.jsonb import Jsonb
from kodo.db.pool import Conn
from kodo.db.queries import Q
from kodo.intent.canonical import sha256_hex


class CompilerUnavailableError(Exception):
    """OC_MODE asks for a compiler this process does not have."""


def _hooks(constraints: dict[str, Any]) -> dict[str, Any]:
    hooks = constraints.get("testHooks")
    return hooks if isinstance(hooks, dict) else {}


def _require_replay(oc_mode: str) -> None:
    if oc_mode != "replay":
        raise CompilerUnavailableError(
            f"OC_MODE={oc_mode} needs the OpenCode daemon, which this build does not ship"
        )


def plan_prompt(goal: str, inputs: Any, constraints: Any) -> str:
    return (
        f"Goal: {goal}\nInputs: {json.dumps(inputs)}\nConstraints: {json.dumps(constraints)}\n\n"
        "Return ONLY JSON per schema. No code, no patches."
    )


def plan(oc_mode: str, goal: str, constraints: dict[str, Any]) -> dict[str, Any]:
    """PlanOutput `{goal, design, files, risks, tests}`."""
    _require_replay(oc_mode)
    tests = _hooks(constraints).get("tests")
    tests = [str(t) for t in tests] if isinstance(tests, list) else []
    return {"goal": goal, "design": [f"Design for: {goal}"], "files": [], "risks": [], "tests": tests}


def decide_prompt(approved: dict[str, Any], goal: str) -> str:
    subset = {k: approved.get(k, []) for k in ("design", "files", "risks", "tests")}
    return (
        f"Approved Plan: {json.dumps(subset, separators=(',', ':'))}\n\nGoal: {goal}\n\n"
        "Generate patches and test command. Return ONLY JSON per schema."
    )


def decide(oc_mode: str, goal: str, constraints: dict[str, Any], approved: dict[str, Any]) -> dict[str, Any]:
    """The build decision `{prompt, toolcalls, responses, diffs, structured{patch, tests, test_command}}`."""
    _require_replay(oc_mode)
    command = _hooks(constraints).get("testCommand")
    if not isinstance(command, str) or not command.strip():
        command = "FAIL_ME" if "fail me" in goal else "pnpm test"
    return {
        "prompt": decide_prompt(approved, goal),
        "toolcalls": [],
        "responses": [],
        "diffs": [],
        "structured": {"patch": [], "tests": list(approved.get("tests", [])), "test_command": command},
    }


def record_call(
    c: Conn,
    *,
    run_id: str,
    step_id: str,
    attempt: int,
    agent: str,
    prompt: str,
    structured: dict[str, Any],
) -> None:
    """The model-call ledger row (one per step attempt, keyed by op_key)."""
    c.execute(
        Q["insert_opencode_call"],
        {
            "id": "occall_" + secrets.token_hex(8),
            "run_id": run_id,
            "step_id": step_id,
            "request": Jsonb({"agent": agent, "prompt": prompt}),
            "response": Jsonb({"structured": structured}),
            "session_id": f"replay-{run_id}",
            "agent": agent,
            "schema_hash": sha256_hex(agent),
            "prompt": prompt,
            "structured": Jsonb(structured),
            "duration_ms": 0,
            "op_key": f"{run_id}:{step_id}:{attempt}",
        },
    )
