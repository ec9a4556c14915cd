"""The compiler: plan (CompileST) and build decision (DecideST), contract-internals §3.3-§3.4, §7.

Each step asks one structured prompt (`plan` agent for CompileST, `build` for DecideST) through
`structured()`, whose answer depends on `OC_MODE`:

* `replay` (the default): a recorded fixture `<OC_FIXTURE_DIR>/<fixtureKey>.json` when one exists,
  else the built-in deterministic producer of the original: plan `design=["Design for: <goal>"]`,
  decision `test_command` = `FAIL_ME` when the goal contains "fail me" (case-sensitive), else
  `pnpm test`. Two hooks in `constraints.testHooks` drive the producer without a model: `tests` (one
  fan-out task each) and `testCommand` (e.g. `echo hello`, `INFRA_FAIL`, `TIMEOUT_ME`).
* `live`: the OpenCode server at `OC_BASE_URL` (`kodo.intent.opencode`), one session per run.
* `record`: as `live`, and the server's answer is also written as the fixture `replay` reads.

If the server is unreachable, refuses the call or answers outside the schema, `live`/`record` fall
back to the producer (the original's rule), record the server's error in the ledger row and log a
warning; with `OC_STRICT_MODE=1` they fail the step instead (`oc_live_unavailable:<step>:<msg>`).

**The ledger** (`app.opencode_calls`, one row per `op_key = sha256(run:step:attempt:schemaHash:
promptHash)`) is read before any call and written right after it. The row of a call made to the
server (`live`, `record`) and the row of a failed call commit on a connection of their own, before
the step's checkpoint: a step re-executed after a kill replays the recorded answer and does not call
the model again. The one window left is a kill between the server's answer and the ledger commit:
that call is made again. A `replay` answer calls no model, so its row is written in the step's own
transaction (when the step gives one: `step_ledger`) and commits with its checkpoint; a step
re-executed after a kill produces the same answer again. A repair re-executes a step with the
next attempt number, hence a new op_key and a new call (one model call per step attempt, §2.13).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, LiteralString, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kodo import faults
from kodo.config import Settings
from kodo.db.jsonb import Jsonb
from kodo.db.pool import Conn
from kodo.db.queries import Q
from kodo.intent.canonical import sha256_hex
from kodo.intent.opencode import (
    OcError,
    OcTimeoutTerminalError,
    OcUnavailableError,
    OpenCodeClient,
    StructuredOutputError,
)
from kodo.workflow import context

log = logging.getLogger(__name__)

PLAN_AGENT, BUILD_AGENT = "plan", "build"
RETRY_COUNT = 3  # the server's own schema retries per prompt (`format.retryCount`)
SCHEMA_VERSION = 1
_READ_ONLY_TOOLS = frozenset({"read", "grep", "glob", "ls", "skill"})
TOOL_ALLOWLIST = {
    PLAN_AGENT: _READ_ONLY_TOOLS,
    BUILD_AGENT: _READ_ONLY_TOOLS | {"edit", "write", "bash", "patch"},
}
SESSION_MAX_MESSAGES, SESSION_MAX_TOKENS = 20, 100_000  # a run's session rotates past either


class CompilerError(Exception):
    """The compiler could not answer a step (strict mode, a denied tool, a child session)."""


# ---- the answer schemas (sent to the server as JSON schema, and checked on the way back) ----------


class PlanAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", title="PlanSchema")

    goal: str | None = None
    design: list[str] = Field(default_factory=list, max_length=25)
    files: list[str] = Field(default_factory=list, max_length=30)
    risks: list[str] = Field(default_factory=list, max_length=15)
    tests: list[str] = Field(default_factory=list, max_length=100)


class PatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    diff: str = Field(max_length=20_000)


class BuildAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", title="BuildSchema")

    patch: list[PatchItem] = Field(default_factory=list, max_length=30)
    tests: list[str] = Field(default_factory=list, max_length=100)
    test_command: str


PLAN_SCHEMA: dict[str, Any] = PlanAnswer.model_json_schema()
BUILD_SCHEMA: dict[str, Any] = BuildAnswer.model_json_schema()


# ---- prompts and producers -------------------------------------------------------------------------


def _hooks(constraints: dict[str, Any]) -> dict[str, Any]:
    hooks = constraints.get("testHooks")
    return hooks if isinstance(hooks, dict) else {}


def plan_prompt(goal: str, inputs: Any, constraints: Any) -> str:
    return (
        f"Goal: {goal}\nInputs: {json.dumps(inputs)}\nConstraints: {json.dumps(constraints)}\n\n"
        "Return ONLY JSON per schema. No code, no patches."
    )


def decide_prompt(approved: dict[str, Any], goal: str) -> str:
    subset = {k: approved.get(k, []) for k in ("design", "files", "risks", "tests")}
    return (
        f"Approved Plan: {json.dumps(subset, separators=(',', ':'))}\n\nGoal: {goal}\n\n"
        "Generate patches and test command. Return ONLY JSON per schema."
    )


def produce_plan(goal: str, constraints: dict[str, Any]) -> dict[str, Any]:
    tests = _hooks(constraints).get("tests")
    tests = [str(t) for t in tests] if isinstance(tests, list) else []
    return {"design": [f"Design for: {goal}"], "files": [], "risks": [], "tests": tests}


def produce_decision(goal: str, constraints: dict[str, Any], approved: dict[str, Any]) -> dict[str, Any]:
    command = _hooks(constraints).get("testCommand")
    if not isinstance(command, str) or not command.strip():
        command = "FAIL_ME" if "fail me" in goal else "pnpm test"
    return {"patch": [], "tests": list(approved.get("tests", [])), "test_command": command}


# ---- keys and fixtures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One structured prompt of a step attempt."""

    run_id: str
    step_id: str
    attempt: int
    agent: str
    prompt: str
    schema: dict[str, Any]
    model: type[BaseModel]
    producer: Callable[[], dict[str, Any]]

    @cached_property  # computed once a call (the ledger's read and its row both use them)
    def schema_hash(self) -> str:
        return sha256_hex(json.dumps(self.schema, separators=(",", ":"), ensure_ascii=False))

    @cached_property
    def op_key(self) -> str:
        parts = (self.run_id, self.step_id, self.attempt, self.schema_hash, sha256_hex(self.prompt))
        return sha256_hex(":".join(str(p) for p in parts))


