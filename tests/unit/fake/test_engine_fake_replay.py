"""The engine against the in-memory store: replay, fencing and durable step retries (no services)."""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from kodo import workflow as wf
from kodo.config import Settings
from kodo.errors import NonDeterminismError, StepRetriesExceededError
from kodo.records import Checkpoint, Fence
from kodo.states import OutcomeKind, Transition, WorkflowStatus
from kodo.workflow import context, executor, serde
from kodo.workflow.engine import Engine
from kodo.workflow.operations import Op
from tests.support.memstore import Fake, FakeClock, MemorySession, make_engine
from tests.unit.fake.conftest import T0

LEASE_MS = 5000  # Settings defaults (make_engine builds Settings.from_env({}))


class Crash(BaseException):
    """The worker process dies in the middle of a step (nothing after it runs in this delivery)."""


RAN: Counter[tuple[str, str]] = Counter()  # (workflow id, label) -> executions of the step body
ARMED: set[tuple[str, str]] = set()  # (workflow id, label): that step crashes the worker once
BRANCH: dict[str, str] = {}  # workflow id -> which step `fake.replay.branchy` calls first
ATTEMPTS_SEEN: dict[str, list[int]] = {}
SUCCEED_ON: dict[str, int] = {}
HOOK_CALLS: list[tuple[str, Transition, str | None, bool]] = []


@wf.step(name="fake.replay.effect")
def effect(label: str) -> str:
    key = (wf.current_workflow_id(), label)
    RAN[key] += 1
    if key in ARMED:
        ARMED.discard(key)
        raise Crash(label)
    return label.upper()


@wf.step(name="fake.replay.left")
def left() -> str:
    RAN[(wf.current_workflow_id(), "left")] += 1
    return "left"


@wf.step(name="fake.replay.right")
def right() -> str:
    RAN[(wf.current_workflow_id(), "right")] += 1
    return "right"


@wf.transaction(name="fake.replay.put")
def put(conn: MemorySession, key: str, value: int) -> int:
    conn.product[key] = value
    return value


@wf.step(name="fake.replay.flaky", retry=wf.RetryPolicy(max_attempts=3, interval_s=1, backoff=2))
def flaky() -> str:
    wid = wf.current_workflow_id()
    attempt = context.step_attempt()
    ATTEMPTS_SEEN.setdefault(wid, []).append(attempt)
    if attempt == SUCCEED_ON.get(wid):
        return f"ok on {attempt}"
    raise ValueError(f"boom {attempt}")


@wf.step(name="fake.replay.fatal", retry=wf.RetryPolicy(max_attempts=3, retry_if=lambda exc: False))
def fatal() -> str:
    RAN[(wf.current_workflow_id(), "fatal")] += 1
    raise KeyError("not retryable")


def on_transition(conn: Any, transition: Transition, detail: str | None, *args: Any, **kwargs: Any) -> None:
    assert isinstance(conn, MemorySession)
    HOOK_CALLS.append((str(args[0]), transition, detail, conn.in_transaction))


@wf.workflow(name="fake.replay.three")
def three() -> list[str]:
    return [effect("a"), effect("b"), effect("c")]


@wf.workflow(name="fake.replay.hooked", on_transition=on_transition)
def hooked(tag: str) -> str:
    effect("a")
    return tag


@wf.workflow(name="fake.replay.branchy")
def branchy() -> str:
    first = right() if BRANCH.get(wf.current_workflow_id()) == "right" else left()
    effect("after")
    return first


@wf.workflow(name="fake.replay.nap")
def nap(seconds: float) -> str:
    effect("a")
    wf.sleep(seconds)
    effect("b")
    return "rested"


@wf.workflow(name="fake.replay.tx")
def tx_flow(key: str) -> int:
    return put(key, 7)


@wf.workflow(name="fake.replay.retrying")
def retrying() -> str:
    effect("before")
    return flaky()


@wf.workflow(name="fake.replay.fatal_flow")
def fatal_flow() -> str:
    return fatal()


@wf.workflow(name="fake.replay.fragile", max_recovery_attempts=1)
def fragile() -> str:
    return effect("x")


# ---- fixtures ----------------------------------------------------------------------------------


@dataclass
class AfterErrors:
    """An operation hook collecting the error each operation ended with."""

    errors: list[str]

    def before(self, op: Op) -> None:
        pass

    def after(self, op: Op, error: BaseException | None) -> None:
        self.errors.append(type(error).__name__ if error is not None else "")


