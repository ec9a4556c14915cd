"""The intent workflow, its sandbox tasks and its repair (contract-api §7, contract-internals §3).

run(intent id) on intentQ:  load -> CompileST -> [ask gate] -> ApplyPatchST -> plan gate -> DecideST
                            -> ExecuteST (one child task per test on sbxQ) -> succeeded
repair(run id, n) on controlQ: reuse the recorded product steps before `fromStep`, re-execute the
                            rest with new attempt numbers.
An ops fork of either (a new workflow id, the same arguments, the operations before stepN copied)
re-executes the steps after its copied prefix the same way: each re-executed product step takes the
attempt after the recorded ones, its sandbox tasks are new children, and its receipt its own key.

Every product write happens in a @transaction step, so it commits with that step's checkpoint: a
redelivery after a kill replays the recorded outputs and writes nothing twice. Gates wait with
`recv` (no worker held). The only retrying step is the sandbox task (`executeTask`, 3 attempts,
waits ~1 s then ~2 s, retryable infra codes only).
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kodo import clock
from kodo import workflow as wf
from kodo.db.jsonb import Jsonb
from kodo.db.pool import Conn
from kodo.db.queries import Q
from kodo.errors import NotFoundError
from kodo.intent import (
    APPROVE_PLAN,
    CONTROL_QUEUE,
    GATE_TIMEOUT_S,
    HUMAN_EVENT_TOPIC,
    INTENT_QUEUE,
    NONE,
    PHASES,
    REPAIR,
    REPAIR_WORKFLOW,
    RUN_WORKFLOW,
    SBX_QUEUE,
    STATUS_TOPIC,
    STEP_TOPIC,
    STEPS,
    TASK_WORKFLOW,
    WAITING_INPUT,
    artifacts,
    planner,
    repair_workflow_id,
    sandbox,
)
from kodo.intent.artifacts import Artifact
from kodo.intent.canonical import canonical_json, sha256_hex
from kodo.states import Transition
from kodo.workflow import context

# ---- run-row updates and status events -----------------------------------------------------------

_STATUS_EVENT = {"retries_exceeded": "failed"}  # the telemetry name of a failure (contract-api §11)


class SbxExecutionFailedError(Exception):
    """ExecuteST finished with a terminal sandbox error code."""


class DuplicateReceiptError(Exception):
    """The ExecuteST commit ran twice for the same decision (seen_count > 1)."""


class DeterminismViolationError(Exception):
    """A step attempt was recorded twice with different content."""


def _update(
    c: Conn,
    ctx: dict[str, Any],
    *,
    status: str | None = None,
    last_step: str | None = None,
    retry_inc: bool = False,
    **fields: str | None,
) -> None:
    """The "ops" update of the run row, with a `status` event when the status is written (one
    statement). `error` and `next_action` are written only when given (None clears them)."""
    event = _NO_EVENT
    if status is not None:
        event = _event(ctx["workflowId"], STATUS_TOPIC, {"status": _STATUS_EVENT.get(status, status)})
    c.execute(
        Q["run_update"],
        {
            "run_id": ctx["runId"],
            "status": status,
            "last_step": last_step,
            "set_error": "error" in fields,
            "error": fields.get("error"),
            "set_next_action": "next_action" in fields,
            "next_action": fields.get("next_action"),
            "retry_inc": retry_inc,
            "emit": status is not None,
            **event,
        },
    )


def _emit(c: Conn, workflow_id: str, status: str) -> None:
    _notify(c, workflow_id, STATUS_TOPIC, {"status": status})


def _event(workflow_id: str, topic: str, message: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a notification to the run's workflow (insert_notification's; the runbooks
    and the run stream read them)."""
    return {
        "message_uuid": str(uuid.uuid4()),
        "destination": workflow_id,
        "topic": topic,
        "message": canonical_json(message),
        "now": clock.now_ms(),
    }


_NO_EVENT: dict[str, Any] = dict.fromkeys(("message_uuid", "destination", "topic", "message", "now"))


def _notify(c: Conn, workflow_id: str, topic: str, message: dict[str, Any]) -> None:
    c.execute(Q["insert_notification"], _event(workflow_id, topic, message))


