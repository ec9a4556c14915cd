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

import psutil

from kodo import clock
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
    """Renews this process's leases every `interval_ms` while it holds at least one."""

    def __init__(self, store: Store, lease_ms: int, interval_ms: int) -> None:
        self._store = store
        self._lease_ms = lease_ms
        self._interval = interval_ms / 1000
        self._held = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self) -> None:
        with self._lock:
            self._held += 1
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="kodo-heartbeat", daemon=True)
                self._thread.start()

    def release(self) -> None:
        with self._lock:
            self._held = max(self._held - 1, 0)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            with self._lock:
                held = self._held
            if not held:
                continue
            try:
                with self._store.session() as s:
                    s.renew_leases(executor_id(), clock.now_ms() + self._lease_ms)
            except Exception:  # a missed beat is survivable: the lease is 4 beats long
                log.warning("lease heartbeat failed", exc_info=True)
