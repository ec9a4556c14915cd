"""`mise run start` keeps the monolith alive: `ops/start.sh` (supervisord over the Procfile) under a
load of intent runs, the intent worker's and then the sbx worker's Celery main process killed -9.

A killed worker is started again (a new pid, "ready." again) while every other process keeps its pid,
no client request fails, every run still succeeds within 5 s of the restart, and `ops/stop.sh` leaves
no process of the stack behind (the killed workers' pool children included).

The stack runs on free ports, the test database and Redis db (tests/conftest.py), an application
version of its own and a run directory of its own (`KODO_RUN_DIR`: pid file, supervisord's
configuration, socket and logs), so neither start.sh nor stop.sh touches anyone else's processes.
Under honcho (the start.sh before supervisord) the first kill stops the whole stack: the API's pid
changes (it is gone), its requests fail and no intent worker comes back.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ops import processes
from ops.http_client import http_json, try_get
from ops.processes import REPO
from tests.e2e.live import LiveSystem

# How each program's main process shows in the process tree (its children share the command line).
MARKERS = {
    "api": "kodo.api:create_app()",
    "intent": "-Q intentQ,controlQ",
    "sbx": "-Q sbxQ",
    "reconciler": "ops reconcile",
}
START_S = 90.0
RESTART_S = 30.0  # kill -9 to "ready." of the new worker, with room for a loaded 2-core machine
CONVERGE_S = 5.0  # every run succeeded within this of the restarted worker's "ready."
SUBMIT_EVERY_S = 0.3
CHAOS_SLEEP_MS = 500  # each sandbox task sleeps this long first (CHAOS_SLEEP_EXECUTE)
FRESH_CLAIM_MS = 100  # a busy task is killed only if claimed this recently: 400 ms of its sleep left


def program_pids(root: int) -> dict[str, int]:
    """name -> pid of each program's main process under `root` (supervisord, or honcho), where
    exactly one runs: not a shell around it, not one of its own children."""
    tree = processes.process_tree(root)
    out: dict[str, int] = {}
    for name, marker in MARKERS.items():
        ours = {
            pid for pid, (_, cmd) in tree.items() if marker in cmd and not cmd.startswith(("/bin/sh", "sh "))
        }
        # A main's parent runs (a pool child of a just-killed main points at a zombie) and is not one of ours.
        mains = [pid for pid in ours if tree[pid][0] in tree and tree[pid][0] not in ours]
        if len(mains) == 1:
            out[name] = mains[0]
    return out


def ready_count(output: Path, name: str) -> int:
    """Celery's "ready." lines of program `name` in the stack's terminal output (`name | ...` lines)."""
    text = output.read_text(errors="replace") if output.exists() else ""
    return len(re.findall(rf"^\S+ {name}\S* *\|.* ready\.$", text, re.MULTILINE))


@dataclass
class Load:
    """Intent runs started (and approved at once) every SUBMIT_EVERY_S s from a thread, each call
    checked; `failures` lists every request that did not answer as the contract says."""

    base: str
    tag: str
    runs: list[str] = field(default_factory=list)  # approved runs, in submission order
    failures: list[str] = field(default_factory=list)
    last_submit: float = 0.0  # monotonic
    stop: threading.Event = field(default_factory=threading.Event)

    def call(self, method: str, path: str, want: int, body: Any = None) -> Any:
        try:
            status, answer = http_json(method, self.base + path, 10.0, body)
        except OSError as exc:
            self.failures.append(f"{method} {path}: {exc!r}")
            return None
        if status != want:
            self.failures.append(f"{method} {path}: {status} {answer}")
            return None
        return answer

    def one_run(self, n: int) -> None:
        intent = self.call(
            "POST", "/intents", 201, {"goal": f"{self.tag} {n}", "inputs": {}, "constraints": {}}
        )
        if intent is None:
            return
        started = self.call(
            "POST", f"/intents/{intent['intentId']}/run", 202, {"queuePartitionKey": f"sup-{n % 3}"}
        )
        if started is None:
            return
        if self.call("POST", f"/runs/{started['runId']}/approve-plan", 202, {"approvedBy": "sup-test"}):
            self.runs.append(started["runId"])
        self.call("GET", f"/runs/{started['runId']}", 200)
        self.last_submit = time.monotonic()

    def loop(self) -> None:
        n = 0
        while not self.stop.is_set():
            self.one_run(n)
            n += 1
            self.stop.wait(SUBMIT_EVERY_S)


class Stack:
    """`ops/start.sh` as a process (it becomes supervisord: one pid throughout), its terminal output
    in `output`, stopped by `ops/stop.sh`; `seen` collects every pid of the stack along the way."""

    def __init__(self, tmp_path: Path, system: LiveSystem) -> None:
        self.system = system
        self.run_dir = tmp_path / "run"
        overrides = {"KODO_RUN_DIR": str(self.run_dir), "KODO_PROCESSES": " ".join(MARKERS)}
        self.env = processes.child_env(system.env, overrides)
        self.output = tmp_path / "start.out"
        self.start = processes.spawn("start", ["bash", str(REPO / "ops" / "start.sh")], self.env, self.output)
        self.seen: set[int] = set()

    def pids(self) -> dict[str, int]:
        tree = processes.process_tree(self.start.pid)
        self.seen |= set(tree)
        return program_pids(self.start.pid)

    def tail(self) -> str:
        return self.output.read_text(errors="replace")[-4000:]

    def wait_serving(self) -> dict[str, int]:
        def serving() -> bool:
            self.start.ensure_running(" while starting")
            return (
                len(self.pids()) == len(MARKERS)
                and try_get(f"{self.system.base}/healthz") == (200, {"ok": True})
                and isinstance(try_get(f"{self.system.admin}/healthz"), tuple)
                and ready_count(self.output, "intent") == 1
                and ready_count(self.output, "sbx") == 1
            )

        processes.wait_until("the stack", serving, START_S, 0.1, self.tail)
        return self.pids()

    def status(self) -> str:
        """`mise run status` (`python -m ops.procfile status`) of this stack."""
        argv = [str(processes.BIN / "python"), "-m", "ops.procfile", "status"]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30, check=False)
        return done.stdout

    def kill9(self, name: str) -> Restart:
        """kill -9 the Celery main process of `name` (only it: its pool children die with it, as
        with an OOM kill), then wait for the new one and its "ready."; no other program moved."""
        before = self.pids()
        old, readies = before[name], ready_count(self.output, name)
        killed = time.monotonic()
        os.kill(old, signal.SIGKILL)
        processes.wait_until(
            f"a new {name}", lambda: self.pids().get(name, old) != old, RESTART_S, 0.02, self.tail
        )
        pid_s = time.monotonic() - killed
        new = self.pids()[name]

        def ready() -> bool:
            return ready_count(self.output, name) > readies

        processes.wait_until(f"the new {name}'s ready.", ready, RESTART_S, 0.02, self.tail)
        ready_at = time.monotonic()
        after = self.pids()
        assert {**after, name: old} == before, (name, before, after)
        assert after[name] == new
        return Restart(name, new, pid_s, ready_at - killed, ready_at)

    def stop(self) -> subprocess.CompletedProcess[str]:
        argv = ["bash", str(REPO / "ops" / "stop.sh")]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60, check=False)

    def survivors(self) -> list[int]:
        """Processes of this stack still running: any pid it ever had, or any process of its version."""
        alive = {pid for pid in self.seen if processes.pid_alive(pid)}
        return sorted(alive | set(processes.pids_with_env("KODO_APP_VERSION", self.system.version)))

    def close(self) -> None:
        if self.start.running():
            self.stop()
        for pid in self.survivors():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Restart:
    name: str
    new_pid: int
    pid_s: float  # kill -9 to the new pid in the tree
    ready_s: float  # kill -9 to the new worker's "ready."
    ready_at: float  # monotonic


def wait_succeeded(system: LiveSystem, runs: list[str], deadline: float) -> list[dict[str, Any]]:
    """Poll app.runs until every one of `runs` succeeded or `deadline` (monotonic); the others."""
    while True:
        rows = system.sql("SELECT id, status FROM app.runs WHERE id = ANY(%s)", (runs,))
        done = {r["id"] for r in rows if r["status"] == "succeeded"}
        left = [r for r in rows if r["id"] not in done] + [
            {"id": i} for i in runs if i not in {r["id"] for r in rows}
        ]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def running_on(system: LiveSystem, queue: str, claimed_within_ms: int) -> list[str]:
    """Workflows of this system's version that a worker of `queue` runs right now (a live lease),
    claimed at most `claimed_within_ms` ago: a sandbox task writes its row again only after its
    CHAOS_SLEEP_EXECUTE sleep, so such a task is still asleep for the rest of it. One found later in
    its sleep could end before the kill lands, and nothing would be taken over."""
    rows = system.sql(
        "SELECT workflow_uuid FROM dbos.workflow_status WHERE application_version = %s AND queue_name = %s"
        " AND status = 'PENDING' AND lease_until_epoch_ms > extract(epoch FROM clock_timestamp()) * 1000"
        " AND updated_at >= extract(epoch FROM clock_timestamp()) * 1000 - %s",
        (system.version, queue, claimed_within_ms),
    )
    return [r["workflow_uuid"] for r in rows]


def restart_under_load(stack: Stack, load: Load, name: str, busy_queue: str | None = None) -> str:
    """kill -9 `name` (once a workflow of `busy_queue` runs on it, when given: that one must then be
    taken over), then every run submitted until its new worker was ready succeeds within CONVERGE_S
    of that; returns the measurements."""
    system = stack.system
    busy: list[str] = []
    if busy_queue is not None:

        def working() -> bool:
            busy[:] = running_on(system, busy_queue, FRESH_CLAIM_MS)
            return bool(busy)

        processes.wait_until(f"work on {busy_queue}", working, 15)
    restart = stack.kill9(name)
    runs = list(load.runs)
    left = wait_succeeded(system, runs, restart.ready_at + CONVERGE_S)
    converged_s = time.monotonic() - restart.ready_at
    assert left == [], f"{name}: not succeeded {CONVERGE_S}s after the restart: {left}\n{stack.tail()}"
    if busy:
        rows = system.sql(
            "SELECT status, recovery_attempts FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)",
            (busy,),
        )
        assert rows and all(r["status"] == "SUCCESS" and r["recovery_attempts"] >= 1 for r in rows), rows
    return (
        f"{name}: new pid {restart.pid_s:.2f}s and ready {restart.ready_s:.2f}s after the kill -9"
        + (f" ({len(busy)} workflows running on it, taken over)" if busy else "")
        + f"; {len(runs)} runs submitted by then all succeeded {max(converged_s, 0):.2f}s after it was ready"
    )


@pytest.mark.timeout(150)
def test_a_killed_worker_is_restarted_and_nothing_else_moves(tmp_path: Path) -> None:
    # Each sandbox task sleeps 0.5 s (CHAOS_SLEEP_EXECUTE), so the sbx worker is killed in the middle of one.
    system = LiveSystem(
        tmp_path / "logs", f"sup-{uuid.uuid4().hex[:6]}", {"CHAOS_SLEEP_EXECUTE": str(CHAOS_SLEEP_MS)}
    )
    stack = Stack(tmp_path, system)
    load = Load(system.base, system.version)
    try:
        first = stack.wait_serving()

        def all_running() -> bool:  # up startsecs (5 s): a kill now is a crash, not a failed start
            return len(re.findall(r"^kodo:\S+ +RUNNING +pid", stack.status(), re.MULTILINE)) == len(MARKERS)

        processes.wait_until("every program RUNNING (mise run status)", all_running, 15, 0.5, stack.status)

        loader = threading.Thread(target=load.loop, daemon=True)
        loader.start()
        time.sleep(1.5)
        report = [restart_under_load(stack, load, "intent")]
        report.append(restart_under_load(stack, load, "sbx", busy_queue="sbxQ"))
        time.sleep(1.0)
        load.stop.set()
        loader.join(15)
        left = wait_succeeded(system, load.runs, load.last_submit + CONVERGE_S)
        assert left == [], f"not succeeded {CONVERGE_S}s after the last submission: {left}\n{stack.tail()}"
        assert load.failures == [], load.failures
        assert len(load.runs) >= 10, load.runs
        last = stack.pids()
        assert (last["api"], last["reconciler"]) == (first["api"], first["reconciler"])
        print(f"\n{len(load.runs)} runs, no failed request\n" + "\n".join(report))

        stopped = stack.stop()
        assert stopped.returncode == 0, stopped
        assert stack.start.wait(5) == 0, stack.tail()
        assert not list(stack.run_dir.glob("kodo-start.*.pid"))
        assert stack.survivors() == [], (stack.survivors(), stack.tail())
    finally:
        load.stop.set()
        stack.close()
        system.close()