def iso_ms(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


def _next_attempt(c: Conn, ctx: dict[str, Any], step_id: str) -> int:
    """The attempt of a product step that runs now: 1 at first, after the recorded ones when a repair
    or a fork runs it again. Read in the step's own transaction, which records the step with it."""
    row = c.execute(Q["next_run_step_attempt"], {"run_id": ctx["runId"], "step_id": step_id}).fetchone()
    return int(row["n"]) if row else 1


def _record_step(
    c: Conn, ctx: dict[str, Any], step_id: str, output: dict[str, Any], attempt: int, started: datetime
) -> dict[str, Any]:
    """The run_steps row of a product step attempt (output carries `attempt`), the run's `lastStep`
    and the run stream's `step` event, in one statement."""
    full = {**output, "attempt": attempt}
    key = {"run_id": ctx["runId"], "step_id": step_id, "attempt": attempt}
    finished = _now()
    step = {"stepId": step_id, "attempt": attempt, "phase": PHASES[step_id]}
    times = {"startedAt": iso_ms(started), "finishedAt": iso_ms(finished)}
    row = c.execute(
        Q["record_run_step"],
        {
            **key,
            "phase": PHASES[step_id],
            "output": Jsonb(full),
            **context.trace_ids()._asdict(),  # the step span's ids when tracing is on
            "started_at": started,
            "finished_at": finished,
            **_event(ctx["workflowId"], STEP_TOPIC, {**step, **times}),
        },
    ).fetchone()
    if row is None or not row["inserted"]:
        prior = c.execute(Q["get_run_step"], key).fetchone()
        if prior is not None and canonical_json(prior["output"]) != canonical_json(full):
            raise DeterminismViolationError(f"Determinism violation in {ctx['runId']}:{step_id}:{attempt}")
    return output


# ---- the product steps ---------------------------------------------------------------------------


def _load(c: Conn, *, workflow_id: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    if run_id is not None:
        row = c.execute(Q["run_workflow_id"], {"run_id": run_id}).fetchone()
        workflow_id = row["workflow_id"] if row else None
    row = c.execute(Q["intent_load"], {"workflow_id": workflow_id}).fetchone() if workflow_id else None
    if row is None:
        raise NotFoundError(f"run not found for workflow {workflow_id or run_id}")
    payload = row["payload"] or {}
    return {
        "runId": row["run_id"],
        "workflowId": workflow_id,
        "intentId": row["intent_id"],
        "goal": row["goal"],
        "inputs": payload.get("inputs") or {},
        "constraints": payload.get("constraints") or {},
        "tenantId": row["tenant_id"],
        "queuePartitionKey": row["queue_partition_key"],
    }


@wf.transaction("IntentWorkflow.load")
def begin_run(c: Conn, workflow_id: str) -> dict[str, Any]:
    ctx = _load(c, workflow_id=workflow_id)
    _update(c, ctx, status="running")
    return ctx


@wf.transaction("CompileST", batch=planner.offline)
def compile_step(c: Conn, ctx: dict[str, Any]) -> dict[str, Any]:
    started = _now()
    attempt = _next_attempt(c, ctx, "CompileST")
    # The model call; its ledger row commits on its own first, or with this step in replay mode.
    plan = planner.plan(context.settings(), ctx, attempt, planner.step_ledger(c))
    artifacts.put(
        c,
        ctx["runId"],
        "CompileST",
        0,
        Artifact("plan_card", "plan.json", plan, sha256_hex(plan)),
        attempt=attempt,
    )
    return _record_step(c, ctx, "CompileST", plan, attempt, started)


@wf.transaction("ApplyPatchST")
def apply_patch_step(c: Conn, ctx: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    started = _now()
    attempt = _next_attempt(c, ctx, "ApplyPatchST")
    patched = {**plan, "patchedAt": iso_ms(started)}
    artifacts.ensure_sentinel(c, ctx["runId"], "ApplyPatchST", attempt, wrote=0)
    return _record_step(c, ctx, "ApplyPatchST", patched, attempt, started)


@wf.transaction("DecideST", batch=planner.offline)
def decide_step(c: Conn, ctx: dict[str, Any], patched: dict[str, Any]) -> dict[str, Any]:
    started = _now()
    attempt = _next_attempt(c, ctx, "DecideST")
    decision = planner.decide(context.settings(), ctx, patched, attempt, planner.step_ledger(c))
    patches = [
        (i, Artifact("patch", f"{patch['path']}.patch", patch, sha256_hex(patch)))
        for i, patch in enumerate(decision["structured"]["patch"])
    ]
    if patches:
        artifacts.put_many(c, ctx["runId"], "DecideST", patches, attempt=attempt)
    artifacts.ensure_sentinel(c, ctx["runId"], "DecideST", attempt, wrote=len(patches))
    return _record_step(c, ctx, "DecideST", decision, attempt, started)


@wf.transaction("ExecuteST")
def execute_step(
    c: Conn, ctx: dict[str, Any], decision: dict[str, Any], merged: dict[str, Any], rerun: str
) -> dict[str, Any]:
    """The ExecuteST commit: side-effect receipt plus the step row, written even when a task failed.
    A repair or a fork commits under its own receipt key (`rerun`), so each execution has one."""
    started = _now()
    attempt = int(merged["raw"]["attempt"])
    payload_hash = sha256_hex(decision)
    commit = f"{ctx['runId']}:ExecuteST:{payload_hash}" + (f":{rerun}" if rerun else "")
    row = c.execute(
        Q["upsert_receipt"],
        {
            "receipt_key": sha256_hex(commit),
            "run_id": ctx["runId"],
            "payload_hash": payload_hash,
            "attempt": attempt,
            "request_payload": Jsonb(decision),
            "response_payload": Jsonb(merged),
        },
    ).fetchone()
    if row is not None and int(row["seen_count"]) > 1 and merged["errCode"] == "NONE":
        raise DuplicateReceiptError(
            f"duplicate side effect receipt detected for run {ctx['runId']} step ExecuteST"
        )
    return _record_step(c, ctx, "ExecuteST", merged, attempt, started)


# ---- gates -----------------------------------------------------------------------------------------

_ASK = re.compile(r"\bask\b", re.IGNORECASE)


def ask_gate_open(ctx: dict[str, Any]) -> bool:
    """`constraints.askUser: true`, or the word "ask" in the goal ("task" does not count)."""
    return ctx["constraints"].get("askUser") is True or _ASK.search(ctx["goal"]) is not None


@wf.transaction("IntentWorkflow.askUser")
def open_ask_gate(c: Conn, ctx: dict[str, Any]) -> None:
    question = {"question": "What is the answer?"}
    artifacts.put(
        c,
        ctx["runId"],
        "HITL",
        0,
        Artifact("question_card", "question.json", question, sha256_hex(question)),
        attempt=1,
    )
    _update(c, ctx, status="waiting_input")


@wf.transaction("IntentWorkflow.resumeRunning")
def resume_running(c: Conn, ctx: dict[str, Any], reset_gate: bool) -> None:
    if reset_gate:
        _update(c, ctx, status="running", error=None, next_action=NONE)
    else:
        _update(c, ctx, status="running")


@wf.transaction("IntentWorkflow.planGate")
def check_plan_gate(c: Conn, ctx: dict[str, Any]) -> bool:
    """True when the plan is approved; otherwise the run waits at the gate (in the same locked tx)."""
    c.execute(Q["lock_run"], {"run_id": ctx["runId"]})
    row = c.execute(Q["plan_approved"], {"run_id": ctx["runId"]}).fetchone()
    if row is not None and row["approved"]:
        return True
    _update(c, ctx, status="waiting_input", error="plan_not_approved", next_action=APPROVE_PLAN)
    return False


def plan_gate(ctx: dict[str, Any]) -> None:
    while not check_plan_gate(ctx):
        wf.recv(HUMAN_EVENT_TOPIC, GATE_TIMEOUT_S)
        resume_running(ctx, True)


# ---- fan-out ----------------------------------------------------------------------------------------

AFTER_RECORDED = -1  # a task's attempt base: number after the attempts recorded for it


@dataclass(frozen=True)
class Rerun:
    """Which execution of a run this is: the first (""), a repair ("repair-<n>") or an ops fork of
    either ("fork-<its workflow id>"). It names the re-execution's sandbox children and its receipt."""

    receipt_tag: str
    child_suffix: str
    repair: bool

    @property
    def first(self) -> bool:
        return not self.receipt_tag

    @staticmethod
    def of(expected_workflow_id: str, repair_no: int) -> Rerun:
        """From the workflow running now: a fork runs under another id than its arguments name."""
        own = wf.current_workflow_id()
        if own != expected_workflow_id:
            return Rerun(f"fork-{own}", f"-f{own}", repair_no > 0)
        if repair_no:
            return Rerun(f"repair-{repair_no}", f"-r{repair_no}", True)
        return Rerun("", "", False)


@wf.step("IntentWorkflow.buildTasks", pure=True)  # a computation on the decision: it joins the batch
def build_tasks(ctx: dict[str, Any], decision: dict[str, Any]) -> list[dict[str, Any]]:
    return sandbox.build_tasks(decision, ctx["intentId"], ctx["runId"], context.settings())


def execute(ctx: dict[str, Any], decision: dict[str, Any], rerun: Rerun) -> dict[str, Any]:
    tasks = build_tasks(ctx, decision)
    # Fan-out: every task's child in one batch (one operation, one transaction, one checkpoint).
    base = 0 if rerun.first else AFTER_RECORDED
    child_ids = wf.start_children(
        task_workflow,
        [((task, ctx["runId"], base), task["taskKey"] + rerun.child_suffix) for task in tasks],
        queue=SBX_QUEUE,
        partition_key=ctx["queuePartitionKey"],
    )
    # Fan-in: one wait for all of them (the last child to end wakes this workflow once), instead of
    # a wait per child, each a park and a replay of the whole workflow.
    ended = {c["workflow_id"]: c for c in wf.wait_children()}
    # A child this workflow does not own (an existing id it named) is read on its own; the first
    # failed one in task order raises its own recorded error, as the run's (get_result).
    results = [
        ended[cid]["output"] if cid in ended and ended[cid]["status"] == "SUCCESS" else wf.get_result(cid)
        for cid in child_ids
    ]
    merged = execute_step(ctx, decision, sandbox.merge(results), rerun.receipt_tag)
    if merged["errCode"] != "NONE":
        raise SbxExecutionFailedError(f"SBX execution failed [{merged['errCode']}]")
    return merged


@wf.step("IntentWorkflow.executeTask", retry=wf.RetryPolicy(3, 1.0, 2.0, retry_if=sandbox.is_infra_error))
def execute_task(task: dict[str, Any], run_id: str, attempt_base: int) -> dict[str, Any]:
    """One sandbox attempt: run, persist its artifacts and sbx_runs row, raise on a retryable infra code."""
    settings = context.settings()
    attempt = attempt_base + context.step_attempt()
    if settings.chaos_sleep_execute_ms:
        time.sleep(settings.chaos_sleep_execute_ms / 1000)
    key = task["taskKey"]
    seq = 0

    def write(c: Conn, topic: str, message: dict[str, Any]) -> None:
        # Fenced by a deterministic id: a re-run attempt does not duplicate its chunks.
        c.execute(
            Q["insert_notification"],
            {
                "message_uuid": f"{key}:{attempt}:{topic}:{message.get('seq')}",
                "destination": key,
                "topic": topic,
                "message": canonical_json(message),
                "now": clock.now_ms(),
            },
        )

    def stream(topic: str, message: dict[str, Any]) -> None:
        try:
            with context.connection() as c:
                write(c, topic, message)
        except Exception:  # best effort, as the original: a lost chunk never fails the task
            pass

    def on_chunk(kind: str, text: str) -> None:
        nonlocal seq
        stream(kind, {"kind": kind, "chunk": text, "seq": seq})
        seq += 1

    params = {"run_id": run_id, "task_key": key, "attempt": attempt}
    with context.connection() as c:
        done = c.execute(Q["get_sbx_run"], params).fetchone()
    if done is not None:
        # This attempt ran and committed its record before a crash took the step's checkpoint: its
        # record stands (a sandbox is not deterministic, and must not run twice for one attempt).
        response = done["response"]
        if done["err_code"] in sandbox.RETRYABLE_CODES:
            raise sandbox.SbxInfraError(f"SBX Infra Error [{done['err_code']}]: {response.get('stderr')}")
        return {**response, "attempt": attempt}
    provider = sandbox.provider_for(settings)
    try:
        result = provider.run(
            task, {"runId": run_id, "stepId": "ExecuteST"}, on_chunk, context.step_attempt()
        )
        with context.connection(transaction=True) as c:
            # The stream's end commits with the attempt's record (no commit of its own).
            write(c, "stream_closed", {"seq": seq})
            response = _record_attempt(c, params, task, result, provider.name)
    except Exception:
        # The attempt failed and nothing of it committed: close its stream on its own. A worker
        # shutting down (SystemExit) leaves it open: the delivery runs again as the same attempt and
        # closes it then, once (a close here would be a second one, at another seq).
        stream("stream_closed", {"seq": seq})
        raise
    if result["errCode"] in sandbox.RETRYABLE_CODES:
        raise sandbox.SbxInfraError(f"SBX Infra Error [{result['errCode']}]: {result['stderr']}")
    return {**response, "attempt": attempt}


def _record_attempt(
    c: Conn, params: dict[str, Any], task: dict[str, Any], result: dict[str, Any], provider: str
) -> dict[str, Any]:
    """A sandbox attempt's artifacts and its app.sbx_runs row; the response it recorded. A repeat of
    the same attempt must have recorded the same (DeterminismViolationError otherwise)."""
    run_id, key, attempt = params["run_id"], params["task_key"], params["attempt"]
    index_ref = artifacts.sandbox_set(c, run_id, key, attempt, result, provider)
    response = {
        **result,
        "artifactIndexRef": index_ref,
        "raw": {**(result.get("raw") or {}), "attempt": attempt},
    }
    inserted = c.execute(
        Q["insert_sbx_run"],
        {
            **params,
            "provider": provider,
            "request": Jsonb(task),
            "response": Jsonb(response),
            "err_code": result["errCode"],
            "metrics": Jsonb(result["metrics"]),
        },
    ).fetchone()
    if inserted is None:
        prior = c.execute(Q["get_sbx_run"], params).fetchone()
        mine = (provider, task, response, result["errCode"])
        if prior is not None and canonical_json(list(prior.values())) != canonical_json(list(mine)):
            raise DeterminismViolationError(f"SbxRunConflictError: {run_id}/{key}/{attempt}")
    return response


@wf.step("IntentWorkflow.attemptBase")
def attempt_base(task: dict[str, Any], run_id: str) -> int:
    """The sandbox attempts already recorded for this task (a repair or a fork numbers after them)."""
    with context.connection() as c:
        row = c.execute(Q["max_sbx_attempt"], {"run_id": run_id, "task_key": task["taskKey"]}).fetchone()
    return int(row["n"]) if row else 0


@wf.workflow(TASK_WORKFLOW, queue=SBX_QUEUE)
def task_workflow(task: dict[str, Any], run_id: str, base: int) -> dict[str, Any]:
    """One sandbox task; `base` is its first attempt minus one, or AFTER_RECORDED for a re-execution."""
    return execute_task(task, run_id, attempt_base(task, run_id) if base == AFTER_RECORDED else base)


# ---- the pipeline, the run and the repair --------------------------------------------------------


def _pipeline(ctx: dict[str, Any], checkpoints: dict[str, dict[str, Any]], redo: str, rerun: Rerun) -> None:
    """Run the product steps from `redo` on; the ones before it return their recorded output.

    `checkpoints` (step -> latest {attempt, output} in app.run_steps) is empty for a first run (and
    a fork, whose copied operations replay instead); a step that runs takes the attempt after its
    recorded ones.
    """

    def reused(step_id: str) -> dict[str, Any]:
        return {k: v for k, v in checkpoints[step_id]["output"].items() if k != "attempt"}

    order = STEPS.index(redo)
    plan = reused("CompileST") if order > 0 else compile_step(ctx)
    if not rerun.repair and ask_gate_open(ctx):
        open_ask_gate(ctx)
        wf.recv(HUMAN_EVENT_TOPIC, GATE_TIMEOUT_S)
        resume_running(ctx, False)
    patched = reused("ApplyPatchST") if order > 1 else apply_patch_step(ctx, plan)
    if order <= 2:
        plan_gate(ctx)
    decision = reused("DecideST") if order > 2 else decide_step(ctx, patched)
    execute(ctx, decision, rerun)


# ---- the run row follows the engine's transitions -------------------------------------------------


def _follow(
    c: Conn, ctx: dict[str, Any], workflow_id: str, transition: Transition, detail: str | None
) -> None:
    """The one place the engine's transitions become run statuses (and status events)."""
    if transition is Transition.SUCCESS:
        # A repaired or forked run that succeeds keeps no earlier failure's error or REPAIR action.
        _update(c, ctx, status="succeeded", error=None, next_action=NONE)
    elif transition is Transition.ERROR:
        _update(c, ctx, status="retries_exceeded", error=detail, next_action=REPAIR)
    elif transition is Transition.CANCELLED:
        _update(
            c, ctx, status="canceled", error=f"Workflow {workflow_id} has been cancelled", next_action=NONE
        )
    elif transition is Transition.RESUMED:
        row = c.execute(Q["run_resume"], {"run_id": ctx["runId"]}).fetchone()
        if row is None:
            return  # not canceled (resumed from ENQUEUED): nothing to restore
        _emit(c, ctx["workflowId"], row["status"])
        if row["status"] == WAITING_INPUT and row["last_step"] == "ApplyPatchST":
            # Back at the plan gate: it waits for the approval again.
            _update(c, ctx, error="plan_not_approved", next_action=APPROVE_PLAN)


def _run_transition(c: Conn, transition: Transition, detail: str | None, workflow_id: str) -> None:
    """on_transition of the run, written in the engine's transaction, whether or not a worker runs it."""
    with contextlib.suppress(NotFoundError):  # no run row: nothing of the product to mark
        _follow(c, _load(c, workflow_id=workflow_id), workflow_id, transition, detail)


def _repair_transition(
    c: Conn, transition: Transition, detail: str | None, run_id: str, repair_no: int
) -> None:
    with contextlib.suppress(NotFoundError):
        _follow(c, _load(c, run_id=run_id), repair_workflow_id(run_id, repair_no), transition, detail)


@wf.workflow(RUN_WORKFLOW, queue=INTENT_QUEUE, max_recovery_attempts=3, on_transition=_run_transition)
def run_intent(workflow_id: str) -> None:
    ctx = begin_run(workflow_id)
    _pipeline(ctx, {}, "CompileST", Rerun.of(workflow_id, 0))


def from_step(recorded: set[str] | dict[str, Any]) -> str:
    """Where a repair starts: the first product step with no recorded row, else ExecuteST."""
    return next((s for s in STEPS if s not in recorded), "ExecuteST")


@wf.transaction("IntentWorkflow.beginRepair")
def begin_repair(c: Conn, run_id: str) -> dict[str, Any]:
    ctx = _load(c, run_id=run_id)
    _update(c, ctx, status="repairing", next_action=NONE, retry_inc=True)
    rows = c.execute(Q["latest_run_steps"], {"run_id": run_id}).fetchall()
    ctx["checkpoints"] = {r["step_id"]: {"attempt": r["attempt"], "output": r["output"]} for r in rows}
    return ctx


@wf.workflow(REPAIR_WORKFLOW, queue=CONTROL_QUEUE, max_recovery_attempts=3, on_transition=_repair_transition)
def repair(run_id: str, repair_no: int) -> None:
    """`/retry`: re-execute from the first missing step (or ExecuteST) with new attempt numbers."""
    ctx = begin_repair(run_id)
    checkpoints: dict[str, dict[str, Any]] = ctx.pop("checkpoints")
    repair_no = max(repair_no, 1)
    _pipeline(
        ctx, checkpoints, from_step(checkpoints), Rerun.of(repair_workflow_id(run_id, repair_no), repair_no)
    )
