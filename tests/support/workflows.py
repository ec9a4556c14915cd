"""Workflows used by the tests. Real workers import this module via KODO_WORKFLOW_MODULES.

Effects go to `public.test_effects`, which counts every execution (it is NOT idempotent), so a test
can tell "ran once" from "ran twice".
"""

from __future__ import annotations

import os
import time
from typing import Any

from kodo import clock
from kodo import workflow as wf
from kodo.db.queries import Q
from kodo.workflow import context, executor

TEST_EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS public.test_effects (
    workflow_id text NOT NULL, effect text NOT NULL, n integer NOT NULL DEFAULT 1,
    PRIMARY KEY (workflow_id, effect))
"""
_COUNT = """
INSERT INTO public.test_effects (workflow_id, effect) VALUES (%(w)s, %(e)s)
ON CONFLICT (workflow_id, effect) DO UPDATE SET n = test_effects.n + 1
"""


def count_effect(effect: str) -> None:
    with context.connection() as c:
        c.execute(_COUNT, {"w": wf.current_workflow_id(), "e": effect})


@wf.transaction(name="t.tx_effect")
def tx_effect(conn: Any, effect: str) -> str:
    conn.execute(_COUNT, {"w": wf.current_workflow_id(), "e": effect})
    return effect


@wf.transaction(name="t.tx_last")
def tx_last(conn: Any, effect: str) -> str:
    """`tx_effect` under a name of its own (a fault point can be armed for it alone)."""
    conn.execute(_COUNT, {"w": wf.current_workflow_id(), "e": effect})
    return effect


@wf.transaction(name="t.tx_raising")
def tx_raising(conn: Any, effect: str) -> str:
    """Writes its effect, then fails: the write rolls back with its transaction."""
    conn.execute(_COUNT, {"w": wf.current_workflow_id(), "e": effect})
    raise ValueError(f"{effect} failed")


@wf.step(name="t.pure_label", pure=True)
def pure_label(label: str) -> str:
    """A step with no effect: it runs, and its record commits, in the delivery's batch."""
    return f"pure {label}"


@wf.step(name="t.plain_effect")
def plain_effect(effect: str, hold_s: float = 0.0) -> str:
    count_effect(effect)
    if hold_s:
        time.sleep(hold_s)
    return effect


@wf.step(name="t.noop")
def noop(i: int) -> int:
    return i


@wf.workflow(name="t.four_steps", queue="intentQ")
def four_steps() -> int:
    total = 0
    for i in range(4):
        total += noop(i)
    return total


@wf.workflow(name="t.effects", queue="intentQ")
def effects(n: int, hold_s: float = 0.0) -> list[str]:
    return [tx_effect(f"e{i}") if i % 2 == 0 else plain_effect(f"e{i}", hold_s) for i in range(n)]


@wf.workflow(name="t.batched", queue="intentQ")
def batched() -> list[str]:
    """Two transactions, a pure step and a third transaction in a row (one batch), then a plain step
    (which commits the batch first)."""
    return [tx_effect("b1"), tx_effect("b2"), pure_label("p"), tx_last("b3"), plain_effect("b4")]


@wf.workflow(name="t.batch_catches", queue="intentQ")
def batch_catches() -> list[str]:
    """A transaction fails after another in the same batch, and the body catches its error."""
    out = [tx_effect("u1")]
    try:
        tx_raising("u2")
    except ValueError as exc:
        out.append(f"caught {exc}")
    out.append(tx_effect("u3"))
    return out


@wf.workflow(name="t.sleeper", queue="intentQ")
def sleeper(sleep_s: float) -> str:
    tx_effect("before")
    wf.sleep(sleep_s)
    tx_effect("after")
    return "woke"


@wf.workflow(name="t.receiver", queue="intentQ")
def receiver(topic: str, timeout_s: float) -> Any:
    first = wf.recv(topic, timeout_s)
    tx_effect("received")
    return first


@wf.workflow(name="t.child", queue="sbxQ")
def child(i: int, fail: bool = False) -> int:
    tx_effect(f"child{i}")
    if fail:
        raise ValueError(f"child {i} failed")
    return i * 10


@wf.workflow(name="t.fan_out", queue="intentQ")
def fan_out(n: int) -> list[int]:
    ids = [wf.start_child(child, i, workflow_id=f"{wf.current_workflow_id()}-c{i}") for i in range(n)]
    done = wf.wait_children()
    assert sorted(d["workflow_id"] for d in done) == sorted(ids)
    return [int(wf.get_result(cid)) for cid in ids]


