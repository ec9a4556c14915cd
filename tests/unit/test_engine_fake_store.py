"""The in-memory store itself: it must keep the semantics of kodo/db/queries/*.sql that the engine tests
rely on (transactions, locks, claim rules, conflicts), or those tests prove nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from kodo.records import Checkpoint, Doorbell, DuplicateError, Fence, NewWorkflow
from kodo.states import Wait, WaitKind, WorkflowStatus
from tests.support.memstore import (
    GET_WORKFLOW_COLUMNS,
    IntegrityError,
    MemoryStore,
    WouldBlockError,
)

T0 = 1_000_000
V = "v1"
INPUTS = '{"args":[],"kwargs":{}}'


@pytest.fixture(scope="session")
def _fresh_database() -> Iterator[None]:
    """Overrides the autouse fixture of tests/conftest.py: these tests need neither Postgres nor Redis."""
    yield


def new(wid: str, **kw: object) -> NewWorkflow:
    fields: dict[str, object] = {
        "workflow_id": wid,
        "name": "n",
        "queue": "q",
        "inputs": INPUTS,
        "app_version": V,
        "max_recovery_attempts": 2,
    }
    fields.update(kw)
    return NewWorkflow(**fields)  # type: ignore[arg-type]


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    with s.session() as session:
        session.insert_workflow(new("w"), T0)
    return s


def test_a_raising_transaction_rolls_everything_back_and_a_savepoint_only_its_part(
    store: MemoryStore,
) -> None:
    with store.session() as s:
        with pytest.raises(ValueError), s.transaction():
            s.insert_workflow(new("x"), T0)
            s.product["p"] = 1
            raise ValueError
        assert s.get_workflow("x") is None and "p" not in store.product
        with s.transaction():
            s.cancel("w", T0)
            with pytest.raises(ValueError), s.transaction():  # a savepoint
                s.resume("w", T0)
                raise ValueError
            assert s.get_workflow("w")["status"] == "CANCELLED"  # type: ignore[index]
        assert store.row("w")["status"] == "CANCELLED"


def test_get_workflow_returns_the_columns_of_the_sql_and_wait_reason_is_generated(store: MemoryStore) -> None:
    with store.session() as s:
        assert tuple(s.get_workflow("w") or ()) == GET_WORKFLOW_COLUMNS
        c = s.claim("w", "e", V, T0, T0 + 10)
        assert c is not None
        assert s.park(Fence("w", c.epoch, "e"), Wait(WaitKind.RECV, "t"), T0 + 5, T0)
        assert (s.get_workflow("w") or {})["wait_reason"] == "recv:t"
    full = store.row("w")
    assert {
        "published_at_epoch_ms",
        "publish_count",
        "deduplication_id",
        "workflow_deadline_epoch_ms",
    } <= set(full)


def test_claim_rules(store: MemoryStore) -> None:
    with store.session() as s:
        assert s.claim("w", "e", "v2", T0, T0 + 10) is None  # another version
        c = s.claim("w", "e1", V, T0, T0 + 10)
        assert c is not None and (c.epoch, c.status, c.recovery_attempts) == (1, WorkflowStatus.PENDING, 0)
        assert s.claim("w", "e2", V, T0 + 10, T0 + 20) is None  # live lease (not < now)
        c = s.claim("w", "e2", V, T0 + 11, T0 + 20)  # expired: a takeover counts a recovery
        assert c is not None and (c.epoch, c.recovery_attempts) == (2, 1)
        assert s.park(Fence("w", 2, "e2"), Wait(WaitKind.SLEEP), T0 + 100, T0 + 11)
        assert s.claim("w", "e3", V, T0 + 500, T0 + 600) is None  # parked
        assert s.wake_due_timers(T0 + 100, V, 10) == [Doorbell("w", "q")]
        c = s.claim("w", "e3", V, T0 + 500, T0 + 600)  # the park released the lease: no recovery
        assert c is not None and c.recovery_attempts == 1
        c = s.claim("w", "e4", V, T0 + 601, T0 + 700)
        assert c is not None and c.recovery_attempts == 2
        c = s.claim("w", "e5", V, T0 + 701, T0 + 800)  # a third recovery of max 2
        assert c is not None and c.status is WorkflowStatus.MAX_RECOVERY_ATTEMPTS_EXCEEDED
    row = store.row("w")
    assert (row["status"], row["executor_id"], row["lease_epoch"], row["recovery_attempts"]) == (
        "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
        None,
        5,
        3,
    )
    with store.session() as s:
        assert s.claim("w", "e6", V, T0 + 900, T0 + 1000) is None  # terminal


def test_the_deadline_counts_from_the_first_claim(store: MemoryStore) -> None:
    with store.session() as s:
        s.insert_workflow(new("t", timeout_ms=50), T0)
        s.claim("t", "e", V, T0 + 7, T0 + 10)
        s.claim("t", "e", V, T0 + 11, T0 + 20)
        assert s.expired_workflows(T0 + 57, V, 10) == []
        assert s.expired_workflows(T0 + 58, V, 10) == ["t"]


def test_insert_conflicts(store: MemoryStore) -> None:
    with store.session() as s:
        assert s.insert_workflow(new("d1", deduplication_id="k"), T0) == Doorbell("d1", "q")
        assert s.insert_workflow(new("d1", deduplication_id="k"), T0) is None  # same id: nothing
        with pytest.raises(DuplicateError):
            s.insert_workflow(new("d2", deduplication_id="k"), T0)
        assert s.insert_workflow(new("d3", deduplication_id="k", queue="other"), T0) is not None
        assert s.insert_workflow(new("d4"), T0) is not None and s.insert_workflow(new("d5"), T0) is not None
        assert s.cancel("d1", T0)  # frees the deduplication id
        assert s.insert_workflow(new("d2", deduplication_id="k"), T0) is not None
        with pytest.raises(IntegrityError):
            s.insert_notification("m", "nobody", "t", "1", T0)


def test_record_keeps_the_first_checkpoint_and_is_fenced_not_status_guarded(store: MemoryStore) -> None:
    with store.session() as s:
        c = s.claim("w", "e", V, T0, T0 + 10)
        assert c is not None
        f = Fence("w", c.epoch, "e")
        assert s.record(f, Checkpoint(1, "a", "1", None, T0), T0, T0 + 20) == (WorkflowStatus.PENDING, True)
        assert s.record(f, Checkpoint(1, "b", "2", None, T0), T0, T0 + 20) == (WorkflowStatus.PENDING, False)
        assert s.get_step("w", 1) is not None and s.get_step("w", 1).function_name == "a"  # type: ignore[union-attr]
        assert s.cancel("w", T0)
        assert s.record(f, Checkpoint(2, "c", "3", None, T0), T0, T0 + 30) == (WorkflowStatus.CANCELLED, True)
        assert not s.park(f, Wait(WaitKind.SLEEP), T0 + 1, T0)  # park and complete need PENDING
        assert not s.complete(f, WorkflowStatus.SUCCESS, "1", None, T0)
        assert s.release(f, T0)
        assert s.record_attempt(Fence("w", c.epoch, "x"), 1, 3, "e", T0, T0) is False
    with store.session() as s:
        s.insert_workflow(new("r"), T0)
        c = s.claim("r", "e", V, T0, T0 + 10)
        assert c is not None
        f = Fence("r", c.epoch, "e")
        assert s.record_attempt(f, 1, 3, "e", T0, T0) is True
        assert s.record_attempt(f, 1, 3, "e", T0, T0) is False  # ON CONFLICT DO NOTHING: no row returned


def test_messages_are_taken_in_seq_order_per_topic(store: MemoryStore) -> None:
    with store.session() as s:
        for uuid, topic, msg in [("1", "a", "x"), ("2", "b", "y"), ("3", "a", "z")]:
            assert s.insert_notification(uuid, "w", topic, msg, T0)
        assert not s.insert_notification("1", "w", "a", "again", T0)
        assert [s.take_message("w", "a", i, T0) for i in (1, 2, 3)] == ["x", "z", None]
        assert s.take_message("w", "b", 4, T0) == "y"
    assert [m["consumed_by_function_id"] for m in store.messages("w")] == [1, 4, 2]


def test_wake_child_waiters_wakes_a_child_wait_or_a_children_wait_after_the_last_child(
    store: MemoryStore,
) -> None:
    with store.session() as s:
        for kid in ("k1", "k2"):
            s.insert_workflow(new(kid, parent="w"), T0)
        c = s.claim("w", "e", V, T0, T0 + 10)
        assert c is not None
        assert s.park(Fence("w", c.epoch, "e"), Wait(WaitKind.CHILDREN), None, T0)
        s.cancel("k1", T0)
        assert s.wake_child_waiters("w", "k1", T0) == []  # k2 still runs
        s.cancel("k2", T0)
        assert s.wake_child_waiters("w", "k2", T0) == [Doorbell("w", "q")]
        c = s.claim("w", "e", V, T0, T0 + 10)
        assert c is not None
        assert s.park(Fence("w", c.epoch, "e"), Wait(WaitKind.CHILD, "k1"), None, T0)
        assert s.wake_child_waiters("w", "k2", T0) == []  # not the child it waits for
        assert s.wake_child_waiters("w", "k1", T0) == [Doorbell("w", "q")]


def test_wake_child_waiters_wakes_every_workflow_parked_on_the_child(store: MemoryStore) -> None:
    """A fork parked on its original's child is woken with the original (and only on that child)."""
    with store.session() as s:
        s.insert_workflow(new("k", parent="w"), T0)
        for wid in ("w", "fork-a", "fork-b", "other"):
            if wid != "w":
                s.insert_workflow(new(wid), T0)
            c = s.claim(wid, "e", V, T0, T0 + 10)
            assert c is not None
            key = "k2" if wid == "other" else "k"
            assert s.park(Fence(wid, c.epoch, "e"), Wait(WaitKind.CHILD, key), None, T0)
        s.cancel("k", T0)
        assert s.wake_child_waiters("w", "k", T0) == [
            Doorbell("fork-a", "q"),
            Doorbell("fork-b", "q"),
            Doorbell("w", "q"),
        ]
        assert store.row("other")["wait_kind"] == "child"
        assert s.wake_child_waiters("w", "k", T0) == []  # woken once


