"""Real processes for tests: Celery workers started (and SIGKILLed) as subprocesses.

The process mechanics (own session, kill -9 of the whole group, log tailing) live in
`ops.processes`, shared with the crash demo.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ops import processes

REPO = processes.REPO
CELERY = str(processes.BIN / "celery")


@dataclass
class WorkerProc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    fault_file: Path
    killed: bool = field(default=False)

    @property
    def _p(self) -> processes.Proc:
        return processes.Proc(self.name, self.proc, self.log)

    def wait_ready(self, timeout: float = 30.0) -> None:
        self._p.wait_log("ready.", timeout)

    def wait_fault(self, timeout: float = 30.0, count: int = 1) -> str:
        """Block until `count` armed fault points were reached (the worker now hangs there)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.fault_file.read_text().strip() if self.fault_file.exists() else ""
            if len(text.splitlines()) >= count:
                return text
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited {self.proc.returncode}:\n{self.tail()}")
            time.sleep(0.01)
        raise TimeoutError(f"{count} fault point(s) not reached in {self.name}:\n{self.tail()}")

    def fault_pids(self) -> list[int]:
        """The pids that reported reaching a fault point (the pool children now hanging there)."""
        text = self.fault_file.read_text() if self.fault_file.exists() else ""
        return [int(p) for p in re.findall(r"pid=(\d+)", text)]

    def live_pids(self) -> list[int]:
        """Every still-running process of this worker (main process and pool children)."""
        return self._p.live_pids()

    def kill9(self) -> None:
        """kill -9 the whole worker (main process and pool children); returns when none of it runs."""
        self._p.kill9()
        self.killed = True

    def stop(self) -> None:
        self._p.stop(10.0)

    def tail(self, n: int = 40) -> str:
        return self._p.tail(n)


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
    log = tmp / f"{name}.log"
    fault_file = tmp / f"{name}.fault"
    overrides: dict[str, str | None] = {"KODO_FAULT_FILE": str(fault_file), "KODO_FAULTS": faults or None}
    penv = processes.child_env(env, overrides)
    argv = processes.celery_worker_argv(queues, concurrency, f"{name}@%h")
    p = processes.spawn(name, argv, penv, log)
    w = WorkerProc(name, p.popen, log, fault_file)
    if ready:
        w.wait_ready()
    return w
