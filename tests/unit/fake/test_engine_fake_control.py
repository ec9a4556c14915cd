"""The engine against the in-memory store: cancel/resume, product hooks, fork, deduplication, the
publisher, the reconciler passes and the operation hooks (no services)."""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from kodo import clock
from kodo import workflow as wf
from kodo.errors import ConflictError, NotFoundError, Parked, UnknownWorkflowError
from kodo.records import NewWorkflow
from kodo.states import OpKind, OutcomeKind, Transition
from kodo.workflow import executor, serde
from kodo.workflow.operations import Op
from kodo.workflow.publisher import Bells
from kodo.workflow.reconciler import PassCounts, Reconciler
from kodo.workflow.registry import Registry
from tests.support.memstore import Fake, FakeClock, MemorySession, make_engine
from tests.unit.fake.conftest import T0

Q = "intentQ"
LEASE_MS = 5000
REPUBLISH_AFTER_MS = 10_000  # Settings defaults

RAN: Counter[tuple[str, str]] = Counter()
HOOK: list[tuple[str, Transition, str | None, bool]] = []  # (tag, transition, detail, in a transaction)


@wf.step(name="fake.ctl.effect")
def effect(label: str) -> str:
    RAN[(wf.current_workflow_id(), label)] += 1
    return label


@wf.transaction(name="fake.ctl.put")
def put(conn: MemorySession, key: str, value: int) -> int:
    conn.product[key] = value
    return value


def on_transition(
    conn: Any, transition: Transition, detail: str | None, tag: str, *_: Any, **__: Any
) -> None:
    assert isinstance(conn, MemorySession)
    conn.product.setdefault(f"transitions:{tag}", []).append(transition.value)  # a product write
    HOOK.append((tag, transition, detail, conn.in_transaction))
    if tag == "explode" and transition is Transition.CANCELLED:
        raise RuntimeError("the product refuses")


@wf.workflow(name="fake.ctl.hooked", on_transition=on_transition)
def hooked(tag: str, sleep_s: float = 0, fail: bool = False) -> str:
    effect("a")
    if sleep_s:
        wf.sleep(sleep_s)
    effect("b")
    if fail:
        raise ValueError(f"failed {tag}")
    return tag


@wf.workflow(name="fake.ctl.four")
def four() -> list[str]:
    return [effect(x) for x in "abcd"]


@wf.workflow(name="fake.ctl.child")
def child(x: int) -> int:
    return x + 1


@wf.workflow(name="fake.ctl.tour")
def tour() -> list[Any]:
    me = wf.current_workflow_id()
    effect("a")  # 1 step
    put("k", 1)  # 2 transaction
    wf.sleep(5)  # 3 sleep
    wf.send(me, "hi", "self")  # 4 send (to itself)
    got = wf.recv("self", 10)  # 5 deadline, 6 recv
    cid = wf.start_child(child, 1)  # 7 start_child
    result = wf.get_result(cid)  # 8 get_result
    kids = wf.wait_children()  # 9 wait_children
    return [got, result, len(kids)]


@wf.workflow(name="fake.ctl.failing")
def failing() -> None:
    effect("x")
    raise RuntimeError("no")


# ---- fixtures ----------------------------------------------------------------------------------


def hook_calls(tag: str) -> list[tuple[Transition, str | None, bool]]:
    return [(t, d, tx) for g, t, d, tx in HOOK if g == tag]


# ---- cancel, resume and the product hook ---------------------------------------------------------