def test_leases_on_host_matches_like_and_skips_expired_leases(store: MemoryStore) -> None:
    with store.session() as s:
        for wid, eid, until in [
            ("a", "h_1:1:x", 5),
            ("b", "hx1:2:y", 5),
            ("c", "h:3:z", 0),
            ("d", "g:4:z", 5),
        ]:
            s.insert_workflow(new(wid), T0)
            store.update(wid, status="PENDING", executor_id=eid, lease_until_epoch_ms=until)
        assert sorted(r["workflow_uuid"] for r in s.leases_on_host("h_1:%")) == ["a", "b"]  # _ is any char
        assert [r["workflow_uuid"] for r in s.leases_on_host("h:%")] == []  # c's lease expired (0)


def test_a_second_session_of_the_same_thread_would_block_on_a_locked_row(store: MemoryStore) -> None:
    with store.session() as a, store.session() as b:
        with a.transaction():
            assert a.lock("w") is not None
            with pytest.raises(WouldBlockError):
                b.cancel("w", T0)
            with pytest.raises(WouldBlockError):
                store.update("w", priority=3)
            assert b.get_workflow("w") is not None  # a plain read does not block
        assert b.cancel("w", T0)  # the lock ended with a's transaction


def test_try_singleton_is_held_until_the_transaction_ends(store: MemoryStore) -> None:
    with store.session() as a, store.session() as b:
        assert a.try_singleton(7) and b.try_singleton(7)  # outside a transaction: released at once
        with a.transaction():
            assert a.try_singleton(7)
            assert a.try_singleton(7)  # re-entrant for its holder
            assert not b.try_singleton(7)
            with b.transaction():
                assert not b.try_singleton(7)
                assert b.try_singleton(8)
        assert b.try_singleton(7)
        with pytest.raises(ValueError), a.transaction():
            assert a.try_singleton(7)
            raise ValueError
        with b.transaction():
            assert b.try_singleton(7)  # a rolled-back transaction released it too


