"""The load of the fault suite (`ops.verify`): HTTP clients that drive intent runs and crash-demo
workflows to their end as an operator's client would, through every fault.

A client retries what the server could not answer (a connection error, a 5xx such as the 503 of a
database outage) with a short backoff, as a real client does, and counts the retries; it gives up on
a request only after `GIVE_UP_S` seconds, and that is a lost request. A 4xx is never retried: it is a
refused request, counted apart (the suite expects none).
"""

from __future__ import annotations

import random
import threading
import time
import urllib.error
import uuid
from dataclasses import dataclass, field
from typing import Any

from ops.http_client import http_json

GIVE_UP_S = 60.0
POLL_S = 0.1
TERMINAL = {"succeeded", "failed", "canceled", "retries_exceeded"}


@dataclass
class Tally:
    """What the clients saw, added up under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    retried: int = 0  # answers retried (connection error or 5xx)
    lost: int = 0  # requests given up after GIVE_UP_S
    refused: list[str] = field(default_factory=list)  # unexpected 4xx
    intent_runs: dict[str, str] = field(default_factory=dict)  # run id -> intent id (= workflow id)
    crashdemos: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # run id / crashdemo id -> final status

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)


class LostRequestError(RuntimeError):
    pass


class Client:
    """One client thread's calls against the API at `base`."""

    def __init__(self, base: str, tally: Tally) -> None:
        self.base = base
        self.tally = tally

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        """One request, retried through connection errors and 5xx until GIVE_UP_S; the body on `ok`."""
        deadline = time.monotonic() + GIVE_UP_S
        delay = 0.05
        while True:
            self.tally.add(requests=1)
            try:
                status, answer = http_json(method, self.base + path, 10.0, body)
            except (OSError, urllib.error.URLError):
                status, answer = 0, None
            if status in ok:
                return answer
            if 400 <= status < 500:
                with self.tally.lock:
                    self.tally.refused.append(f"{method} {path} -> {status} {answer}")
                raise LostRequestError(f"{method} {path} refused: {status}")
            if time.monotonic() > deadline:
                self.tally.add(lost=1)
                raise LostRequestError(f"{method} {path}: no answer in {GIVE_UP_S:g}s (last {status})")
            self.tally.add(retried=1)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def intent_run(self, tenant: str) -> None:
        """Create an intent, start its run, approve the plan when asked, poll until terminal."""
        intent = self.call(
            "POST", "/intents", {"goal": "verify: fault suite run", "inputs": {}, "constraints": {}}, (201,)
        )
        intent_id = intent["intentId"]
        started = self.call("POST", f"/intents/{intent_id}/run", {"queuePartitionKey": tenant}, (200, 202))
        run_id = started["runId"]
        with self.tally.lock:
            self.tally.intent_runs[run_id] = intent_id
        deadline = time.monotonic() + GIVE_UP_S
        approved = False
        while time.monotonic() < deadline:
            view = self.call("GET", f"/runs/{run_id}")
            if view["status"] in TERMINAL:
                with self.tally.lock:
                    self.tally.outcomes[run_id] = view["status"]
                return
            if not approved and view.get("nextAction") == "APPROVE_PLAN":
                self.call("POST", f"/runs/{run_id}/approve-plan", {"approvedBy": "verify"}, (200, 202))
                approved = True
            time.sleep(POLL_S)
        # Not terminal in time: the final check reads it from SQL and reports it.

    def crashdemo(self) -> None:
        """Start a crash-demo workflow and poll its marks until both steps ran."""
        wid = f"wf_verify_{uuid.uuid4().hex[:12]}"
        self.call("POST", f"/crashdemo?wf={wid}", None, (200, 202))
        with self.tally.lock:
            self.tally.crashdemos.append(wid)
        deadline = time.monotonic() + GIVE_UP_S
        while time.monotonic() < deadline:
            marks = self.call("GET", f"/marks?wf={wid}")
            if marks.get("s1") and marks.get("s2"):
                return
            time.sleep(POLL_S)


def run_clients(
    base: str,
    tally: Tally,
    stop: threading.Event,
    *,
    clients: int,
    minimum: int,
    crash_share: float,
    seed: int,
) -> list[threading.Thread]:
    """Start `clients` threads that keep starting work (a crash-demo workflow with probability
    `crash_share`, else an intent run of tenant t0..t3) until `stop` is set and at least `minimum`
    have started; returns the threads."""
    rng = random.Random(seed)
    lock = threading.Lock()
    started = 0

    def next_work() -> str | None:
        nonlocal started
        with lock:
            if stop.is_set() and started >= minimum:
                return None
            started += 1
            return "crashdemo" if rng.random() < crash_share else "intent"

    def loop(n: int) -> None:
        client = Client(base, tally)
        while (what := next_work()) is not None:
            try:
                if what == "intent":
                    client.intent_run(f"t{n % 4}")
                else:
                    client.crashdemo()
            except LostRequestError:
                continue

    threads = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    return threads
