"""The engine: claim a workflow (fenced lease), run its body with replay, write its outcome.

`Engine.execute(workflow_id)` is all a Celery task calls. Any delivery may be a duplicate: a
delivery that cannot claim is a counted no-op (`noop_deliveries`), never a second runner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kodo import clock
from kodo.config import Settings
from kodo.records import Claim, Doorbell, Fence, NewWorkflow, NoopReason
from kodo.states import OutcomeKind, WorkflowStatus
from kodo.workflow import executor, serde, transitions
from kodo.workflow.admission import Admission
from kodo.workflow.execution import Execution
from kodo.workflow.operations import Hooks
from kodo.workflow.ports import Dispatcher, Session, Store
from kodo.workflow.publisher import Publisher
from kodo.workflow.registry import REGISTRY, Registry, WorkflowDef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What one delivery did."""

    kind: OutcomeKind
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.detail}" if self.detail else self.kind.value


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        dispatcher: Dispatcher,
        registry: Registry = REGISTRY,
        store_unavailable: Callable[[BaseException], bool] = lambda exc: False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.publisher = Publisher(store, dispatcher, Admission(settings.app_version))
        self.hooks = Hooks()
        # Tells a database outage (the run is recovered later) from a failure of the workflow.
        self.store_unavailable = store_unavailable
        self.heartbeat = executor.Heartbeat(
            store, settings.lease_ms, settings.heartbeat_ms, give_up=self._give_up_leases
        )

    @property
    def executor_id(self) -> str:
        return executor.executor_id()

    @property
    def dispatcher(self) -> Dispatcher:
        return self.publisher.dispatcher

    @dispatcher.setter
    def dispatcher(self, dispatcher: Dispatcher) -> None:
        self.publisher.dispatcher = dispatcher

    # ---- starting and publishing -------------------------------------------------------------

    def definition(self, wf: WorkflowDef[Any, Any] | str) -> WorkflowDef[Any, Any]:
        return self.registry.get(wf) if isinstance(wf, str) else wf

    def new_workflow(
        self,
        wf: WorkflowDef[Any, Any] | str,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        *,
        workflow_id: str,
        queue: str | None = None,
        partition_key: str | None = None,
        parent: str | None = None,
        priority: int = 0,
        deduplication_id: str | None = None,
        app_version: str | None = None,
        max_recovery_attempts: int | None = None,
        forked_from: str | None = None,
        timeout_ms: int | None = None,
    ) -> NewWorkflow:
        """The row that starts `wf`, with the definition's defaults filled in."""
        definition = self.definition(wf)
        return NewWorkflow(
            workflow_id=workflow_id,
            name=definition.name,
            queue=queue or definition.queue,
            inputs=serde.encode_inputs(tuple(args), kwargs),
            app_version=app_version or self.settings.app_version,
            max_recovery_attempts=(
                definition.max_recovery_attempts if max_recovery_attempts is None else max_recovery_attempts
            ),
            partition_key=partition_key,
            priority=priority,
            deduplication_id=deduplication_id,
            parent=parent,
            forked_from=forked_from,
            timeout_ms=timeout_ms,
        )

    def publish(self, workflow_id: str, queue: str) -> None:
        """Ring the doorbell of a committed row (through the one publisher)."""
        self.publisher.ring([Doorbell(workflow_id, queue)])

    # ---- executing ---------------------------------------------------------------------------

    def claim(self, session: Session, workflow_id: str) -> Claim | None:
        """Take the fenced lease of a runnable row, or count a no-op delivery and say why."""
        now = clock.now_ms()
        version = self.settings.app_version

        def take() -> Claim | None:
            return session.claim(
                workflow_id, self.executor_id, version, now, now + self.settings.lease_ms, executor.node_id()
            )

        claim = take()
        if claim is not None:
            return claim
        why = session.count_noop(workflow_id, version)
        if why is None or why.app_version != version or not executor.is_local_and_dead(why.executor_id):
            log.info("no-op delivery of %s: %s", workflow_id, _noop_reason(why))
            return None
        # The holder was a process on this host that died (kill -9): take over now rather than
        # after the lease runs out. The takeover counts a recovery attempt in the claim. Only a row
        # of this version: another version's is not ours to claim, and expiring its lease here would
        # stamp it published now, so its own reconcilers would ring it only a republish window later
        # (count_noop marked it unpublished for them: they ring it on their next pass).
        assert why.executor_id is not None
        session.expire_lease(workflow_id, why.executor_id, why.epoch, now)
        return take()

    def execute(self, workflow_id: str) -> Outcome:
        """Run one delivery of `workflow_id` to its end, its next wait, or a no-op."""
        with self.store.session() as session:  # held for the whole delivery: one pool checkout
            return Outcome(self._execute(session, workflow_id))

    def _execute(self, session: Session, workflow_id: str) -> OutcomeKind:
        claim = self.claim(session, workflow_id)
        if claim is None:
            return OutcomeKind.NOOP
        if claim.status is WorkflowStatus.MAX_RECOVERY_ATTEMPTS_EXCEEDED:
            log.warning("%s exceeded its recovery attempts (%s)", workflow_id, claim.recovery_attempts)
            if claim.parent is not None:
                # Terminal now: a parent waiting on this child must not wait forever.
                with self.publisher.commit_then_publish(session) as bells:
                    transitions.end_child(
                        session,
                        bells,
                        parent=claim.parent,
                        child=workflow_id,
                        now=clock.now_ms(),
                        transition=lambda: True,
                    )
            return OutcomeKind.EXCEEDED
        execution = Execution(self, session, claim)
        self.heartbeat.hold()
        try:
            return execution.run()
        except Exception as exc:
            if self.store_unavailable(exc):
                # The database went away mid-run. Our lease would hold the run for a lease period
                # (renewed by our heartbeat while this process runs other deliveries): give it up as
                # soon as the database answers and ring the run, so its next delivery takes over at
                # once from its checkpoints. The claim fencing keeps any step from running twice.
                self.heartbeat.abandon(execution.fence)
            raise
        finally:
            self.heartbeat.release()

    def _give_up_leases(self, fences: list[Fence]) -> None:
        """End the leases of deliveries that failed on infrastructure (fenced) and ring their runs."""
        now = clock.now_ms()
        with self.store.session() as s, self.publisher.commit_then_publish(s) as bells:
            for fence in fences:
                bells.add(s.abandon(fence, now))


def _noop_reason(why: NoopReason | None) -> str:
    if why is None:
        return "unknown workflow id"
    if why.status not in (WorkflowStatus.ENQUEUED, WorkflowStatus.PENDING):
        return f"status {why.status.value}"
    if why.wait:
        return f"waiting on {why.wait}"
    if why.executor_id:
        return f"leased by {why.executor_id}"
    return f"application version {why.app_version}"
