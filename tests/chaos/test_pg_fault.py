"""Postgres restarted under load: every run converges within 5 s of the database being back.

A private PostgreSQL (`ops.servers`) is restarted (fast shutdown: every connection gets
AdminShutdown) while 8 clients have runs in flight on real worker processes. Then:
- during the outage the API answers 503 `{"error":"database unavailable","code":"db_unavailable"}`
  (a data route and /healthz), never 500;
- /healthz answers 200 within 1 s of the database being back;
- every run finishes SUCCESS within 5 s of the database being back (production lease and republish
  timings: no waiting for a lease to lapse or a republish window);
- no delivery fails on a stale pooled connection once the database is back, and no task fails at
  all (deliveries that hit the outage are retried);
- no step ran twice: every transactional effect is counted exactly once.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.support import fault_workflows as f
from tests.support.faults import FaultSystem, fault_system, log_lines_after, wait_for

pytestmark = pytest.mark.chaos

CLIENTS = 8
PER_CLIENT = 2
STEPS = 3
PAUSE_S = 0.25
DOWN_S = 2.0
CONVERGE_S = 5.0
HEALTHY_S = 1.0
STALE = ("AdminShutdown", "terminating connection", "server closed the connection", "connection is closed")


def _start_load(fs: FaultSystem, tag: str) -> list[str]:
    ids = [f"pg-{tag}-{c}-{i}" for c in range(CLIENTS) for i in range(PER_CLIENT)]
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            for i in range(PER_CLIENT):
                fs.rt.client.start(f.chain, STEPS, PAUSE_S, workflow_id=f"pg-{tag}-{c}-{i}")
                time.sleep(0.1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    return ids


def test_postgres_restart_under_load_converges_within_5s(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    with fault_system(tmp_path, f"pg-{tag}") as fs:
        api = fs.live
        assert api.get("/healthz").status_code == 200
        ids = _start_load(fs, tag)
        # Runs are in flight (some steps done, some not) when the database goes away.
        wait_for("runs in flight", lambda: len(fs.sql("SELECT 1 FROM public.test_effects")) >= 4, 10)
        assert set(fs.statuses(ids).values()) != {"SUCCESS"}

        fs.pg.stop()  # fast shutdown: every connection of every process is terminated
        down_at = time.time()
        # During the outage: 503 with the stable code, on a data route and on /healthz.
        for path in (f"/runs/{ids[0]}", "/api/ops/wf?limit=1", "/healthz"):
            r = api.get(path)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.json()["code"] == "db_unavailable", (path, r.text)
            assert r.json()["error"] == "database unavailable"
        time.sleep(max(DOWN_S - (time.time() - down_at), 0))

        fs.pg.start()
        back = time.monotonic()
        back_epoch = time.time()
        healthy_s = wait_for("/healthz 200", lambda: api.get("/healthz").status_code == 200, 5, 0.02)

        def converged() -> bool:
            return set(fs.statuses(ids).values()) == {"SUCCESS"}

        try:
            wait_for("every run SUCCESS", converged, 20, 0.05)
        finally:
            converged_s = time.monotonic() - back
            print(
                f"\nPostgres down {DOWN_S:.1f}s under {CLIENTS} clients ({len(ids)} runs): "
                f"/healthz 200 {healthy_s:.2f}s after it was back, every run SUCCESS {converged_s:.2f}s after"
            )
        assert healthy_s <= HEALTHY_S, f"/healthz took {healthy_s:.2f}s to recover"
        assert converged_s <= CONVERGE_S, f"runs took {converged_s:.2f}s to converge\n{fs.logs()}"

        # No step ran twice; every run recorded all its steps.
        effects = fs.effects(ids)
        assert effects == {wid: {f"e{i}": 1 for i in range(STEPS)} for wid in ids}
        # No delivery failed on a stale connection after the database was back, and no task failed.
        log = fs.worker_log()
        after = [ln for ln in log_lines_after(log, back_epoch + 0.05) if any(s in ln for s in STALE)]
        assert after == [], "\n".join(after)
        assert "raised unexpected" not in log, log[-4000:]
