"""Real processes for tests: Celery workers started (and SIGKILLed) as subprocesses.

The process mechanics (own session, kill -9 of the whole group, log tailing, fault points reached)
are `ops.processes`', shared with the crash demo and the benchmark.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ops import processes
from ops.procfile import celery_worker_argv

REPO = processes.REPO


@dataclass(eq=False)
class WorkerProc(processes.Proc):
    """A Celery worker of a test (its fault file is always set, armed or not)."""

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.popen

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_log("ready.", timeout)


def start_worker(
    tmp: Path,
    name: str,
    env: dict[str, str],
    *,
    queues: str = "intentQ,sbxQ,controlQ",
    concurrency: int = 2,
    faults: str | None = None,
    ready: bool = True,
) -> WorkerProc:
    overrides = {"KODO_FAULT_FILE": str(tmp / f"{name}.fault"), "KODO_FAULTS": faults or None}
    argv = celery_worker_argv(queues, concurrency, f"{name}@%h")
    p = processes.spawn(name, argv, processes.child_env(env, overrides), tmp / f"{name}.log")
    w = WorkerProc(p.name, p.popen, p.log, fault_file=p.fault_file)
    if ready:
        w.wait_ready()
    return w
