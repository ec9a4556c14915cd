"""The engine against the in-memory store: durable sleep, messages and child workflows (no services)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from kodo import workflow as wf
from kodo.errors import ChildWorkflowError, NotFoundError
from kodo.states import OutcomeKind
from kodo.workflow import serde
from tests.support.memstore import Fake, FakeClock, WouldBlockError, make_engine
from tests.unit.fake.conftest import T0

Q = "intentQ"

RAN: Counter[tuple[str, str]] = Counter()
FAIL_CHILD: set[int] = set()


@wf.step(name="fake.waits.effect")
def effect(label: str) -> str:
    RAN[(wf.current_workflow_id(), label)] += 1
    return label


@wf.step(name="fake.waits.inc")
def inc(x: int) -> int:
    RAN[(wf.current_workflow_id(), "inc")] += 1
    if x in FAIL_CHILD:
        raise ValueError(f"child failed on {x}")
    return x + 1


@wf.workflow(name="fake.waits.nap")
def nap(seconds: float) -> str:
    effect("a")
    wf.sleep(seconds)
    effect("b")
    return "rested"


@wf.workflow(name="fake.waits.inbox")
def inbox(topic: str, n: int, timeout_s: float) -> list[Any]:
    return [wf.recv(topic, timeout_s) for _ in range(n)]


@wf.workflow(name="fake.waits.child")
def child(x: int) -> int:
    return inc(x)


@wf.workflow(name="fake.waits.parent")
def parent(x: int) -> int:
    cid = wf.start_child(child, x)
    return int(wf.get_result(cid)) * 2


@wf.workflow(name="fake.waits.fan_out")
def fan_out(n: int) -> list[dict[str, Any]]:
    for i in range(n):
        wf.start_child(child, 10 * i)
    return wf.wait_children()


@wf.workflow(name="fake.waits.parent_step")
def parent_step(x: int) -> int:
    cid = wf.start_child(child, x)
    effect("between")  # a recorded operation after the start: a fork can start here while cid runs
    return int(wf.get_result(cid)) * 2


@wf.workflow(name="fake.waits.fan_out_step")
def fan_out_step(n: int) -> list[dict[str, Any]]:
    for i in range(n):
        wf.start_child(child, 10 * i)
    effect("between")
    return wf.wait_children()


@wf.workflow(name="fake.waits.batch_step")
def batch_step(n: int) -> list[dict[str, Any]]:
    me = wf.current_workflow_id()
    wf.start_children(child, [((10 * i,), f"{me}-b{i}") for i in range(n)])
    effect("between")
    return wf.wait_children()


@wf.workflow(name="fake.waits.sender")
def sender(destination: str) -> None:
    wf.send(destination, "from a workflow", "t")


# ---- fixtures ----------------------------------------------------------------------------------


def output(fake: Fake, wid: str) -> Any:
    row = fake.store.row(wid)
    assert row["status"] == "SUCCESS", (row["status"], row["error"])
    return serde.loads(row["output"])


# ---- sleep -------------------------------------------------------------------------------------


def test_sleep_parks_until_its_wake_time_fixed_at_first_execution(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, dispatcher = fake
    rec = fake.reconciler()
    client.start(nap, 30, workflow_id="sl-1")
    assert engine.execute("sl-1").kind is OutcomeKind.PARKED
    row = store.row("sl-1")
    assert (row["status"], row["wait_kind"], row["wait_key"], row["wait_reason"]) == (
        "PENDING",
        "sleep",
        None,
        "sleep",
    )
    assert (row["wake_at_epoch_ms"], row["executor_id"], row["lease_until_epoch_ms"]) == (
        T0 + 30_000,
        None,
        None,
    )
    assert [
        (s["function_id"], s["function_name"], serde.loads(s["output"])) for s in store.steps("sl-1")
    ] == [
        (1, "fake.waits.effect", "a"),
        (2, "kodo.sleep", {"wake_at": T0 + 30_000}),
    ]
    with store.session() as s:
        assert s.next_wake_at(engine.settings.app_version) == T0 + 30_000
    # A parked workflow cannot be claimed: a stray delivery is a no-op.
    assert engine.execute("sl-1").kind is OutcomeKind.NOOP

    # Woken early (a stray wake-up) 10 s later: it parks again until the SAME time, not 30 s later.
    clk.advance(10_000)
    assert rec.wake_timers() == 0
    store.update("sl-1", wait_kind=None, wake_at_epoch_ms=None)
    assert engine.execute("sl-1").kind is OutcomeKind.PARKED
    assert store.row("sl-1")["wake_at_epoch_ms"] == T0 + 30_000

    clk.now = T0 + 30_000
    published = len(dispatcher.published)
    assert rec.wake_timers() == 1
    assert dispatcher.published[published:] == [("sl-1", Q)]
    row = store.row("sl-1")
    assert (row["wait_kind"], row["wake_at_epoch_ms"], row["published_at_epoch_ms"]) == (
        None,
        None,
        T0 + 30_000,
    )
    clk.advance(5000)  # delivered late: the wake time still does not move
    assert engine.execute("sl-1").kind is OutcomeKind.SUCCESS
    assert output(fake, "sl-1") == "rested"
    assert (RAN[("sl-1", "a")], RAN[("sl-1", "b")]) == (1, 1)
    assert serde.loads(store.steps("sl-1")[1]["output"]) == {"wake_at": T0 + 30_000}


def test_a_zero_sleep_does_not_park(fake: Fake) -> None:
    engine, client, _, _ = fake
    client.start(nap, 0, workflow_id="sl-0")
    assert engine.execute("sl-0").kind is OutcomeKind.SUCCESS


def test_parking_a_timed_wait_announces_the_timer_to_listeners(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(nap, 30, workflow_id="sl-n")
    with store.listen_timers() as listener:
        started = time.monotonic()
        listener.wait(0.01)  # nothing announced yet: times out
        assert engine.execute("sl-n").kind is OutcomeKind.PARKED
        listener.wait(5.0)  # returns at once: the park announced its timer at commit
    assert time.monotonic() - started < 2.0


# ---- messages ----------------------------------------------------------------------------------


def test_recv_consumes_messages_in_order_exactly_once(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    client.start(inbox, "t", 3, 60, workflow_id="rv-1")
    assert engine.execute("rv-1").kind is OutcomeKind.PARKED
    row = store.row("rv-1")
    assert (row["wait_kind"], row["wait_key"], row["wait_reason"], row["wake_at_epoch_ms"]) == (
        "recv",
        "t",
        "recv:t",
        T0 + 60_000,
    )
    assert [s["function_name"] for s in store.steps("rv-1")] == ["kodo.recv.deadline"]

    assert client.send("rv-1", "m1", "t")  # wakes the receiver: one doorbell
    assert dispatcher.count("rv-1") == 2
    assert store.row("rv-1")["wait_kind"] is None
    assert client.send("rv-1", "m2", "t")  # not parked any more: no doorbell
    assert client.send("rv-1", "other", "elsewhere")  # another topic
    assert dispatcher.count("rv-1") == 2

    assert engine.execute("rv-1").kind is OutcomeKind.PARKED  # took m1 and m2, waits for the third
    assert store.row("rv-1")["wait_reason"] == "recv:t"
    assert client.send("rv-1", "m3", "t")
    assert dispatcher.count("rv-1") == 3
    assert engine.execute("rv-1").kind is OutcomeKind.SUCCESS
    assert output(fake, "rv-1") == ["m1", "m2", "m3"]

    msgs = {m["message"]: m for m in store.messages("rv-1")}
    assert [msgs[f'"m{i}"']["consumed_by_function_id"] for i in (1, 2, 3)] == [2, 4, 6]
    assert msgs['"other"']["consumed_at_epoch_ms"] is None
    # All three deadlines come from the first execution of each receive.
    steps = store.steps("rv-1")
    assert [s["function_name"] for s in steps] == ["kodo.recv.deadline", "kodo.recv"] * 3

    # Forced back to runnable, the replay consumes nothing more.
    store.update("rv-1", status="ENQUEUED", output=None)
    assert client.send("rv-1", "m4", "t")
    assert engine.execute("rv-1").kind is OutcomeKind.SUCCESS
    assert output(fake, "rv-1") == ["m1", "m2", "m3"]
    assert store.messages("rv-1")[-1]["consumed_at_epoch_ms"] is None


def test_recv_times_out_to_none_at_its_deadline(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, _ = fake
    rec = fake.reconciler()
    client.start(inbox, "t", 1, 5, workflow_id="rv-to")
    assert engine.execute("rv-to").kind is OutcomeKind.PARKED
    assert store.row("rv-to")["wake_at_epoch_ms"] == T0 + 5000
    clk.advance(4999)
    assert rec.wake_timers() == 0
    clk.advance(1)
    assert rec.wake_timers() == 1
    assert engine.execute("rv-to").kind is OutcomeKind.SUCCESS
    assert output(fake, "rv-to") == [None]
    assert store.steps("rv-to")[1]["output"] == "null"
    # A message arriving after the timeout stays for a later receive.
    client.send("rv-to", "late", "t")
    assert store.messages("rv-to")[0]["consumed_at_epoch_ms"] is None


def test_a_message_sent_before_the_receiver_looks_is_taken_without_parking(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    client.start(inbox, "t", 1, 60, workflow_id="rv-early")
    # The send commits after the claim, just before the receive's transaction takes its first lock.
    store.before("lock_own", lambda: client.send("rv-early", "early", "t"))
    assert engine.execute("rv-early").kind is OutcomeKind.SUCCESS
    assert output(fake, "rv-early") == ["early"]
    assert dispatcher.count("rv-early") == 1  # the start only: nobody had to be woken


def test_a_send_racing_the_receivers_park_is_not_lost(fake: Fake) -> None:
    """The receiver holds its row lock from the empty check to the park: a concurrent sender waits for
    that commit, then sees the parked row and wakes it (no lost wake-up)."""
    engine, client, store, dispatcher = fake
    client.start(inbox, "t", 1, 60, workflow_id="rv-race")
    sent: list[bool] = []
    sender_thread = threading.Thread(target=lambda: sent.append(client.send("rv-race", "raced", "t")))

    def send_concurrently() -> None:
        sender_thread.start()
        time.sleep(0.05)  # let the sender block on the receiver's open transaction
        assert sent == []  # it cannot get past the receiver's lock before the park commits

    store.before("park", send_concurrently)
    assert engine.execute("rv-race").kind is OutcomeKind.PARKED
    sender_thread.join(5)
    assert sent == [True]
    assert store.row("rv-race")["wait_kind"] is None  # woken by the sender after the park committed
    assert dispatcher.count("rv-race") == 2
    assert engine.execute("rv-race").kind is OutcomeKind.SUCCESS
    assert output(fake, "rv-race") == ["raced"]


def test_a_sender_in_the_same_thread_would_block_on_the_receivers_lock(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(inbox, "t", 1, 60, workflow_id="rv-block")
    errors: list[BaseException] = []

    def send_now() -> None:
        try:
            client.send("rv-block", "x", "t")
        except WouldBlockError as exc:
            errors.append(exc)

    store.before("take_message", send_now)  # inside the receiver's transaction, after lock_own
    assert engine.execute("rv-block").kind is OutcomeKind.PARKED
    assert len(errors) == 1
    assert store.messages("rv-block") == []


def test_client_send_with_the_same_idempotency_key_delivers_once(fake: Fake, clk: FakeClock) -> None:
    engine, client, store, dispatcher = fake
    client.start(inbox, "t", 2, 5, workflow_id="rv-key")
    assert engine.execute("rv-key").kind is OutcomeKind.PARKED
    assert client.send("rv-key", "once", "t", idempotency_key="k-1") is True
    assert client.send("rv-key", "once", "t", idempotency_key="k-1") is False
    assert len(store.messages("rv-key")) == 1
    assert dispatcher.count("rv-key") == 2  # start + one wake-up
    assert engine.execute("rv-key").kind is OutcomeKind.PARKED  # took it; waits for a second one
    clk.advance(5000)
    assert fake.reconciler().wake_timers() == 1
    assert engine.execute("rv-key").kind is OutcomeKind.SUCCESS
    assert output(fake, "rv-key") == ["once", None]


def test_send_to_an_unknown_workflow_is_not_found(fake: Fake) -> None:
    with pytest.raises(NotFoundError):
        fake.client.send("nobody", "x")


def test_a_workflow_send_is_exactly_once_per_call_site(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(inbox, "t", 1, 60, workflow_id="rv-dst")
    client.start(sender, "rv-dst", workflow_id="rv-src")
    assert engine.execute("rv-src").kind is OutcomeKind.SUCCESS
    store.update("rv-src", status="ENQUEUED")  # redelivered: the send replays
    assert engine.execute("rv-src").kind is OutcomeKind.SUCCESS
    assert [(m["message_uuid"], m["message"]) for m in store.messages("rv-dst")] == [
        ("rv-src:1", '"from a workflow"')
    ]
    assert engine.execute("rv-dst").kind is OutcomeKind.SUCCESS
    assert output(fake, "rv-dst") == ["from a workflow"]


# ---- children ----------------------------------------------------------------------------------


def test_get_result_parks_until_the_child_ends_and_the_child_wakes_the_parent_once(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    client.start(parent, 5, workflow_id="ch-1")
    assert engine.execute("ch-1").kind is OutcomeKind.PARKED
    row = store.row("ch-1")
    assert (row["wait_kind"], row["wait_key"], row["wake_at_epoch_ms"]) == ("child", "ch-1-1", None)
    kid = store.row("ch-1-1")
    assert (kid["status"], kid["parent_workflow_id"], kid["name"]) == ("ENQUEUED", "ch-1", "fake.waits.child")
    assert dispatcher.published == [("ch-1", Q), ("ch-1-1", Q)]

    assert engine.execute("ch-1-1").kind is OutcomeKind.SUCCESS
    assert dispatcher.count("ch-1") == 2  # the child's completion rang the parent exactly once
    assert store.row("ch-1")["wait_kind"] is None
    assert engine.execute("ch-1-1").kind is OutcomeKind.NOOP  # a duplicate of the child
    assert dispatcher.count("ch-1") == 2

    assert engine.execute("ch-1").kind is OutcomeKind.SUCCESS
    assert output(fake, "ch-1") == 12
    steps = store.steps("ch-1")
    assert [(s["function_name"], s["child_workflow_id"], s["output"]) for s in steps] == [
        ("kodo.start_child", "ch-1-1", '"ch-1-1"'),
        ("kodo.get_result", "ch-1-1", "6"),
    ]
    assert RAN[("ch-1-1", "inc")] == 1
    assert dispatcher.count("ch-1-1") == 1  # the parent's replay started no second child


def test_a_child_that_finished_first_is_read_without_parking(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    client.start(parent_step, 1, workflow_id="ch-2")
    # The child runs (on another worker) while the parent is between start_child and get_result: in
    # the step between them, whose record comes after the start committed (the step commits the
    # batch before its function runs; the first record is the start's own, in that batch).
    fake.store.before("record", lambda: fake.store.before("record", lambda: engine.execute("ch-2-1")))
    assert engine.execute("ch-2").kind is OutcomeKind.SUCCESS
    assert store.row("ch-2-1")["status"] == "SUCCESS"
    assert output(fake, "ch-2") == 4
    assert dispatcher.count("ch-2") == 1


def test_a_child_error_is_raised_in_the_parent(fake: Fake) -> None:
    engine, client, store, _ = fake
    FAIL_CHILD.add(7)
    client.start(parent, 7, workflow_id="ch-err")
    assert [o.kind for _, o in fake.dispatcher.deliver(engine)] == [
        OutcomeKind.PARKED,
        OutcomeKind.ERROR,
        OutcomeKind.ERROR,
    ]
    err = serde.decode_error(store.row("ch-err")["error"])
    assert isinstance(err, ValueError) and str(err) == "child failed on 7"


def test_a_cancelled_child_ends_the_parents_wait_with_a_child_error(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    client.start(parent, 3, workflow_id="ch-c")
    assert engine.execute("ch-c").kind is OutcomeKind.PARKED
    client.cancel("ch-c-1")
    assert store.row("ch-c-1")["status"] == "CANCELLED"
    assert dispatcher.count("ch-c") == 2  # the cancel woke the waiting parent
    assert engine.execute("ch-c").kind is OutcomeKind.ERROR
    err = serde.decode_error(store.row("ch-c")["error"])
    assert isinstance(err, ChildWorkflowError)
    assert str(err) == "child workflow ch-c-1 ended CANCELLED"


def test_wait_children_waits_for_the_last_child(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    client.start(fan_out, 3, workflow_id="fo-1")
    assert engine.execute("fo-1").kind is OutcomeKind.PARKED
    row = store.row("fo-1")
    assert (row["wait_kind"], row["wait_key"], row["wait_reason"]) == ("children", None, "children")
    kids = ["fo-1-1", "fo-1-2", "fo-1-3"]
    assert [store.row(k)["status"] for k in kids] == ["ENQUEUED"] * 3

    assert engine.execute("fo-1-2").kind is OutcomeKind.SUCCESS
    assert engine.execute("fo-1-1").kind is OutcomeKind.SUCCESS
    assert dispatcher.count("fo-1") == 1  # still waiting for fo-1-3
    assert store.row("fo-1")["wait_kind"] == "children"
    assert engine.execute("fo-1-3").kind is OutcomeKind.SUCCESS
    assert dispatcher.count("fo-1") == 2
    assert store.row("fo-1")["wait_kind"] is None

    assert engine.execute("fo-1").kind is OutcomeKind.SUCCESS
    assert output(fake, "fo-1") == [
        {"workflow_id": "fo-1-1", "status": "SUCCESS", "output": 1, "error": None},
        {"workflow_id": "fo-1-2", "status": "SUCCESS", "output": 11, "error": None},
        {"workflow_id": "fo-1-3", "status": "SUCCESS", "output": 21, "error": None},
    ]


def test_deliver_runs_a_fan_out_to_completion(fake: Fake) -> None:
    engine, client, _, _ = fake
    client.start(fan_out, 2, workflow_id="fo-2")
    outcomes = fake.dispatcher.deliver(engine)
    assert [wid for wid, _ in outcomes] == ["fo-2", "fo-2-1", "fo-2-2", "fo-2"]
    assert outcomes[-1][1].kind is OutcomeKind.SUCCESS
    assert [c["output"] for c in output(fake, "fo-2")] == [1, 11]


def test_children_started_in_one_batch_are_one_operation_and_replay_it(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    client.start(batch_step, 3, workflow_id="bs-1")
    assert engine.execute("bs-1").kind is OutcomeKind.PARKED  # on all its children
    kids = ["bs-1-b0", "bs-1-b1", "bs-1-b2"]
    assert [store.row(k)["status"] for k in kids] == ["ENQUEUED"] * 3
    assert all(dispatcher.count(k) == 1 for k in kids)  # rung together, once each
    for k in kids:
        assert engine.execute(k).kind is OutcomeKind.SUCCESS
    assert dispatcher.count("bs-1") == 2  # woken once, by the last
    assert engine.execute("bs-1").kind is OutcomeKind.SUCCESS
    assert [c["output"] for c in output(fake, "bs-1")] == [1, 11, 21]
    assert [o["function_name"] for o in client.steps("bs-1")] == [
        "kodo.start_children",
        "fake.waits.effect",
        "kodo.wait_children",
    ]
    assert RAN[("bs-1", "between")] == 1
    assert sorted(r["workflow_uuid"] for r in store.rows() if r["workflow_uuid"].startswith("bs-1-")) == kids


def test_a_fork_after_a_batch_shares_its_children(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(batch_step, 2, workflow_id="bs-2")
    assert engine.execute("bs-2").kind is OutcomeKind.PARKED
    fork = client.fork("bs-2", 2, new_workflow_id="bs-2f")  # the batch is copied: its children shared
    assert engine.execute(fork).kind is OutcomeKind.PARKED
    assert store.row(fork)["wait_kind"] == "child"
    for k in ("bs-2-b0", "bs-2-b1"):
        assert engine.execute(k).kind is OutcomeKind.SUCCESS
    for wid in ("bs-2", fork):
        while store.row(wid)["status"] != "SUCCESS":
            assert engine.execute(wid).kind in (OutcomeKind.SUCCESS, OutcomeKind.PARKED)
    assert [c["output"] for c in output(fake, fork)] == [1, 11]
    assert (RAN[("bs-2-b0", "inc")], RAN[("bs-2-b1", "inc")]) == (1, 1)  # each child ran once
    assert sorted(r["workflow_uuid"] for r in store.rows() if r["workflow_uuid"].startswith("bs-2")) == [
        "bs-2",
        "bs-2-b0",
        "bs-2-b1",
        "bs-2f",
    ]


# ---- forks share their original's children -----------------------------------------------------


def test_a_fork_before_the_child_ended_waits_for_the_same_child_and_both_are_woken(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    client.start(parent_step, 5, workflow_id="fc-1")
    assert engine.execute("fc-1").kind is OutcomeKind.PARKED  # on its child fc-1-1
    # Fork at the step after the start: the start is copied, so the fork shares fc-1-1.
    fork = client.fork("fc-1", 2, new_workflow_id="fc-1f")
    assert engine.execute(fork).kind is OutcomeKind.PARKED
    row = store.row(fork)
    assert (row["wait_kind"], row["wait_key"]) == ("child", "fc-1-1")
    assert store.row("fc-1-1")["parent_workflow_id"] == "fc-1"

    assert engine.execute("fc-1-1").kind is OutcomeKind.SUCCESS
    assert dispatcher.count("fc-1") == 2 and dispatcher.count(fork) == 2  # both woken, once
    assert store.row(fork)["wait_kind"] is None
    assert engine.execute("fc-1").kind is OutcomeKind.SUCCESS
    assert engine.execute(fork).kind is OutcomeKind.SUCCESS
    assert output(fake, "fc-1") == output(fake, fork) == 12
    assert RAN[("fc-1-1", "inc")] == 1  # the child ran once
    assert (RAN[("fc-1", "between")], RAN[(fork, "between")]) == (1, 1)
    assert sorted(r["workflow_uuid"] for r in store.rows() if r["workflow_uuid"].startswith("fc-1")) == [
        "fc-1",
        "fc-1-1",
        "fc-1f",
    ]


def test_a_fork_after_the_child_ended_reads_its_recorded_result_without_parking(fake: Fake) -> None:
    engine, client, _, dispatcher = fake
    client.start(parent_step, 2, workflow_id="fc-2")
    dispatcher.deliver(engine)
    assert output(fake, "fc-2") == 6
    fork = client.fork("fc-2", 2, new_workflow_id="fc-2f")
    assert engine.execute(fork).kind is OutcomeKind.SUCCESS
    assert output(fake, fork) == 6
    assert RAN[("fc-2-1", "inc")] == 1


def test_a_fork_of_a_fan_out_waits_for_the_originals_children_one_by_one(fake: Fake) -> None:
    engine, client, store, dispatcher = fake
    client.start(fan_out_step, 2, workflow_id="fc-3")
    assert engine.execute("fc-3").kind is OutcomeKind.PARKED  # on all its children
    fork = client.fork("fc-3", 3, new_workflow_id="fc-3f")  # copies both starts
    assert engine.execute(fork).kind is OutcomeKind.PARKED
    assert (store.row(fork)["wait_kind"], store.row(fork)["wait_key"]) == ("child", "fc-3-1")
    assert engine.execute("fc-3-1").kind is OutcomeKind.SUCCESS
    assert engine.execute(fork).kind is OutcomeKind.PARKED  # woken by fc-3-1, now on fc-3-2
    assert (store.row(fork)["wait_kind"], store.row(fork)["wait_key"]) == ("child", "fc-3-2")
    assert store.row("fc-3")["wait_kind"] == "children"
    assert engine.execute("fc-3-2").kind is OutcomeKind.SUCCESS
    assert dispatcher.count(fork) == 3 and dispatcher.count("fc-3") == 2
    assert engine.execute(fork).kind is OutcomeKind.SUCCESS
    assert engine.execute("fc-3").kind is OutcomeKind.SUCCESS
    assert (
        output(fake, fork)
        == output(fake, "fc-3")
        == [
            {"workflow_id": "fc-3-1", "status": "SUCCESS", "output": 1, "error": None},
            {"workflow_id": "fc-3-2", "status": "SUCCESS", "output": 11, "error": None},
        ]
    )
    assert RAN[("fc-3-1", "inc")] == RAN[("fc-3-2", "inc")] == 1


def test_a_fork_that_starts_a_child_of_its_own_waits_for_it_and_the_shared_one(fake: Fake) -> None:
    engine, client, store, _ = fake
    client.start(fan_out, 2, workflow_id="fc-4")
    assert engine.execute("fc-4").kind is OutcomeKind.PARKED
    fork = client.fork("fc-4", 2, new_workflow_id="fc-4f")  # copies the first start only
    assert engine.execute(fork).kind is OutcomeKind.PARKED
    assert store.row("fc-4f-2")["parent_workflow_id"] == fork  # its own second child
    assert (store.row(fork)["wait_kind"], store.row(fork)["wait_key"]) == ("child", "fc-4-1")
    assert engine.execute("fc-4-1").kind is OutcomeKind.SUCCESS
    assert engine.execute(fork).kind is OutcomeKind.PARKED  # the shared one ended; its own runs
    assert store.row(fork)["wait_kind"] == "children"
    assert engine.execute("fc-4f-2").kind is OutcomeKind.SUCCESS
    assert store.row(fork)["wait_kind"] is None  # its own child woke it
    assert engine.execute(fork).kind is OutcomeKind.SUCCESS
    assert [(c["workflow_id"], c["output"]) for c in output(fake, fork)] == [("fc-4-1", 1), ("fc-4f-2", 11)]


def test_engines_share_nothing_but_their_store(clk: FakeClock) -> None:
    first, second = make_engine(), make_engine()
    first.client.start(nap, 0, workflow_id="iso")
    with pytest.raises(NotFoundError):
        second.client.get("iso")