@wf.workflow(name="t.batch_fan_out", queue="intentQ")
def batch_fan_out(n: int) -> list[int]:
    me = wf.current_workflow_id()
    ids = wf.start_children(child, [((i,), f"{me}-b{i}") for i in range(n)], queue="sbxQ")
    count_effect("batch-started")  # outside any step: counts each run of the parent past the batch
    done = {d["workflow_id"]: d for d in wf.wait_children()}
    return [int(done[cid]["output"]) for cid in ids]


@wf.workflow(name="t.fails", queue="intentQ")
def fails(message: str) -> None:
    tx_effect("before-fail")
    raise RuntimeError(message)


@wf.step(name="t.flaky", retry=wf.RetryPolicy(max_attempts=3, interval_s=0.05, backoff=2.0))
def flaky(succeed_on: int) -> int:
    count_effect("flaky-attempt")
    attempt = context.step_attempt()
    if attempt < succeed_on:
        raise ConnectionError(f"attempt {attempt} failed")
    return attempt


@wf.workflow(name="t.retrying", queue="intentQ")
def retrying(succeed_on: int) -> int:
    return int(flaky(succeed_on))


@wf.workflow(name="t.branchy", queue="intentQ")
def branchy() -> str:
    # Non-deterministic on purpose: the step name depends on the environment of the runner.
    if os.environ.get("KODO_TEST_BRANCH") == "b":
        return str(plain_effect("b"))
    return str(tx_effect("a"))


@wf.workflow(name="t.sender", queue="intentQ")
def sender(destination: str, topic: str, message: Any) -> str:
    wf.send(destination, message, topic)
    return "sent"


# ---- added for the engine integration tests (tests/integration/test_engine_*.py) -------------------


class StepBoomError(Exception):
    """A step failure with an importable class: replay must rebuild this very class."""


@wf.step(name="t.raising")
def raising(message: str) -> str:
    count_effect("raising")
    raise StepBoomError(message)


@wf.workflow(name="t.catcher", queue="intentQ")
def catcher(message: str) -> str:
    """Catches a step's recorded error by its class; on replay the same class must be raised."""
    try:
        raising(message)
    except StepBoomError as exc:
        after = plain_effect("after-catch")
        return f"{type(exc).__module__}.{type(exc).__qualname__}:{exc}:{after}"
    return "not raised"


@wf.workflow(name="t.receive_n", queue="intentQ")
def receive_n(topic: str, n: int, timeout_s: float) -> list[Any]:
    return [wf.recv(topic, timeout_s) for _ in range(n)]


# A simulated takeover: while the current run is inside a step, another executor claims the workflow
# (lease_epoch + 1), as a reconciler-driven recovery would. The current run is now a zombie.
TAKEOVER_ENV = "KODO_TEST_TAKEOVER"
TAKEOVER_EXECUTOR = "otherhost:1:takeover"
_TAKEOVER = """
UPDATE dbos.workflow_status SET lease_epoch = lease_epoch + 1, executor_id = %(e)s,
    lease_until_epoch_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 60000
WHERE workflow_uuid = %(w)s
"""


def simulate_takeover() -> None:
    """Only when KODO_TEST_TAKEOVER names this workflow (so the recovering run does not repeat it)."""
    wid = wf.current_workflow_id()
    if os.environ.get(TAKEOVER_ENV) != wid:
        return
    with context.connection() as c:  # its own connection: the takeover commits while the step is running
        c.execute(_TAKEOVER, {"w": wid, "e": TAKEOVER_EXECUTOR})


@wf.transaction(name="t.tx_then_takeover")
def tx_then_takeover(conn: Any, effect: str) -> str:
    conn.execute(_COUNT, {"w": wf.current_workflow_id(), "e": effect})
    simulate_takeover()
    return effect


@wf.step(name="t.step_then_takeover")
def step_then_takeover(effect: str) -> str:
    count_effect(effect)
    simulate_takeover()
    return effect


@wf.workflow(name="t.zombie", queue="intentQ")
def zombie(kind: str) -> list[str]:
    # A plain step first: its record commits at once, so the next operation's transaction opens a
    # batch of its own, and a takeover can land before its checkpoint. (Inside a batch no takeover
    # can: the batch's first checkpoint holds our row until it commits.)
    first = plain_effect("z-first")
    second = tx_then_takeover("z-tx") if kind == "tx" else step_then_takeover("z-step")
    return [first, second, tx_effect("z-after")]