def ran(wid: str, label: str) -> int:
    return RAN[(wid, label)]


def error_of(row: dict[str, Any]) -> BaseException:
    assert row["error"] is not None
    return serde.decode_error(row["error"])


# ---- replay ------------------------------------------------------------------------------------


def test_every_step_is_checkpointed_once_and_a_redelivery_replays_them(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    assert client.start(three, workflow_id="rp-1").created
    assert dispatcher.published == [("rp-1", "intentQ")]

    assert engine.execute("rp-1").kind is OutcomeKind.SUCCESS
    row = store.row("rp-1")
    assert (row["status"], serde.loads(row["output"]), row["lease_epoch"]) == ("SUCCESS", ["A", "B", "C"], 1)
    assert (row["executor_id"], row["lease_until_epoch_ms"], row["recovery_attempts"]) == (None, None, 0)
    steps = store.steps("rp-1")
    assert [(s["function_id"], s["function_name"], s["output"]) for s in steps] == [
        (1, "fake.replay.effect", '"A"'),
        (2, "fake.replay.effect", '"B"'),
        (3, "fake.replay.effect", '"C"'),
    ]
    assert [ran("rp-1", x) for x in "abc"] == [1, 1, 1]

    # Force the row back to runnable: the redelivery replays every recorded step, running none.
    store.update("rp-1", status="ENQUEUED", output=None)
    assert engine.execute("rp-1").kind is OutcomeKind.SUCCESS
    assert [ran("rp-1", x) for x in "abc"] == [1, 1, 1]
    assert store.steps("rp-1") == steps
    assert serde.loads(store.row("rp-1")["output"]) == ["A", "B", "C"]
    assert store.row("rp-1")["lease_epoch"] == 2


def test_a_run_killed_mid_step_is_taken_over_after_its_lease_and_replays(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, _ = fake
    client.start(three, workflow_id="rp-2")
    ARMED.add(("rp-2", "c"))
    with pytest.raises(Crash):
        engine.execute("rp-2")
    row = store.row("rp-2")
    assert (row["status"], row["executor_id"], row["lease_epoch"]) == ("PENDING", engine.executor_id, 1)
    assert row["lease_until_epoch_ms"] == T0 + LEASE_MS
    assert [s["function_id"] for s in store.steps("rp-2")] == [1, 2]

    # A redelivery while the (live, local) holder's lease runs is a counted no-op.
    assert engine.execute("rp-2").kind is OutcomeKind.NOOP
    assert store.row("rp-2")["noop_deliveries"] == 1

    clk.advance(LEASE_MS + 1)
    assert engine.execute("rp-2").kind is OutcomeKind.SUCCESS
    row = store.row("rp-2")
    assert (row["status"], row["lease_epoch"], row["recovery_attempts"]) == ("SUCCESS", 2, 1)
    assert [ran("rp-2", x) for x in "abc"] == [1, 1, 2]


def test_a_different_step_at_a_recorded_function_id_is_a_non_determinism_error(
    fake: Fake, clk: FakeClock
) -> None:
    engine, client, store, _ = fake
    client.start(branchy, workflow_id="rp-nd")
    ARMED.add(("rp-nd", "after"))
    with pytest.raises(Crash):
        engine.execute("rp-nd")
    assert [s["function_name"] for s in store.steps("rp-nd")] == ["fake.replay.left"]

    BRANCH["rp-nd"] = "right"  # the code changed under a recorded run
    clk.advance(LEASE_MS + 1)
    assert engine.execute("rp-nd").kind is OutcomeKind.ERROR
    row = store.row("rp-nd")
    assert row["status"] == "ERROR"
    err = error_of(row)
    assert isinstance(err, NonDeterminismError)
    assert str(err) == (
        "workflow rp-nd function_id 1: recorded 'fake.replay.left', replay called 'fake.replay.right'"
    )
    assert (ran("rp-nd", "left"), ran("rp-nd", "right"), ran("rp-nd", "after")) == (1, 0, 1)


def test_recovery_attempts_are_counted_at_the_claim_and_enforced(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, _ = fake
    client.start(fragile, workflow_id="rp-max")
    for _ in range(2):
        ARMED.add(("rp-max", "x"))
        with pytest.raises(Crash):
            engine.execute("rp-max")
        clk.advance(LEASE_MS + 1)
    assert store.row("rp-max")["recovery_attempts"] == 1
    # The third claim would be the second recovery of a workflow allowed one.
    assert engine.execute("rp-max").kind is OutcomeKind.EXCEEDED
    row = store.row("rp-max")
    assert (row["status"], row["executor_id"], row["recovery_attempts"]) == (
        "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
        None,
        2,
    )
    assert ran("rp-max", "x") == 2
    # Resume makes it runnable again with a fresh budget.
    fake.client.resume("rp-max")
    assert (store.row("rp-max")["status"], store.row("rp-max")["recovery_attempts"]) == ("ENQUEUED", 0)
    assert engine.execute("rp-max").kind is OutcomeKind.SUCCESS
    assert ran("rp-max", "x") == 3


# ---- fencing -----------------------------------------------------------------------------------


def test_a_claim_bumps_the_lease_epoch_and_fences_the_previous_holder(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(three, workflow_id="fe-1")
    with store.session() as s:
        first = s.claim("fe-1", "me:1:a", engine.settings.app_version, T0, T0 - 1)  # expired at once
        assert first is not None and first.epoch == 1
        second = s.claim("fe-1", "me:2:b", engine.settings.app_version, T0, T0 + LEASE_MS)
        assert second is not None and second.epoch == 2 and second.recovery_attempts == 1
        # The first holder's writes are all refused now.
        stale = Fence("fe-1", 1, "me:1:a")
        assert s.record(stale, Checkpoint(1, "x", "1", None, T0), T0, T0) == (None, False)
        assert s.lock_own(stale) is None
        assert not s.release(stale, T0)
        assert not s.complete(stale, WorkflowStatus.SUCCESS, "1", None, T0)
        assert s.list_steps("fe-1") == []


def test_a_takeover_before_a_checkpoint_makes_the_old_runner_write_nothing(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(three, workflow_id="fe-2")
    errors: list[str] = []
    engine.hooks.add(AfterErrors(errors))
    store.before("record", lambda: store.take_over("fe-2"))
    assert engine.execute("fe-2").kind is OutcomeKind.PREEMPTED
    assert errors == ["Preempted"]  # the refused checkpoint unwound the run at once
    row = store.row("fe-2")
    assert (row["status"], row["lease_epoch"], row["executor_id"], row["output"]) == (
        "PENDING",
        2,
        "elsewhere:1:takeover",
        None,
    )
    assert store.steps("fe-2") == []
    assert (ran("fe-2", "a"), ran("fe-2", "b")) == (1, 0)  # it stopped at the refused checkpoint


def test_a_takeover_rolls_back_the_product_writes_of_a_transaction_step(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(tx_flow, "k1", workflow_id="fe-tx")
    store.before("record", lambda: store.take_over("fe-tx"))
    assert engine.execute("fe-tx").kind is OutcomeKind.PREEMPTED
    assert "k1" not in store.product  # rolled back with the refused checkpoint
    assert store.steps("fe-tx") == []
    assert store.row("fe-tx")["executor_id"] == "elsewhere:1:takeover"

    # Without the takeover, the product write commits with its checkpoint.
    client.start(tx_flow, "k2", workflow_id="fe-tx2")
    assert engine.execute("fe-tx2").kind is OutcomeKind.SUCCESS
    assert store.product["k2"] == 7
    assert [s["function_name"] for s in store.steps("fe-tx2")] == ["fake.replay.put"]


def test_a_takeover_before_a_park_is_refused_and_nothing_is_parked(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, _ = fake
    client.start(nap, 30, workflow_id="fe-3")
    assert engine.execute("fe-3").kind is OutcomeKind.PARKED
    assert store.row("fe-3")["wake_at_epoch_ms"] == T0 + 30_000
    # A stray wake-up before the timer is due: the replayed sleep parks again, after a takeover.
    store.update("fe-3", wait_kind=None, wait_key=None, wake_at_epoch_ms=None)
    clk.advance(1000)
    store.before("park", lambda: store.take_over("fe-3"))
    assert engine.execute("fe-3").kind is OutcomeKind.PREEMPTED
    row = store.row("fe-3")
    assert (row["wait_kind"], row["wake_at_epoch_ms"], row["executor_id"], row["lease_epoch"]) == (
        None,
        None,
        "elsewhere:1:takeover",
        3,
    )
    assert (ran("fe-3", "a"), ran("fe-3", "b")) == (1, 0)


def test_a_takeover_before_the_terminal_write_leaves_the_row_to_the_new_holder(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(hooked, "fe-4", workflow_id="fe-4")
    store.before("complete", lambda: store.take_over("fe-4"))
    assert engine.execute("fe-4").kind is OutcomeKind.PREEMPTED
    row = store.row("fe-4")
    assert (row["status"], row["output"], row["executor_id"], row["lease_epoch"]) == (
        "PENDING",
        None,
        "elsewhere:1:takeover",
        2,
    )
    assert [c for c in HOOK_CALLS if c[0] == "fe-4"] == []  # the product hook did not run


def test_a_takeover_or_cancel_between_steps_is_seen_at_the_next_boundary(clk: FakeClock) -> None:
    # With no freshness window every step boundary reads the row (the default trusts a status read
    # in the last 100 ms, which the previous checkpoint's lease renewal makes safe for takeovers).
    f = make_engine(env={"KODO_BOUNDARY_FRESH_MS": "0"})
    engine, client, store, _ = f
    client.start(three, workflow_id="fe-b1")
    client.start(three, workflow_id="fe-b2")
    # After step a's checkpoint, before step b starts:
    store.before("record", lambda: store.before("boundary", lambda: store.take_over("fe-b1")))
    assert engine.execute("fe-b1").kind is OutcomeKind.PREEMPTED
    assert [ran("fe-b1", x) for x in "abc"] == [1, 0, 0]
    assert [s["function_id"] for s in store.steps("fe-b1")] == [1]

    store.before("record", lambda: store.before("boundary", lambda: client.cancel("fe-b2")))
    assert engine.execute("fe-b2").kind is OutcomeKind.CANCELLED
    assert [ran("fe-b2", x) for x in "abc"] == [1, 0, 0]
    row = store.row("fe-b2")
    assert (row["status"], row["executor_id"]) == ("CANCELLED", None)  # the lease was given back
    assert f.dispatcher.during_transaction == []


def test_a_duplicate_delivery_of_a_running_workflow_is_a_counted_noop(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(three, workflow_id="fe-5")
    nested: list[OutcomeKind] = []
    # A second delivery arrives while the first runner is between its first step and its checkpoint.
    store.before("record", lambda: nested.append(engine.execute("fe-5").kind))
    assert engine.execute("fe-5").kind is OutcomeKind.SUCCESS
    assert nested == [OutcomeKind.NOOP]
    row = store.row("fe-5")
    assert (row["noop_deliveries"], row["lease_epoch"]) == (1, 1)
    assert [ran("fe-5", x) for x in "abc"] == [1, 1, 1]


def test_a_duplicate_delivery_of_a_finished_workflow_is_a_counted_noop(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(three, workflow_id="fe-6")
    assert engine.execute("fe-6").kind is OutcomeKind.SUCCESS
    before = store.row("fe-6")
    for n in (1, 2):
        assert engine.execute("fe-6").kind is OutcomeKind.NOOP
        assert store.row("fe-6")["noop_deliveries"] == n
    after = store.row("fe-6")
    assert {k: v for k, v in after.items() if k != "noop_deliveries"} == {
        k: v for k, v in before.items() if k != "noop_deliveries"
    }
    assert [ran("fe-6", x) for x in "abc"] == [1, 1, 1]


def test_a_delivery_to_a_worker_of_another_version_is_a_noop_that_marks_the_row_unpublished(
    fake: Fake,
) -> None:
    _, client, store, dispatcher = fake
    client.start(three, workflow_id="fe-v")
    assert store.row("fe-v")["published_at_epoch_ms"] == T0
    v2 = Engine(Settings.from_env({"KODO_APP_VERSION": "v2"}), store, dispatcher)
    assert v2.execute("fe-v").kind is OutcomeKind.NOOP
    row = store.row("fe-v")
    assert (row["status"], row["noop_deliveries"], row["published_at_epoch_ms"]) == ("ENQUEUED", 1, 0)


def test_a_lease_held_by_a_dead_local_process_is_taken_over_at_once(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(three, workflow_id="fe-dead")
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process
    dead = f"{executor.HOST}:{gone.pid}:deadbeef"
    store.update(
        "fe-dead", status="PENDING", executor_id=dead, lease_epoch=1, lease_until_epoch_ms=T0 + 60_000
    )
    assert engine.execute("fe-dead").kind is OutcomeKind.SUCCESS  # no wait for the lease to run out
    row = store.row("fe-dead")
    assert (row["lease_epoch"], row["recovery_attempts"], row["status"]) == (2, 1, "SUCCESS")


# ---- durable step retries ----------------------------------------------------------------------


def test_a_failing_step_retries_durably_with_backoff_and_then_gives_up(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, dispatcher = fake
    rec = fake.reconciler()
    client.start(retrying, workflow_id="rt-1")

    # Attempt 1 fails at T0: recorded, and the workflow parks for interval_s * backoff**0 = 1 s.
    assert engine.execute("rt-1").kind is OutcomeKind.PARKED
    row = store.row("rt-1")
    assert (row["status"], row["wait_kind"], row["wait_key"], row["wait_reason"]) == (
        "PENDING",
        "retry",
        "2",
        "retry:2",
    )
    assert (row["wake_at_epoch_ms"], row["executor_id"]) == (T0 + 1000, None)
    assert ATTEMPTS_SEEN["rt-1"] == [1]

    # The timer is not due yet; a stray delivery before it re-parks without running the step.
    clk.advance(400)
    assert rec.wake_timers() == 0
    store.update("rt-1", wait_kind=None, wait_key=None, wake_at_epoch_ms=None)
    assert engine.execute("rt-1").kind is OutcomeKind.PARKED
    assert ATTEMPTS_SEEN["rt-1"] == [1]
    assert (store.row("rt-1")["wait_kind"], store.row("rt-1")["wake_at_epoch_ms"]) == ("retry", T0 + 1000)

    # Due: attempt 2 fails at T0+1000 and parks for 1 s * 2 = 2 s.
    clk.now = T0 + 1000
    assert rec.wake_timers() == 1
    assert dispatcher.published[-1] == ("rt-1", "intentQ")
    assert engine.execute("rt-1").kind is OutcomeKind.PARKED
    assert store.row("rt-1")["wake_at_epoch_ms"] == T0 + 3000
    assert ATTEMPTS_SEEN["rt-1"] == [1, 2]

    # Attempt 3 is the last: the step's error is recorded and the workflow fails with it.
    clk.now = T0 + 3000
    assert rec.wake_timers() == 1
    assert engine.execute("rt-1").kind is OutcomeKind.ERROR
    assert ATTEMPTS_SEEN["rt-1"] == [1, 2, 3]
    row = store.row("rt-1")
    assert (row["status"], row["wait_kind"], row["wake_at_epoch_ms"]) == ("ERROR", None, None)
    err = error_of(row)
    assert isinstance(err, StepRetriesExceededError)
    assert str(err) == "Step fake.replay.flaky has exceeded its maximum of 3 retries. Previous error: boom 3"

    attempts = store.step_attempts("rt-1")
    assert [(a["function_id"], a["attempt"]) for a in attempts] == [(2, 1), (2, 2)]
    assert [(a["started_at_epoch_ms"], a["completed_at_epoch_ms"]) for a in attempts] == [
        (T0, T0),
        (T0 + 1000, T0 + 1000),
    ]
    assert [serde.error_message(a["error"]) for a in attempts] == [
        "builtins.ValueError: boom 1",
        "builtins.ValueError: boom 2",
    ]
    step = store.steps("rt-1")[1]
    assert (step["function_name"], step["started_at_epoch_ms"], step["completed_at_epoch_ms"]) == (
        "fake.replay.flaky",
        T0,  # the first attempt's start
        T0 + 3000,
    )
    assert isinstance(serde.decode_error(step["error"]), StepRetriesExceededError)
    assert ran("rt-1", "before") == 1


def test_a_retried_step_that_succeeds_records_its_output(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, _ = fake
    SUCCEED_ON["rt-2"] = 2
    client.start(retrying, workflow_id="rt-2")
    assert engine.execute("rt-2").kind is OutcomeKind.PARKED
    clk.advance(1000)
    assert fake.reconciler().wake_timers() == 1
    assert engine.execute("rt-2").kind is OutcomeKind.SUCCESS
    assert serde.loads(store.row("rt-2")["output"]) == "ok on 2"
    assert [a["attempt"] for a in store.step_attempts("rt-2")] == [1]
    assert ATTEMPTS_SEEN["rt-2"] == [1, 2]


def test_an_error_the_policy_does_not_retry_fails_the_step_at_once(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(fatal_flow, workflow_id="rt-3")
    assert engine.execute("rt-3").kind is OutcomeKind.ERROR
    assert isinstance(error_of(store.row("rt-3")), KeyError)
    assert store.step_attempts("rt-3") == []
    assert ran("rt-3", "fatal") == 1
