"""Who is running: the executor id of this process, liveness of local executors, and the heartbeat.

An executor id is `<host>:<pid>:<nonce>`. A reconciler on the same host can tell at once that a
holder died (its pid is gone or a zombie) instead of waiting for the lease to expire.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

import psutil

from kodo import clock
from kodo.records import Fence
from kodo.workflow.ports import Store

log = logging.getLogger(__name__)

HOST = socket.gethostname()
_ids: dict[int, str] = {}


def executor_id() -> str:
    pid = os.getpid()
    eid = _ids.get(pid)
    if eid is None:
        eid = _ids[pid] = f"{HOST}:{pid}:{uuid.uuid4().hex[:8]}"
    return eid


_node: str | None = None


def node_id() -> str:
    """The worker this process belongs to, for the per-worker caps: `<host>:<pid>` of the Celery
    worker whose pool it serves (`set_node`), else of this process."""
    return _node or f"{HOST}:{os.getpid()}"


def set_node(node: str) -> None:
    global _node
    _node = node


def host_prefix() -> str:
    return f"{HOST}:%"


def _pid_alive(pid: int) -> bool:
    try:  # a killed child not yet reaped is a zombie: dead for our purposes
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # cannot tell (no permission): assume it lives, the lease decides
        return True


def is_local_and_dead(eid: str | None) -> bool:
    """True only when `eid` belongs to this host and its process no longer runs."""
    if not eid:
        return False
    host, _, rest = eid.partition(":")
    pid_text = rest.partition(":")[0]
    if host != HOST or not pid_text.isdigit():
        return False
    return not _pid_alive(int(pid_text))


class Heartbeat:
    """Renews this process's leases every `interval_ms` while it holds at least one.

    It also gives up the leases of deliveries that failed on infrastructure (`abandon`): the
    database went away mid-run, so the run's lease would otherwise hold it for a whole lease period,
    renewed by this very heartbeat while the process runs other deliveries. `give_up(fences)` (the
    engine's: a fenced write that ends each lease and rings its run) is retried every
    `ABANDON_RETRY_S` until the database answers again.
    """

    ABANDON_RETRY_S = 0.1

    def __init__(
        self,
        store: Store,
        lease_ms: int,
        interval_ms: int,
        give_up: Callable[[list[Fence]], None] | None = None,
    ) -> None:
        self._store = store
        self._lease_ms = lease_ms
        self._interval = interval_ms / 1000
        self._give_up = give_up
        self._held = 0
        self._abandoned: list[Fence] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self) -> None:
        with self._lock:
            self._held += 1
            self._ensure_thread()

    def release(self) -> None:
        with self._lock:
            self._held = max(self._held - 1, 0)

    def abandon(self, fence: Fence) -> None:
        """Give up `fence`'s lease as soon as the database answers (its delivery failed on it)."""
        if self._give_up is None:
            return
        with self._lock:
            self._abandoned.append(fence)
            self._ensure_thread()
        self._wake.set()

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            if self._pid != os.getpid():
                self._abandoned = [f for f in self._abandoned if f.executor_id == executor_id()]
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="kodo-heartbeat", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                pending = bool(self._abandoned)
            self._wake.wait(self.ABANDON_RETRY_S if pending else self._interval)
            self._wake.clear()
            with self._lock:
                held, abandoned = self._held, list(self._abandoned)
            if abandoned and self._give_up is not None:
                try:
                    self._give_up(abandoned)
                except Exception as exc:  # still away: try again shortly
                    log.debug("giving up %d abandoned lease(s) failed: %s", len(abandoned), exc)
                else:
                    with self._lock:
                        self._abandoned = [f for f in self._abandoned if f not in abandoned]
            if not held:
                continue
            try:
                with self._store.session() as s:
                    s.renew_leases(executor_id(), clock.now_ms() + self._lease_ms)
            except Exception:  # a missed beat is survivable: the lease is 4 beats long
                log.warning("lease heartbeat failed", exc_info=True)
