"""The one place that publishes: commit first, then ring the doorbells the transaction produced.

Store transitions return `Doorbell`s; code collects them in a `Bells` while its transaction is
open, and `Publisher.commit_then_publish` rings them only after the commit. Just before the commit,
admission (`kodo.workflow.admission`) decides the doorbells of limited queues. A publish that fails
(broker down) marks the row unpublished, so the reconciler rings it again as soon as the broker
answers (it probes the broker while it is away); a crash between commit and publish loses nothing
either, because the reconciler republishes what Postgres says is runnable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from kodo.records import Doorbell
from kodo.workflow.admission import Admission
from kodo.workflow.ports import Dispatcher, Session, Store

log = logging.getLogger(__name__)


class Bells:
    """The doorbells to ring once the current transaction has committed, and the queues in which it
    freed a slot (a workflow parked, ended or was cancelled: admission may ring the next)."""

    def __init__(self) -> None:
        self._bells: list[Doorbell] = []
        self.freed: set[str] = set()

    def add(self, *bells: Doorbell | None) -> None:
        self._bells.extend(b for b in bells if b is not None)

    def free(self, queue: str, *, waiting: bool = True) -> None:
        """A slot of `queue` was freed; `waiting` False: its transition saw nothing waiting for one
        (no admission for it: a row that starts waiting after that look is admitted by the next
        freed slot, or the reconciler's sweep)."""
        if waiting:
            self.freed.add(queue)

    def merge(self, other: Bells) -> None:
        self._bells.extend(other._bells)
        self.freed |= other.freed

    def admit(self, session: Session, admission: Admission) -> None:
        """Before the commit: let admission decide the doorbells of limited queues for the rows this
        transaction made runnable (and the slots it freed in those queues)."""
        hinted = {b.queue for b in self._bells}
        self._bells = admission.admit(session, self._bells, self.freed & hinted)
        self.freed -= hinted

    def admit_freed(self, session: Session, admission: Admission) -> None:
        """After the commit: admit into the slots it freed in queues it rang nothing in (its own
        statement, so the queue's admission lock is not held with the transaction's row locks: a
        child's end holds its parent's row, which every sibling's end waits for)."""
        if self.freed:
            self._bells.extend(admission.admit(session, [], self.freed))
            self.freed = set()

    def __iter__(self) -> Iterator[Doorbell]:
        return iter(self._bells)

    def __len__(self) -> int:
        return len(self._bells)


class Publisher:
    def __init__(self, store: Store, dispatcher: Dispatcher, admission: Admission) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.admission = admission
        # The outermost open block of each session: a nested block (a durable call made inside a
        # @transaction step) is only a savepoint, so its doorbells wait for the outer commit.
        self._open: dict[int, Bells] = {}

    @contextmanager
    def commit_then_publish(self, session: Session, *, atomic: bool = True) -> Iterator[Bells]:
        """Run the block in a transaction (or, `atomic=False`, one autocommitted statement); after
        it commits, ring what it collected. Nothing is rung if the block raises."""
        key = id(session)
        outer = self._open.get(key)
        bells = Bells()
        if outer is not None:
            with session.transaction():  # a savepoint of the outer transaction
                yield bells
            outer.merge(bells)
            return
        self._open[key] = bells
        try:
            if atomic:
                with session.transaction():
                    yield bells
                    bells.admit(session, self.admission)
            else:
                yield bells
                bells.admit(session, self.admission)  # its own statement, after the block's
        finally:
            del self._open[key]
        try:
            bells.admit_freed(session, self.admission)
        except Exception:  # the reconciler's sweep admits into the freed slots instead
            log.warning("admission after a freed slot failed; the reconciler will admit", exc_info=True)
        self.ring(bells)

    def free(self, session: Session, queue: str) -> None:
        """The open transaction of `session` freed a slot of `queue` (admission may ring the next)."""
        bells = self._open.get(id(session))
        if bells is not None:
            bells.free(queue)

    def ring(self, bells: Iterable[Doorbell]) -> None:
        failed: Exception | None = None
        for bell in bells:
            if failed is None:
                try:
                    self.dispatcher.publish(
                        bell.workflow_id, bell.queue, name=bell.name, partition_key=bell.partition_key
                    )
                    continue
                except Exception as exc:
                    failed = exc
                    log.warning(
                        "publish of %s to %s failed (%s); the reconciler will retry",
                        bell.workflow_id,
                        bell.queue,
                        exc,
                    )
            # After one failure the broker is taken as down: the other bells are not tried (each
            # would wait for the publish timeout), they are marked unpublished with it.
            self._mark_unpublished(bell.workflow_id)

    def _mark_unpublished(self, workflow_id: str) -> None:
        try:
            with self.store.session() as s:
                s.mark_unpublished(workflow_id)
        except Exception:  # the database is down too: the republish window still covers the row
            log.warning("could not mark %s unpublished", workflow_id, exc_info=True)