def fixture_key(intent: str, seed: int | str) -> str:
    """sha256 of canonical `{intent, schemaVersion: 1, seed}` (the seed as text, as the original)."""
    return sha256_hex({"intent": intent, "schemaVersion": SCHEMA_VERSION, "seed": str(seed)})


def fixture_path(settings: Settings, intent: str) -> Path:
    return Path(settings.oc_fixture_dir) / f"{fixture_key(intent, settings.test_seed)}.json"


def write_fixture(settings: Settings, intent: str, answer: dict[str, Any]) -> Path:
    """`<OC_FIXTURE_DIR>/<fixtureKey>.json`: 2-space JSON and a trailing newline."""
    path = fixture_path(settings, intent)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"intent": intent, "schemaVersion": SCHEMA_VERSION, "seed": str(settings.test_seed), **answer}
    tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_fixture(settings: Settings, intent: str) -> dict[str, Any] | None:
    path = fixture_path(settings, intent)
    if not path.is_file():
        return None
    body = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(body, dict) or not isinstance(body.get("structured"), dict):
        raise CompilerError(f"fixture {path} has no structured answer")
    return {k: body[k] for k in ("structured", "toolcalls", "responses") if k in body}


# ---- the ledger ------------------------------------------------------------------------------------


class Ledger(Protocol):
    def answer(self, op_key: str) -> dict[str, Any] | None:
        """The recorded answer of a call (None when there is none, or the call failed)."""

    def session_of(self, run_id: str) -> str | None:
        """The OpenCode session the run used last."""

    def record(self, row: dict[str, Any], *, now: bool = True) -> None:
        """Write one ledger row (a failed call's row may later be replaced by an answer). `now`: commit
        it before anything else; False: it may commit with the step's transaction instead."""


class DbLedger:
    """`app.opencode_calls`. A row that must outlive the step commits through a connection of its own;
    reads, and the rows that need not (`now=False`), go through the step's transaction when one is
    given (`step`), which saves them a commit each."""

    def __init__(self, connect: Callable[[], AbstractContextManager[Conn]], step: Conn | None = None) -> None:
        self._connect = connect
        self._step = step

    def _read(self, sql: LiteralString, params: dict[str, Any]) -> Any:
        if self._step is not None:
            return self._step.execute(sql, params).fetchone()
        with self._connect() as c:
            return c.execute(sql, params).fetchone()

    def answer(self, op_key: str) -> dict[str, Any] | None:
        row = self._read(Q["get_opencode_answer"], {"op_key": op_key})
        return dict(row["response"]) if row is not None else None

    def session_of(self, run_id: str) -> str | None:
        row = self._read(Q["latest_opencode_session"], {"run_id": run_id})
        return str(row["session_id"]) if row is not None else None

    def record(self, row: dict[str, Any], *, now: bool = True) -> None:
        params = {k: Jsonb(v) if k in _JSON_COLUMNS and v is not None else v for k, v in row.items()}
        if not now and self._step is not None:
            with self._step.transaction():  # a savepoint: a failed write leaves the step's tx usable
                self._step.execute(Q["insert_opencode_call"], params)
            return
        with self._connect() as c:
            c.execute(Q["insert_opencode_call"], params)