def test_timer_announcements_are_delivered_at_commit_only(store: MemoryStore) -> None:
    with store.listen_timers() as listener, store.session() as s:
        c = s.claim("w", "e", V, T0, T0 + 10)
        assert c is not None
        f = Fence("w", c.epoch, "e")
        with pytest.raises(ValueError), s.transaction():
            assert s.park(f, Wait(WaitKind.SLEEP), T0 + 5, T0)
            raise ValueError
        started = time.monotonic()
        listener.wait(0.05)
        assert time.monotonic() - started >= 0.04  # nothing was announced
        with s.transaction():
            assert s.park(f, Wait(WaitKind.SLEEP), T0 + 5, T0)
        started = time.monotonic()
        listener.wait(5)
        assert time.monotonic() - started < 1


def test_transactions_of_two_threads_are_serialised(store: MemoryStore) -> None:
    order: list[str] = []

    def other() -> None:
        with store.session() as s, s.transaction():
            order.append("other")
            s.cancel("w", T0)

    with store.session() as s:
        with s.transaction():
            s.lock("w")
            t = threading.Thread(target=other)
            t.start()
            time.sleep(0.05)
            order.append("first")
            assert s.get_workflow("w")["status"] == "ENQUEUED"  # type: ignore[index]
        t.join(5)
    assert order == ["first", "other"]
    assert store.row("w")["status"] == "CANCELLED"