@wf.step(name="t.cancel_self")
def cancel_self() -> None:
    """Cancel the running workflow from inside a step (a cancel that lands between two operations)."""
    with context.connection() as c:
        c.execute(Q["cancel_workflow"], {"workflow_uuid": wf.current_workflow_id(), "now": clock.now_ms()})


@wf.workflow(name="t.cancel_then_wait", queue="intentQ")
def cancel_then_wait(op: str) -> str:
    cancel_self()
    if op == "sleep":
        wf.sleep(30)
    else:
        wf.recv("never", 30)
    tx_effect("after-wait")
    return op


@wf.workflow(name="t.parent_of_failing", queue="intentQ")
def parent_of_failing(catch: bool) -> str:
    cid = wf.start_child(child, 7, fail=True, workflow_id=f"{wf.current_workflow_id()}-c")
    try:
        return f"unexpected {wf.get_result(cid)}"
    except ValueError as exc:
        if not catch:
            raise
        return f"caught {type(exc).__name__}: {exc}"


@wf.workflow(name="t.sleepy_child", queue="sbxQ")
def sleepy_child(sleep_s: float) -> str:
    wf.sleep(sleep_s)
    tx_effect("sleepy-child-done")
    return "slept"


@wf.workflow(name="t.awaits_child", queue="intentQ")
def awaits_child(sleep_s: float, mode: str) -> Any:
    cid = wf.start_child(sleepy_child, sleep_s, workflow_id=f"{wf.current_workflow_id()}-c")
    if mode == "all":
        return [d["status"] for d in wf.wait_children()]
    return wf.get_result(cid)


@wf.workflow(name="t.crash_twin", queue="controlQ", max_recovery_attempts=10)
def crash_twin(sleep_ms: int) -> str:
    """CrashDemoWorkflow's shape (step s1, durable sleep, step s2) with counted effects.

    `app.marks` has a primary key, so the crash demo's `{s1:1, s2:1}` would also hold if a step were
    re-run. Here each step counts every execution in `public.test_effects` in the step's own
    transaction, so a re-run of a completed step shows up as `n = 2`.
    """
    tx_effect("s1")
    wf.sleep(sleep_ms / 1000)
    tx_effect("s2")
    return "ok"


@wf.step(name="t.slow_flaky", retry=wf.RetryPolicy(max_attempts=3, interval_s=1.0, backoff=2.0))
def slow_flaky(succeed_on: int) -> int:
    """Counts each attempt by number (`attempt-<n>`), so a test can tell every attempt ran once."""
    attempt = context.step_attempt()
    count_effect(f"attempt-{attempt}")
    if attempt < succeed_on:
        raise ConnectionError(f"attempt {attempt} failed")
    return attempt


@wf.workflow(name="t.slow_retrying", queue="intentQ")
def slow_retrying(succeed_on: int) -> int:
    return int(slow_flaky(succeed_on))


@wf.workflow(name="t.fan_out_slow", queue="intentQ")
def fan_out_slow(n: int, sleep_s: float) -> list[str]:
    """Fans out `n` sleepy children, records one step, then reads each child's result: a fork at that
    step (functionId n, counted from 0) shares the children while they still run."""
    me = wf.current_workflow_id()
    ids = [wf.start_child(sleepy_child, sleep_s, workflow_id=f"{me}-c{i}") for i in range(n)]
    tx_effect("fanned-out")
    return [f"{cid}:{wf.get_result(cid)}" for cid in ids]


# ---- flow control (tests/integration/test_admission.py) -----------------------------------------


@wf.step(name="t.timed_hold")
def timed_hold(hold_s: float) -> dict[str, Any]:
    """Hold a worker slot for `hold_s`; say when, and on which worker (the per-worker caps' node)."""
    start = clock.now_ms()
    time.sleep(hold_s)
    return {"start": start, "end": clock.now_ms(), "node": executor.node_id()}


@wf.workflow(name="t.timed", queue="sbxQ")
def timed(hold_s: float) -> dict[str, Any]:
    return timed_hold(hold_s)


@wf.workflow(name="t.timed_fan_out", queue="intentQ")
def timed_fan_out(n: int, hold_s: float, partition: str | None) -> list[str]:
    me = wf.current_workflow_id()
    ids = wf.start_children(
        timed, [((hold_s,), f"{me}-t{i}") for i in range(n)], queue="sbxQ", partition_key=partition
    )
    wf.wait_children()
    return ids