_JSON_COLUMNS = frozenset({"request", "response", "structured", "tool_calls", "error"})


# ---- sessions (one per run, per process; the ledger remembers it across processes) -----------------


@dataclass
class _Session:
    id: str
    messages: int = 0
    tokens: int = 0


_sessions: dict[tuple[str, str], _Session] = {}  # (server, run id) -> this process's session


def _session(client: OpenCodeClient, ledger: Ledger, run_id: str, strict: bool) -> _Session:
    known = _sessions.get((client.base_url, run_id))
    if known is not None and known.messages < SESSION_MAX_MESSAGES and known.tokens < SESSION_MAX_TOKENS:
        return known
    sid = ledger.session_of(run_id) if known is None else None
    if sid is None:
        try:
            sid = client.create_session(run_id)
        except OcError as exc:
            if strict:
                raise CompilerError(f"oc_live_unavailable:session:{exc}") from exc
            sid = "sess_" + secrets.token_hex(8)
            log.warning("OpenCode session for run %s not created (%s); using %s", run_id, exc, sid)
    session = _sessions[(client.base_url, run_id)] = _Session(sid)
    return session


# ---- the structured prompt ---------------------------------------------------------------------------


def _deny_child_sessions(value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("parentID", "parentSessionId"):
                raise CompilerError("child_session_denied: no child sessions are allowed")
            _deny_child_sessions(v)
    elif isinstance(value, list):
        for v in value:
            _deny_child_sessions(v)


def _check_tools(agent: str, answer: dict[str, Any]) -> None:
    allowed = TOOL_ALLOWLIST.get(agent, frozenset())
    for call in answer.get("toolcalls") or []:
        name = str(call.get("name"))
        if name not in allowed and name != "noop":
            raise CompilerError(f"tool-denied: {name} for agent {agent}")


def _validated(call: Call, structured: dict[str, Any]) -> dict[str, Any]:
    try:
        return call.model.model_validate(structured).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise StructuredOutputError(f"the answer does not fit {call.model.__name__}: {exc}") from exc


def _live(settings: Settings, call: Call, ledger: Ledger, row: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Ask the server. Returns the answer and where it came from (`live`, or `producer` on a fallback)."""
    strict = settings.oc_strict_mode
    client = OpenCodeClient(settings.oc_base_url, settings.oc_timeout_ms)
    session = _session(client, ledger, call.run_id, strict)
    row["session_id"] = session.id
    try:
        if call.step_id == "CompileST":
            client.log(f"Planning for run {call.run_id}")
        result = client.prompt_with_stall_retry(session.id, call.agent, call.prompt, call.schema, RETRY_COUNT)
        session.messages += 2
        session.tokens += result.total_tokens or 0
        answer: dict[str, Any] = {
            "structured": _validated(call, result.structured),
            "toolcalls": result.tool_calls,
            "responses": result.responses,
        }
        if result.total_tokens is not None:
            answer["usage"] = {"total_tokens": result.total_tokens}
        row["raw_response"] = result.raw_response
        return answer, "live"
    except OcError as exc:
        kind = (
            "oc_live_unavailable"
            if isinstance(exc, OcUnavailableError | OcTimeoutTerminalError)
            else (type(exc).__name__)
        )
        if strict:
            raise CompilerError(f"{kind}:{call.step_id}:{exc}") from exc
        log.warning(
            "OpenCode %s for %s/%s; using the built-in producer: %s", kind, call.run_id, call.step_id, exc
        )
        row["error"] = {"type": kind, "message": str(exc), "fallback": "producer"}
        return {"structured": call.producer(), "toolcalls": [], "responses": []}, "producer"


def structured(settings: Settings, call: Call, ledger: Ledger) -> dict[str, Any]:
    """The answer `{structured, toolcalls, responses[, usage]}` of one structured prompt."""
    _deny_child_sessions(call.schema)
    recorded = ledger.answer(call.op_key)
    if recorded is not None:
        _check_tools(call.agent, recorded)  # the same verdict as when it was first recorded
        return recorded
    started = time.monotonic()
    row: dict[str, Any] = {
        "id": "occall_" + secrets.token_hex(8),
        "run_id": call.run_id,
        "step_id": call.step_id,
        "op_key": call.op_key,
        "session_id": f"replay-{call.run_id}",
        "agent": call.agent,
        "schema_hash": call.schema_hash,
        "prompt": call.prompt,
        "request": {
            "prompt": call.prompt,
            "schema": call.schema,
            "options": {"agent": call.agent, "retryCount": RETRY_COUNT, "mode": settings.oc_mode},
        },
        "raw_response": None,
        "error": None,
    }
    try:
        if settings.oc_mode == "replay":
            fixture = read_fixture(settings, call.prompt)
            answer = fixture or {"structured": call.producer(), "toolcalls": [], "responses": []}
            answer["structured"] = _validated(call, answer["structured"])
        else:
            answer, source = _live(settings, call, ledger, row)
            if settings.oc_mode == "record" and source == "live":
                write_fixture(settings, call.prompt, answer)
    except Exception as exc:
        row["error"] = row["error"] or {"type": type(exc).__name__, "message": str(exc)}
        _record(ledger, row, None, started)
        raise
    # A replayed answer called no model: its row may commit with the step (see the module doc).
    _record(ledger, row, answer, started, now=settings.oc_mode != "replay")
    faults.reached(faults.OC_RECORDED, call.step_id)
    _check_tools(call.agent, answer)
    return answer


def _record(
    ledger: Ledger, row: dict[str, Any], answer: dict[str, Any] | None, started: float, *, now: bool = True
) -> None:
    row.update(
        structured=answer["structured"] if answer else None,
        tool_calls=answer["toolcalls"] if answer else None,
        response=answer if answer else {"error": row["error"]},
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    try:
        ledger.record(row, now=now)
    except Exception:  # the original's rule: a ledger failure is logged, never fails the step
        log.exception("opencode_calls ledger write failed for %s", row["op_key"])


# ---- the two steps -------------------------------------------------------------------------------


def _default_ledger() -> Ledger:
    return DbLedger(context.connection)  # connections of the running workflow's process


def offline() -> bool:
    """Whether the running workflow's compiler answers without a server (`replay`): its steps may
    share the delivery's batch; a live call commits the batch first (`wf.transaction(batch=...)`)."""
    return context.settings().oc_mode == "replay"


def step_ledger(c: Conn) -> Ledger:
    """The ledger of a step that runs in the transaction `c` (see the module doc)."""
    return DbLedger(context.connection, step=c)


def plan(
    settings: Settings, ctx: dict[str, Any], attempt: int, ledger: Ledger | None = None
) -> dict[str, Any]:
    """PlanOutput `{goal, design, files, risks, tests}` (a `goal` in the answer replaces the intent's)."""
    goal, constraints = ctx["goal"], ctx["constraints"]
    call = Call(
        ctx["runId"], "CompileST", attempt, PLAN_AGENT,
        plan_prompt(goal, ctx["inputs"], constraints), PLAN_SCHEMA, PlanAnswer,
        lambda: produce_plan(goal, constraints),
    )  # fmt: skip
    answer = structured(settings, call, ledger or _default_ledger())
    base = {"goal": goal, "design": [], "files": [], "risks": [], "tests": []}
    return {**base, **answer["structured"]}


def decide(
    settings: Settings,
    ctx: dict[str, Any],
    approved: dict[str, Any],
    attempt: int,
    ledger: Ledger | None = None,
) -> dict[str, Any]:
    """The build decision `{prompt, toolcalls, responses, diffs, structured{patch, tests, test_command}}`."""
    goal, constraints = ctx["goal"], ctx["constraints"]
    prompt = decide_prompt(approved, goal)
    call = Call(
        ctx["runId"], "DecideST", attempt, BUILD_AGENT, prompt, BUILD_SCHEMA, BuildAnswer,
        lambda: produce_decision(goal, constraints, approved),
    )  # fmt: skip
    answer = structured(settings, call, ledger or _default_ledger())
    out: dict[str, Any] = {
        "prompt": prompt,
        "toolcalls": answer.get("toolcalls") or [],
        "responses": answer.get("responses") or [],
        "diffs": [],
        "structured": {"patch": [], "tests": [], **answer["structured"]},
    }
    if "usage" in answer:
        out["usage"] = answer["usage"]
    return out
