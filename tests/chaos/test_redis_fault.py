"""Redis down for 4 s under load: starts stay fast and accepted, every run converges within 3 s of
the broker being back.

The private Redis (`ops.servers`, no persistence: a restart loses every queued message) is stopped
while runs are queued and in flight on real worker processes. Then:
- during the outage `POST /intents/:id/run` answers 202 in under 0.5 s (a bounded publish, no
  retry loop), and so does a start through the engine's client;
- within 3 s of Redis being back every run has run: the ones started before the outage (their
  messages died with Redis), the ones started during it (their publish failed), and the intent runs
  started over HTTP reach the plan gate (`waiting_input`);
- no step ran twice (every transactional effect counted once).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.support import fault_workflows as f
from tests.support.faults import FaultSystem, fault_system, wait_for

pytestmark = pytest.mark.chaos

CLIENTS = 8
STEPS = 2
PAUSE_S = 0.2
DOWN_S = 4.0
CONVERGE_S = 3.0
START_LIMIT_S = 0.5
INTENT = {"goal": "demo", "inputs": {}, "constraints": {}}


def _start_during_outage(
    fs: FaultSystem, tag: str, intents: list[str]
) -> tuple[list[float], list[str], list[str]]:
    """CLIENTS clients at once: each starts an intent run over HTTP and a workflow through the client.
    Returns every start's duration, the run ids and the workflow ids."""
    api = fs.live
    timings: list[float] = []
    runs: list[str] = []
    during: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        t0 = time.monotonic()
        r = api.new_run(intents[c], {"queuePartitionKey": f"tenant-{c}"})
        took = time.monotonic() - t0
        wid = f"rd-{tag}-down-{c}"
        t1 = time.monotonic()
        try:
            fs.rt.client.start(f.chain, STEPS, PAUSE_S, workflow_id=wid)
        except Exception as exc:
            errors.append(f"client start {wid}: {exc!r}")
        took_client = time.monotonic() - t1
        with lock:
            timings.extend([took, took_client])
            during.append(wid)
            if r.status_code == 202:
                runs.append(r.json()["runId"])
            else:
                errors.append(f"POST /intents/{intents[c]}/run: {r.status_code} {r.text}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    return timings, runs, during


def test_redis_down_starts_stay_fast_and_runs_converge_within_3s(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    with fault_system(tmp_path, f"redis-{tag}") as fs:
        api = fs.live
        # Load before the outage: more runs than worker slots, so some are still queued in Redis.
        before = [f"rd-{tag}-pre-{i}" for i in range(12)]
        for wid in before:
            fs.rt.client.start(f.chain, STEPS, PAUSE_S, workflow_id=wid)
        intents = [api.new_intent(INTENT) for _ in range(CLIENTS)]
        time.sleep(0.3)

        fs.redis.stop()
        down = time.monotonic()
        timings, runs, during = _start_during_outage(fs, tag, intents)
        time.sleep(max(DOWN_S - (time.monotonic() - down), 0))

        fs.redis.start()
        back = time.monotonic()
        ids = before + during

        def converged() -> bool:
            done = set(fs.statuses(ids).values()) == {"SUCCESS"}
            views = [api.view(r)["status"] for r in runs]
            return done and all(v == "waiting_input" for v in views)

        try:
            wait_for("every run to run", converged, 20, 0.05)
        finally:
            converged_s = time.monotonic() - back
            print(
                f"\nRedis down {DOWN_S:.1f}s: {len(timings)} starts during the outage, slowest "
                f"{max(timings):.3f}s; {len(ids)} workflows and {len(runs)} intent runs converged "
                f"{converged_s:.2f}s after Redis was back"
            )
        assert max(timings) < START_LIMIT_S, sorted(timings)
        assert converged_s <= CONVERGE_S, f"took {converged_s:.2f}s\n{fs.logs()}"
        assert fs.effects(ids) == {wid: {f"e{i}": 1 for i in range(STEPS)} for wid in ids}
