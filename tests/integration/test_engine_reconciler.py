"""The reconciler: Postgres is the truth and the broker a doorbell. A lost publish, an expired lease of a
dead foreign runner, and the recovery-attempt cap (MAX_RECOVERY_ATTEMPTS_EXCEEDED stops retries).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kodo import clock
from kodo.runtime import Runtime
from kodo.workflow import executor
from kodo.workflow.ports import Session
from kodo.workflow.publisher import Bells
from kodo.workflow.reconciler import Reconciler
from tests.conftest import effects_of
from tests.support import workflows as t
from tests.support.helpers import Sql, insert_unpublished

DEAD_FOREIGN_RUNNER = """
UPDATE dbos.workflow_status SET status = 'PENDING', executor_id = 'otherhost:1:x',
    lease_epoch = lease_epoch + 1, lease_until_epoch_ms = %(until)s, wait_kind = NULL, wait_key = NULL,
    wake_at_epoch_ms = NULL, published_at_epoch_ms = %(published)s
WHERE workflow_uuid = %(w)s
"""


def _published_at(sql: Sql, wid: str) -> int | None:
    rows = sql("SELECT published_at_epoch_ms AS p FROM dbos.workflow_status WHERE workflow_uuid = %s", (wid,))
    return None if rows[0]["p"] is None else int(rows[0]["p"])


def test_a_lost_publish_is_republished_by_the_reconciler_and_runs(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    insert_unpublished(rt, t.effects, 2, workflow_id="lost-publish")
    before = rt.client.get("lost-publish")
    assert before["status"] == "ENQUEUED"
    start_worker()
    done = rt.client.wait("lost-publish", 20)
    assert done["status"] == "SUCCESS"
    assert done["recovery_attempts"] == 0  # a never-claimed row is not a recovery
    assert done["lease_epoch"] == 1
    assert effects_of(sql, "lost-publish") == {"e0": 1, "e1": 1}
    published = _published_at(sql, "lost-publish")
    assert published is not None
    assert published > before["created_at"]  # the reconciler stamped its republish


def test_an_expired_lease_of_a_dead_foreign_runner_is_recovered(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    wid = "expired-lease"
    insert_unpublished(rt, t.four_steps, workflow_id=wid)
    # A runner on another host claimed it, recorded step 1 (noop(0) doctored to 100), then died.
    sql(DEAD_FOREIGN_RUNNER, {"w": wid, "until": clock.now_ms() - 1000, "published": 0})
    sql(
        "INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name, output) "
        "VALUES (%s, 1, 't.noop', '100')",
        (wid,),
    )
    start_worker()
    done = rt.client.wait(wid, 20)
    assert done["status"] == "SUCCESS"
    assert done["output"] == "106"  # step 1 replayed from its record (100), steps 2-4 ran: 1 + 2 + 3
    assert done["recovery_attempts"] == 1
    assert done["lease_epoch"] == 2
    assert [s["function_id"] for s in rt.client.steps(wid)] == [1, 2, 3, 4]


def test_a_live_foreign_lease_is_left_alone(rt: Runtime, start_worker: Callable[..., Any], sql: Sql) -> None:
    """Counter-check for the recovery above: a lease that has not expired is not taken over."""
    wid = "live-lease"
    insert_unpublished(rt, t.four_steps, workflow_id=wid)
    sql(DEAD_FOREIGN_RUNNER, {"w": wid, "until": clock.now_ms() + 60_000, "published": 0})
    start_worker()
    rt.engine.publish(wid, "intentQ")
    deadline = clock.now_ms() + 1600  # > KODO_REPUBLISH_AFTER_MS + one reconcile pass
    while clock.now_ms() < deadline:
        row = rt.client.get(wid)
        assert row["status"] == "PENDING"
        assert row["executor_id"] == "otherhost:1:x"
    assert row["recovery_attempts"] == 0
    assert row["noop_deliveries"] >= 1  # the delivery (and any republish) was refused


def test_max_recovery_attempts_exceeded_stops_retries(rt: Runtime, sql: Sql) -> None:
    wid = "max-recovery"
    insert_unpublished(rt, t.sleeper, 60, workflow_id=wid, max_recovery_attempts=2)
    reconciler = rt.reconciler()
    outcomes: list[str] = []
    attempts: list[int] = []
    for _ in range(3):
        # The previous runner (on another host) died holding the lease; the lease has expired.
        sql(DEAD_FOREIGN_RUNNER, {"w": wid, "until": clock.now_ms() - 1, "published": 0})
        # While it may still be recovered, the reconciler republishes it.
        assert reconciler.sweep().republished == 1
        outcomes.append(str(rt.engine.execute(wid)))
        attempts.append(int(rt.client.get(wid)["recovery_attempts"]))
    assert outcomes == ["parked", "parked", "exceeded"]
    assert attempts == [1, 2, 3]

    row = rt.client.get(wid)
    assert row["status"] == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    assert row["executor_id"] is None
    # The recovered runs replayed step 1; it ran once.
    assert effects_of(sql, wid) == {"before": 1}

    # Retries stop: the reconciler no longer republishes it and deliveries are no-ops.
    published = rt.client.get(wid)["updated_at"], _published_at(sql, wid)
    counts = reconciler.sweep()
    assert counts.republished == 0
    assert counts.timers == 0
    assert (rt.client.get(wid)["updated_at"], _published_at(sql, wid)) == published
    assert str(rt.engine.execute(wid)) == "noop"
    final = rt.client.get(wid)
    assert final["status"] == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    assert final["recovery_attempts"] == 3
    assert json.loads(final["inputs"])["args"] == [60]

    # An operator's resume puts it back in play with a fresh count.
    rt.client.resume(wid)
    resumed = rt.client.get(wid)
    assert resumed["status"] == "ENQUEUED"
    assert resumed["recovery_attempts"] == 0
    assert str(rt.engine.execute(wid)) == "parked"
    assert effects_of(sql, wid) == {"before": 1}


def test_a_dead_local_runner_is_expired_at_once_and_republished_once_per_window(
    rt: Runtime, sql: Sql
) -> None:
    """A local holder whose pid is gone is expired on the first pass (no wait for the lease), and later
    passes do not flood the queue: the republish is throttled by KODO_REPUBLISH_AFTER_MS.
    """
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    insert_unpublished(rt, t.effects, 1, workflow_id="dead-local")
    sql(
        DEAD_FOREIGN_RUNNER.replace("'otherhost:1:x'", "%(eid)s"),
        {
            "w": "dead-local",
            "until": clock.now_ms() + 60_000,
            "published": clock.now_ms(),
            "eid": f"{executor.HOST}:{gone.pid}:dead",
        },
    )
    reconciler = rt.reconciler()
    first = reconciler.sweep()
    assert (first.dead_leases, first.republished) == (1, 1)
    row = rt.client.get("dead-local")
    assert row["lease_until_epoch_ms"] == 0 and row["status"] == "PENDING"
    for _ in range(3):
        again = reconciler.sweep()
        assert (again.dead_leases, again.republished) == (0, 0)


def test_republishing_backs_off_so_a_backlog_does_not_multiply_messages(rt: Runtime, sql: Sql) -> None:
    """A row merely waiting in a long broker backlog is republished after 1, 2, 4... windows (here
    KODO_REPUBLISH_AFTER_MS=1000), not once per window; its claim resets the backoff.
    """
    wid = "backlog-row"
    insert_unpublished(rt, t.four_steps, workflow_id=wid)
    reconciler = rt.reconciler()

    def aged(ms: int) -> int:
        sql(
            "UPDATE dbos.workflow_status SET published_at_epoch_ms = %s WHERE workflow_uuid = %s",
            (clock.now_ms() - ms, wid),
        )
        return reconciler.sweep().republished

    assert aged(1500) == 1  # first window passed
    assert reconciler.sweep().republished == 0  # just published
    assert aged(1500) == 0  # the second wait is two windows
    assert aged(2500) == 1
    assert aged(3500) == 0  # the third is four windows
    assert aged(4500) == 1
    assert sql("SELECT publish_count FROM dbos.workflow_status WHERE workflow_uuid = %s", (wid,))[0] == {
        "publish_count": 3
    }
    assert str(rt.engine.execute(wid)) == "success"
    assert rt.client.get(wid)["lease_epoch"] == 1
    assert sql("SELECT publish_count FROM dbos.workflow_status WHERE workflow_uuid = %s", (wid,))[0] == {
        "publish_count": 0
    }


@dataclass
class CountingSingleton:
    """A fleet-wide pass: counts its runs (and blocks while `hold` is set, holding its lock)."""

    name: ClassVar[str] = "singleton_probe"
    singleton: ClassVar[int | None] = 0x6B6F646F
    runs: int = 0
    hold: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)

    def run(self, session: Session, bells: Bells, now: int) -> int:
        self.runs += 1
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(10)
        return 1


def test_a_singleton_pass_runs_on_one_reconciler_at_a_time(rt: Runtime) -> None:
    """Two reconcilers (two sessions, as on two hosts): while one runs the singleton pass, holding its
    Postgres advisory lock, the other skips it; once the lock is released the other can run it."""
    release = threading.Event()
    first = CountingSingleton(hold=release)
    second = CountingSingleton()
    a = Reconciler(rt.settings, rt.store, rt.engine.publisher, [first])
    b = Reconciler(rt.settings, rt.store, rt.engine.publisher, [second])
    holder = threading.Thread(target=a.run_pass, args=(first,))
    holder.start()
    try:
        assert first.entered.wait(10)
        assert b.run_pass(second) == 0
        assert second.runs == 0
    finally:
        release.set()
        holder.join(10)
    assert first.runs == 1
    assert b.run_pass(second) == 1
    assert second.runs == 1
