"""The end-to-end benchmark's clients: threads that each loop over intent runs, as an operator's client.

One run: `POST /intents` (201), `POST /intents/:id/run` with `queuePartitionKey` one of the tenants
(202), `POST /runs/:id/approve-plan` (202; at once, or with `approve="gate"` once `GET /runs/:id`
says `nextAction: APPROVE_PLAN`), then `GET /runs/:id` every poll interval until its status is
terminal. Each request is one connection (`ops.http_client.http_json`, as the runbooks' curl calls).
Nothing is retried: an unexpected status, a connection error, a run not terminal within
`run_timeout_s` or a run that ended other than `succeeded` is an error of its kind, and the client
goes on with its next run.

Latency is from just before the start request (`POST /intents/:id/run`) to the answer of the poll
that saw the run terminal; `fanout` sets the run's sandbox task count through the compiler's replay
hook (`constraints.testHooks.tests`: one task per test; 1 is the plain run, one task, no hook).
"""

from __future__ import annotations

import threading
import time
import urllib.error
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ops.http_client import http_json
from ops.verifyload import TERMINAL

REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Shape:
    """What each client does."""

    tenants: int
    fanout: int
    poll_s: float
    approve: str  # "now" | "gate"
    run_timeout_s: float


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    tenant: str
    started_at: float  # epoch s, just before the start request
    observed_s: float  # start request to the poll that saw it terminal
    status: str


@dataclass
class Tally:
    """What the clients of one phase saw, under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: list[RunRecord] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    requests: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # route -> ms

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1


class RunFailedError(Exception):
    """One run given up; its message is the error's kind."""


class Client:
    def __init__(self, base: str, shape: Shape, tally: Tally) -> None:
        self.base = base
        self.shape = shape
        self.tally = tally

    def call(self, method: str, path: str, route: str, want: int, body: Any = None) -> Any:
        began = time.monotonic()
        try:
            status, answer = http_json(method, self.base + path, REQUEST_TIMEOUT_S, body)
        except (OSError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RunFailedError(f"{route}: {type(reason).__name__}") from exc
        with self.tally.lock:
            self.tally.requests[route].append((time.monotonic() - began) * 1000)
        if status != want:
            raise RunFailedError(f"{route}: HTTP {status}")
        return answer

    def intent_body(self, n: int) -> dict[str, Any]:
        constraints: dict[str, Any] = {}
        if self.shape.fanout > 1:
            tests = [f"bench-{i}.test.ts" for i in range(self.shape.fanout)]
            constraints = {"testHooks": {"tests": tests}}
        return {"goal": f"bench e2e run {n}", "inputs": {}, "constraints": constraints}

    def approve(self, run_id: str) -> None:
        self.call(
            "POST",
            f"/runs/{run_id}/approve-plan",
            "POST /runs/:id/approve-plan",
            202,
            {"approvedBy": "bench"},
        )

    def run(self, n: int) -> None:
        tenant = f"tenant-{n % self.shape.tenants}"
        intent = self.call("POST", "/intents", "POST /intents", 201, self.intent_body(n))
        started_at, t0 = time.time(), time.monotonic()
        body = {"queuePartitionKey": tenant}
        run_id = self.call("POST", f"/intents/{intent['intentId']}/run", "POST /intents/:id/run", 202, body)[
            "runId"
        ]
        approved = self.shape.approve == "now"
        if approved:
            self.approve(run_id)
        deadline = t0 + self.shape.run_timeout_s
        while True:
            time.sleep(self.shape.poll_s)
            view = self.call("GET", f"/runs/{run_id}", "GET /runs/:id", 200)
            if view["status"] in TERMINAL:
                record = RunRecord(run_id, tenant, started_at, time.monotonic() - t0, view["status"])
                with self.tally.lock:
                    self.tally.runs.append(record)
                if view["status"] != "succeeded":
                    raise RunFailedError(f"run ended {view['status']}")
                return
            if not approved and view.get("nextAction") == "APPROVE_PLAN":
                self.approve(run_id)
                approved = True
            if time.monotonic() > deadline:
                raise RunFailedError(f"run not terminal after {self.shape.run_timeout_s:g}s")


@dataclass(frozen=True)
class Phase:
    """One load phase: its tally and wall-clock bounds (monotonic)."""

    tally: Tally
    began: float
    ended: float
    started: int  # runs begun

    @property
    def wall_s(self) -> float:
        return self.ended - self.began


def run_phase(
    base: str,
    shape: Shape,
    clients: int,
    *,
    runs: int | None,
    duration_s: float | None,
    first: int = 0,
    on_begin: Callable[[], None] | None = None,
) -> Phase:
    """`clients` threads loop over runs until `runs` have begun (or `duration_s` has passed), then
    finish the ones they are in; `on_begin` is called just before they are released."""
    tally = Tally()
    lock = threading.Lock()
    began = 0
    deadline = [float("inf")]

    def take() -> int | None:
        nonlocal began
        with lock:
            if (runs is not None and began >= runs) or time.monotonic() >= deadline[0]:
                return None
            began += 1
            return first + began - 1

    def loop() -> None:
        client = Client(base, shape, tally)
        gate.wait()
        while (n := take()) is not None:
            try:
                client.run(n)
            except RunFailedError as exc:
                tally.error(str(exc))
            except Exception as exc:  # a malformed answer: count it, keep the load going
                tally.error(f"client: {type(exc).__name__}: {exc}"[:120])

    gate = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=loop, daemon=True, name=f"client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    if on_begin is not None:
        on_begin()
    t0 = time.monotonic()
    if duration_s is not None:
        deadline[0] = t0 + duration_s
    gate.wait()
    for t in threads:
        t.join()
    return Phase(tally, t0, time.monotonic(), began)
