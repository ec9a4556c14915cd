"""Real processes for tests: Celery workers started (and SIGKILLed) as subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))


@dataclass
class WorkerProc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    fault_file: Path
    killed: bool = field(default=False)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited {self.proc.returncode}:\n{self.tail()}")
            if "ready." in self.log.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise TimeoutError(f"worker {self.name} not ready after {timeout}s:\n{self.tail()}")

    def wait_fault(self, timeout: float = 30.0) -> str:
        """Block until an armed fault point was reached (the worker now hangs there)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.fault_file.exists() and self.fault_file.read_text().strip():
                return self.fault_file.read_text().strip()
            time.sleep(0.01)
        raise TimeoutError(f"fault point not reached in {self.name}:\n{self.tail()}")

    def kill9(self) -> None:
        """kill -9 the whole worker (main process and pool children)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.killed = True

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


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
    penv = dict(env)
    penv["KODO_FAULT_FILE"] = str(fault_file)
    penv["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), penv.get("PYTHONPATH")]))
    if faults:
        penv["KODO_FAULTS"] = faults
    else:
        penv.pop("KODO_FAULTS", None)
    cmd = [
        CELERY, "-A", "kodo", "worker", "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h",
        "--loglevel", "INFO", "--without-mingle", "--without-gossip",
    ]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=penv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    w = WorkerProc(name, proc, log, fault_file)
    if ready:
        w.wait_ready()
    return w