def test_the_product_hook_runs_in_the_terminal_transaction(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(hooked, "ok", workflow_id="h-ok")
    client.start(hooked, "bad", fail=True, workflow_id="h-bad")
    assert engine.execute("h-ok").kind is OutcomeKind.SUCCESS
    assert engine.execute("h-bad").kind is OutcomeKind.ERROR
    assert hook_calls("ok") == [(Transition.SUCCESS, None, True)]
    assert hook_calls("bad") == [(Transition.ERROR, "failed bad", True)]
    assert store.product["transitions:ok"] == ["SUCCESS"]


def test_cancel_of_a_parked_workflow_clears_its_wait_and_resume_continues_from_checkpoints(
    fake: Fake, clk: FakeClock
) -> None:
    engine, client, store, dispatcher = fake
    rec = fake.reconciler()
    client.start(hooked, "c1", 30, workflow_id="c-1")
    assert engine.execute("c-1").kind is OutcomeKind.PARKED
    assert store.row("c-1")["wait_kind"] == "sleep"

    client.cancel("c-1")
    row = store.row("c-1")
    assert (row["status"], row["wait_kind"], row["wait_key"], row["wake_at_epoch_ms"]) == (
        "CANCELLED",
        None,
        None,
        None,
    )
    assert hook_calls("c1") == [(Transition.CANCELLED, None, True)]
    assert store.product["transitions:c1"] == ["CANCELLED"]  # committed with the cancel
    assert dispatcher.count("c-1") == 1  # a cancel rings nobody
    clk.advance(30_000)
    assert rec.wake_timers() == 0  # its timer is gone
    assert engine.execute("c-1").kind is OutcomeKind.NOOP

    client.resume("c-1")
    row = store.row("c-1")
    assert (row["status"], row["recovery_attempts"], row["published_at_epoch_ms"]) == ("ENQUEUED", 0, clk.now)
    assert dispatcher.count("c-1") == 2
    assert hook_calls("c1")[-1] == (Transition.RESUMED, None, True)
    assert engine.execute("c-1").kind is OutcomeKind.SUCCESS
    assert (RAN[("c-1", "a")], RAN[("c-1", "b")]) == (1, 1)
    assert [t for t, _, _ in hook_calls("c1")] == [
        Transition.CANCELLED,
        Transition.RESUMED,
        Transition.SUCCESS,
    ]


def test_a_cancelled_runner_stops_at_its_next_step_boundary(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(hooked, "c2", workflow_id="c-2")
    # The cancel lands while step a runs (before its checkpoint).
    store.before("record", lambda: client.cancel("c-2"))
    assert engine.execute("c-2").kind is OutcomeKind.CANCELLED
    row = store.row("c-2")
    assert (row["status"], row["executor_id"], row["lease_until_epoch_ms"]) == ("CANCELLED", None, None)
    assert [s["function_id"] for s in store.steps("c-2")] == [1]  # a's checkpoint landed
    assert (RAN[("c-2", "a")], RAN[("c-2", "b")]) == (1, 0)  # b never started
    assert [t for t, _, _ in hook_calls("c2")] == [Transition.CANCELLED]

    client.resume("c-2")
    assert engine.execute("c-2").kind is OutcomeKind.SUCCESS
    assert (RAN[("c-2", "a")], RAN[("c-2", "b")]) == (1, 1)
    assert [t for t, _, _ in hook_calls("c2")] == [
        Transition.CANCELLED,
        Transition.RESUMED,
        Transition.SUCCESS,
    ]


def test_a_cancel_before_the_terminal_write_wins(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(hooked, "c3", workflow_id="c-3")
    store.before("complete", lambda: client.cancel("c-3"))
    assert engine.execute("c-3").kind is OutcomeKind.CANCELLED
    row = store.row("c-3")
    assert (row["status"], row["output"], row["executor_id"]) == ("CANCELLED", None, None)
    assert [t for t, _, _ in hook_calls("c3")] == [Transition.CANCELLED]  # no SUCCESS after it


def test_a_failing_hook_rolls_the_cancel_back(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(hooked, "explode", 30, workflow_id="c-x")
    assert engine.execute("c-x").kind is OutcomeKind.PARKED
    before = store.row("c-x")
    with pytest.raises(RuntimeError, match="the product refuses"):
        client.cancel("c-x")
    assert store.row("c-x") == before  # still parked on its sleep
    assert "transitions:explode" not in store.product  # the hook's own write rolled back with it


def test_cancel_of_a_finished_workflow_is_a_conflict(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(hooked, "c4", workflow_id="c-4")
    assert engine.execute("c-4").kind is OutcomeKind.SUCCESS
    with pytest.raises(ConflictError, match="cannot cancel workflow in status SUCCESS"):
        client.cancel("c-4")
    assert store.row("c-4")["status"] == "SUCCESS"
    assert [t for t, _, _ in hook_calls("c4")] == [Transition.SUCCESS]
    with pytest.raises(ConflictError, match="cannot resume workflow in status SUCCESS"):
        client.resume("c-4")
    with pytest.raises(NotFoundError):
        client.cancel("no-such-workflow")


def test_cancel_of_a_workflow_this_process_does_not_know_changes_nothing(fake: Fake) -> None:
    _, client, store, dispatcher = fake
    with store.session() as s:
        s.insert_workflow(
            NewWorkflow("c-unk", "fake.ctl.not_registered", Q, '{"args":[],"kwargs":{}}', "v1", 5), T0
        )
    before = store.row("c-unk")
    with pytest.raises(UnknownWorkflowError):
        client.cancel("c-unk")
    assert store.row("c-unk") == before
    assert dispatcher.published == []


def test_a_timed_out_workflow_is_cancelled_by_the_reconciler(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, _ = fake
    client.start(hooked, "c5", 60, workflow_id="c-5", timeout_ms=5000)
    clk.advance(1000)
    assert engine.execute("c-5").kind is OutcomeKind.PARKED
    assert store.row("c-5")["workflow_deadline_epoch_ms"] == T0 + 1000 + 5000  # from the first claim
    clk.now = T0 + 6000
    assert fake.reconciler().sweep().timed_out == 0  # not past it yet
    clk.now = T0 + 6001
    assert fake.reconciler().sweep().timed_out == 1
    assert store.row("c-5")["status"] == "CANCELLED"
    assert [t for t, _, _ in hook_calls("c5")] == [Transition.CANCELLED]


def test_a_timed_out_workflow_of_an_unknown_name_does_not_stop_the_others(fake: Fake, clk: FakeClock) -> None:
    """The reconciler cannot run the product hook of a workflow it does not know: it leaves that one
    (to a reconciler that knows it) and still cancels every other timed-out workflow."""
    engine, client, store, _ = fake
    with store.session() as s:
        unknown = NewWorkflow("c-unknown", "fake.ctl.not-registered", Q, serde.encode_inputs((), {}), "v1", 5)
        s.insert_workflow(unknown, clock.now_ms())
    store.update("c-unknown", workflow_deadline_epoch_ms=T0 - 1, created_at=T0 - 10)
    client.start(hooked, "c6", 60, workflow_id="c-6", timeout_ms=1000)
    assert engine.execute("c-6").kind is OutcomeKind.PARKED
    clk.now = T0 + 5000
    assert fake.reconciler().sweep().timed_out == 1
    assert store.row("c-6")["status"] == "CANCELLED"
    assert store.row("c-unknown")["status"] == "ENQUEUED"


@wf.workflow(name="fake.ctl.inbox")
def inbox() -> Any:
    return wf.recv("t", 60)


@wf.transaction(name="fake.ctl.send_in_tx")
def send_in_tx(conn: MemorySession, destination: str) -> None:
    wf.send(destination, "hi", "t")


@wf.workflow(name="fake.ctl.tx_sender")
def tx_sender(destination: str) -> None:
    send_in_tx(destination)


def test_a_durable_call_inside_a_transaction_step_rings_after_the_outer_commit(fake: Fake) -> None:
    """wf.send inside a @transaction commits with the step (a savepoint of its transaction): the
    receiver's doorbell rings after that commit, never while the transaction is still open."""
    engine, client, _, dispatcher = fake
    client.start(inbox, workflow_id="c-inbox")
    assert engine.execute("c-inbox").kind is OutcomeKind.PARKED
    client.start(tx_sender, "c-inbox", workflow_id="c-txsend")
    assert engine.execute("c-txsend").kind is OutcomeKind.SUCCESS
    assert dispatcher.during_transaction == []
    assert dispatcher.count("c-inbox") == 2  # its start, and the wake-up after the commit
    assert engine.execute("c-inbox").kind is OutcomeKind.SUCCESS


# ---- fork ---------------------------------------------------------------------------------------


def test_fork_reuses_the_outputs_before_step_n_and_runs_the_rest(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    client.start(four, workflow_id="fk-1")
    assert engine.execute("fk-1").kind is OutcomeKind.SUCCESS

    new_id = client.fork("fk-1", 3, new_workflow_id="fk-1b")
    assert new_id == "fk-1b"
    row = store.row("fk-1b")
    assert (row["status"], row["forked_from"], row["name"], row["queue_name"]) == (
        "ENQUEUED",
        "fk-1",
        "fake.ctl.four",
        Q,
    )
    assert dispatcher.published[-1] == ("fk-1b", Q)
    copied = store.steps("fk-1b")
    assert [(s["function_id"], s["output"]) for s in copied] == [(1, '"a"'), (2, '"b"')]
    assert engine.execute("fk-1b").kind is OutcomeKind.SUCCESS
    assert serde.loads(store.row("fk-1b")["output"]) == ["a", "b", "c", "d"]
    assert [RAN[("fk-1b", x)] for x in "abcd"] == [0, 0, 1, 1]

    assert client.fork("fk-1", 4, new_workflow_id="fk-1c") == "fk-1c"  # N = the last step is fine
    with pytest.raises(ConflictError, match="fork stepN 5 exceeds max step 4"):
        client.fork("fk-1", 5, new_workflow_id="fk-1d")
    with pytest.raises(ConflictError, match="must be >= 1"):
        client.fork("fk-1", 0, new_workflow_id="fk-1e")
    with pytest.raises(ConflictError, match="already exists"):
        client.fork("fk-1", 2, new_workflow_id="fk-1b")
    ids = {r["workflow_uuid"] for r in store.rows()}
    assert ids == {"fk-1", "fk-1b", "fk-1c"}
    assert [(s["function_id"], s["output"]) for s in store.steps("fk-1b")] == [
        (1, '"a"'),
        (2, '"b"'),
        (3, '"c"'),
        (4, '"d"'),
    ]


# ---- starting and deduplication -------------------------------------------------------------------


def test_start_is_idempotent_per_id_and_a_deduplication_id_holds_while_in_flight(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    assert client.start(four, workflow_id="dd-1", deduplication_id="k").created
    assert not client.start(four, workflow_id="dd-1", deduplication_id="k").created
    assert dispatcher.count("dd-1") == 1
    with pytest.raises(ConflictError, match="deduplication id 'k' is in use"):
        client.start(four, workflow_id="dd-2", deduplication_id="k")
    with pytest.raises(KeyError):
        store.row("dd-2")
    assert client.start(four, workflow_id="dd-3", deduplication_id="k", queue="controlQ").created
    assert engine.execute("dd-1").kind is OutcomeKind.SUCCESS
    assert store.row("dd-1")["deduplication_id"] is None  # freed by the terminal write
    assert client.start(four, workflow_id="dd-2", deduplication_id="k").created


def test_start_txn_inserts_in_the_callers_transaction_and_publishes_after_commit(fake: Fake) -> None:
    _, client, store, dispatcher = fake
    with store.product_connection(transaction=True) as conn:
        started = client.start_txn(conn, four, (), {}, workflow_id="tx-1")
        conn.product["run"] = "tx-1"
        assert store.in_transaction()
    client.publish_started(started)
    assert store.row("tx-1")["status"] == "ENQUEUED" and store.product["run"] == "tx-1"
    assert dispatcher.published == [("tx-1", Q)]

    with pytest.raises(RuntimeError), store.product_connection(transaction=True) as conn:
        client.start_txn(conn, four, (), {}, workflow_id="tx-2")
        raise RuntimeError("the product write failed")
    with pytest.raises(KeyError):
        store.row("tx-2")


# ---- the publisher -----------------------------------------------------------------------------


def test_doorbells_ring_only_after_commit_and_not_at_all_on_rollback(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    client.start(hooked, "p1", 30, workflow_id="p-1")
    engine.execute("p-1")
    client.cancel("p-1")
    dispatcher.published.clear()
    with (
        store.session() as s,
        pytest.raises(RuntimeError),
        engine.publisher.commit_then_publish(s) as bells,
    ):
        bells.add(s.resume("p-1", clk_now()))
        assert len(bells) == 1
        raise RuntimeError("abort")
    assert dispatcher.published == []
    assert store.row("p-1")["status"] == "CANCELLED"  # the resume rolled back too
    with store.session() as s, engine.publisher.commit_then_publish(s) as bells:
        bells.add(s.resume("p-1", clk_now()))
        assert dispatcher.published == []  # not yet: still inside the transaction
    assert dispatcher.published == [("p-1", Q)]


def clk_now() -> int:
    return clock.now_ms()


def test_a_failed_publish_marks_the_row_unpublished_for_the_reconciler(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, dispatcher = fake
    dispatcher.fail = True
    started = client.start(four, workflow_id="pf-1")  # the start itself succeeds
    assert started.created
    assert dispatcher.failed == [("pf-1", Q)] and dispatcher.published == []
    row = store.row("pf-1")
    assert (row["status"], row["published_at_epoch_ms"], row["publish_count"]) == ("ENQUEUED", 0, 0)

    dispatcher.fail = False
    clk.advance(1)
    assert fake.reconciler().sweep().republished == 1  # at once, no republish window to wait for
    assert dispatcher.published == [("pf-1", Q)]
    assert engine.execute("pf-1").kind is OutcomeKind.SUCCESS


def test_a_failed_wake_up_publish_is_recovered_by_the_reconciler(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, dispatcher = fake
    client.start(hooked, "pw", 5, workflow_id="pw-1")
    assert engine.execute("pw-1").kind is OutcomeKind.PARKED
    clk.advance(5000)
    dispatcher.fail = True
    assert fake.reconciler().wake_timers() == 1
    assert store.row("pw-1")["published_at_epoch_ms"] == 0
    dispatcher.fail = False
    assert fake.reconciler().sweep().republished == 1
    assert engine.execute("pw-1").kind is OutcomeKind.SUCCESS


# ---- the reconciler ----------------------------------------------------------------------------


def test_the_standard_passes_wake_timers_expire_dead_leases_republish_and_cancel(
    fake: Fake, clk: FakeClock
) -> None:
    engine, client, store, dispatcher = fake
    rec = fake.reconciler()
    client.start(hooked, "sleepy", 1, workflow_id="r-sleep")
    assert engine.execute("r-sleep").kind is OutcomeKind.PARKED  # wakes at T0+1000
    client.start(four, workflow_id="r-lost")  # its doorbell was lost
    client.start(hooked, "slow", 3600, workflow_id="r-slow", timeout_ms=5000)
    assert engine.execute("r-slow").kind is OutcomeKind.PARKED  # deadline T0+5000
    client.start(four, workflow_id="r-dead")
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"{executor.HOST}:{gone.pid}:deadbeef"
    store.update("r-dead", status="PENDING", executor_id=dead, lease_epoch=1, lease_until_epoch_ms=T0 + 10**9)
    dispatcher.published.clear()

    clk.now = T0 + REPUBLISH_AFTER_MS + 1
    counts = rec.sweep()
    assert counts == PassCounts(timers=1, dead_leases=1, republished=2, timed_out=1)
    assert sorted(dispatcher.published) == [("r-dead", Q), ("r-lost", Q), ("r-sleep", Q)]
    assert store.row("r-slow")["status"] == "CANCELLED"
    assert (store.row("r-dead")["lease_until_epoch_ms"], store.row("r-lost")["publish_count"]) == (0, 1)

    assert engine.execute("r-sleep").kind is OutcomeKind.SUCCESS

    # Republishing backs off: twice the window after one republish, four times after two.
    assert rec.sweep() == PassCounts()
    clk.now += 2 * REPUBLISH_AFTER_MS
    assert rec.sweep().republished == 0
    clk.now += 1
    assert rec.sweep().republished == 2
    assert store.row("r-lost")["publish_count"] == 2
    clk.now += 4 * REPUBLISH_AFTER_MS
    assert rec.sweep().republished == 0
    clk.now += 1
    assert rec.sweep().republished == 2

    # The takeover of the dead holder's lease counts a recovery attempt; a claim resets the backoff.
    assert engine.execute("r-dead").kind is OutcomeKind.SUCCESS
    assert store.row("r-dead")["recovery_attempts"] == 1
    assert engine.execute("r-lost").kind is OutcomeKind.SUCCESS


def test_a_live_lease_is_not_republished_until_it_expires(fake: Fake, clk: FakeClock) -> None:
    _, client, store, _ = fake
    client.start(four, workflow_id="r-live")
    store.update("r-live", status="PENDING", executor_id="elsewhere:1:x", lease_until_epoch_ms=T0 + 60_000)
    clk.now = T0 + 59_999
    assert fake.reconciler().sweep().republished == 0
    clk.now = T0 + 60_001
    assert fake.reconciler().sweep().republished == 1


@dataclass
class Scheduler:
    """A pass that must run on one reconciler of the fleet at a time."""

    label: str
    runs: list[str]
    during: list[Any] = field(default_factory=list)  # what to do while holding the lock
    name: ClassVar[str] = "scheduler"
    singleton: ClassVar[int | None] = 4242

    def run(self, session: Any, bells: Bells, now: int) -> int:
        self.runs.append(self.label)
        for fn in self.during:
            fn()
        return 1


def test_a_singleton_pass_runs_on_one_reconciler_while_another_holds_its_lock(fake: Fake) -> None:
    engine, _, store, _ = fake
    runs: list[str] = []
    first_pass, second_pass = Scheduler("first", runs), Scheduler("second", runs)
    first = Reconciler(engine.settings, store, engine.publisher, [first_pass])
    second = Reconciler(engine.settings, store, engine.publisher, [second_pass])
    seen: list[int] = []
    first_pass.during.append(lambda: seen.append(second.run_pass(second_pass)))
    assert first.run_pass(first_pass) == 1
    assert seen == [0] and runs == ["first"]  # the second one skipped it
    assert second.run_pass(second_pass) == 1  # the lock ended with the first one's transaction
    assert runs == ["first", "second"]


# ---- operation hooks -----------------------------------------------------------------------------


@dataclass
class Recorder:
    events: list[tuple[str, OpKind, str, int, bool, str | None]] = field(default_factory=list)

    def before(self, op: Op) -> None:
        self.events.append(("before", op.kind, op.name, op.function_id, op.replayed, None))

    def after(self, op: Op, error: BaseException | None) -> None:
        name = None if error is None else type(error).__name__
        self.events.append(("after", op.kind, op.name, op.function_id, op.replayed, name))

    def take(self) -> list[tuple[str, OpKind, str, int, bool, str | None]]:
        out, self.events = self.events, []
        return out


def pair(kind: OpKind, name: str, fid: int, replayed: bool, error: str | None = None) -> list[Any]:
    return [("before", kind, name, fid, replayed, None), ("after", kind, name, fid, replayed, error)]


def test_operation_hooks_see_every_primitive_before_and_after(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, _ = fake
    rec = Recorder()
    engine.hooks.add(rec)
    client.start(tour, workflow_id="op-1")

    assert engine.execute("op-1").kind is OutcomeKind.PARKED
    step = pair(OpKind.STEP, "fake.ctl.effect", 1, False)
    txn = pair(OpKind.TRANSACTION, "fake.ctl.put", 2, False)
    assert rec.take() == [*step, *txn, *pair(OpKind.SLEEP, "kodo.sleep", 3, False, Parked.__name__)]

    clk.advance(5000)
    assert fake.reconciler().wake_timers() == 1
    assert engine.execute("op-1").kind is OutcomeKind.PARKED
    replayed = [
        *pair(OpKind.STEP, "fake.ctl.effect", 1, True),
        *pair(OpKind.TRANSACTION, "fake.ctl.put", 2, True),
        *pair(OpKind.SLEEP, "kodo.sleep", 3, True),
    ]
    assert rec.take() == [
        *replayed,
        *pair(OpKind.SEND, "kodo.send", 4, False),
        *pair(OpKind.RECV, "kodo.recv", 6, False),
        *pair(OpKind.START_CHILD, "kodo.start_child", 7, False),
        *pair(OpKind.GET_RESULT, "kodo.get_result", 8, False, "Parked"),
    ]
    assert engine.execute("op-1-7").kind is OutcomeKind.SUCCESS
    assert rec.take() == []  # the child ran no operation
    assert engine.execute("op-1").kind is OutcomeKind.SUCCESS
    assert rec.take() == [
        *replayed,
        *pair(OpKind.SEND, "kodo.send", 4, True),
        *pair(OpKind.RECV, "kodo.recv", 6, True),
        *pair(OpKind.START_CHILD, "kodo.start_child", 7, True),
        *pair(OpKind.GET_RESULT, "kodo.get_result", 8, False),
        *pair(OpKind.WAIT_CHILDREN, "kodo.wait_children", 9, False),
    ]
    assert serde.loads(store.row("op-1")["output"]) == ["hi", 2, 1]
    assert store.product["k"] == 1
    assert RAN[("op-1", "a")] == 1


def test_operation_hooks_see_a_failing_step_and_a_failing_hook_breaks_nothing(fake: Fake) -> None:
    engine, client, _, _ = fake
    rec = Recorder()

    class Broken:
        def before(self, op: Op) -> None:
            raise RuntimeError("observer bug")

        def after(self, op: Op, error: BaseException | None) -> None:
            raise RuntimeError("observer bug")

    engine.hooks.add(Broken())
    engine.hooks.add(rec)
    client.start(failing, workflow_id="op-2")
    assert engine.execute("op-2").kind is OutcomeKind.ERROR
    assert rec.take() == pair(OpKind.STEP, "fake.ctl.effect", 1, False)


def test_an_engine_uses_the_registry_it_is_given(clk: FakeClock) -> None:
    registry = Registry()
    f = make_engine(registry=registry)
    with pytest.raises(UnknownWorkflowError):
        f.client.start("fake.ctl.four", workflow_id="reg-1")
    registry.add(four)
    assert f.client.start("fake.ctl.four", workflow_id="reg-1").created
    assert f.engine.execute("reg-1").kind is OutcomeKind.SUCCESS
