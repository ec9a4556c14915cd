"""The real system as processes, for end-to-end tests: what `mise run start` runs, on free ports.

`LiveSystem` starts the `Procfile`'s processes through `ops.procfile.Stack` (the same command lines
`ops/start.sh` runs under supervisord; tests/e2e/test_supervisor.py runs start.sh itself): the API (gunicorn) on a free port, an intent worker (`-Q
intentQ,controlQ`), an sbx worker (`-Q sbxQ`) and the reconciler with its admin server. They run
against the test database and broker of `tests/conftest.py`, under an application version of their
own, with `OC_MODE=replay SBX_MODE=mock`. Any of them can be started alone, killed with -9 or
restarted, so a test can build the split topology (a shim API first, the workers later).

The helpers mirror the runbooks' shell kit: `new_intent`, `new_run`, `wait_status`, `sql`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import psycopg
import requests
from psycopg.rows import dict_row

from kodo.config import Settings
from ops import processes
from ops.processes import Proc
from ops.procfile import Stack

# The Procfile's processes a monolith runs (Flower aside), in start order.
MONOLITH = ("reconciler", "api", "intent", "sbx")
WORKERS = ("intent", "sbx")
# The runbooks' wait_status: 180 polls x 0.25 s.
WAIT_S = 45.0
POLL_S = 0.1

Json = dict[str, Any]

# Contract names (contract-api §7): product steps in order, and their phases.
STEPS = ["CompileST", "ApplyPatchST", "DecideST", "ExecuteST"]
PHASES = ["compilation", "patching", "planning", "execution"]
HEADER_STATUSES = {"PENDING", "ENQUEUED", "WAITING_INPUT", "SUCCESS", "ERROR", "CANCELLED"}


def step_ids(view: Json) -> list[str]:
    return [s["stepId"] for s in view["steps"]]


class LiveSystem:
    """One kodo deployment of processes; `close()` kills whatever is still running."""

    def __init__(self, log_dir: Path, tag: str, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.version = f"e2e-{tag}-{uuid.uuid4().hex[:8]}"
        self.port = processes.free_port()
        self.admin_port = processes.free_port()
        while self.admin_port == self.port:
            self.admin_port = processes.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        base_env = dict(os.environ)
        for var in ("DBOS__APPVERSION", "REFRESH_GOLDEN"):
            base_env.pop(var, None)
        base_env.update(
            {
                "KODO_APP_VERSION": self.version,
                "OC_MODE": "replay",
                "SBX_MODE": "mock",
                "PORT": str(self.port),
                "ADMIN_PORT": str(self.admin_port),
                "KODO_API_PORT": str(self.port),
                "KODO_ADMIN_PORT": str(self.admin_port),
                "KODO_BIND_HOST": "127.0.0.1",
                # Two cores on this machine: small pools, still enough for the parallel-start tests.
                "KODO_API_WORKERS": "2",
                "KODO_INTENT_CONCURRENCY": "2",
                "KODO_SBX_CONCURRENCY": "2",
                "WF_SLEEP_MS": "300",
            }
        )
        base_env.update(env or {})
        self.env = base_env
        settings = Settings.from_env(self.env)
        self.version = settings.app_version  # a test may set DBOS__APPVERSION instead
        self.database_url = settings.database_url
        self.stack = Stack(self.env, self.port, self.admin_port, log_dir, "sys", warn=lambda _: None)
        self.http = requests.Session()
        self._conn: psycopg.Connection[Json] | None = None
        self._sql_lock = threading.Lock()

    # ---- processes -------------------------------------------------------------------------------

    @property
    def procs(self) -> dict[str, Proc]:
        return self.stack.procs

    def start(self, *names: str) -> LiveSystem:
        """Start the named processes (default: the monolith) and wait until each one serves."""
        todo = [n for n in names or MONOLITH if n not in self.procs or not self.procs[n].running()]
        if todo:
            self.stack.start(tuple(todo))
        return self

    def start_workers(self) -> LiveSystem:
        """The worker side of the split topology (`mise run start:worker`): both pools + reconciler."""
        return self.start("reconciler", *WORKERS)

    def kill(self, *names: str) -> None:
        """kill -9 the named processes (whole process groups), as a crash would."""
        for name in names:
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.kill9()

    def stop(self, *names: str) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after 10 s)."""
        for name in names:
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop()

    def restart(self, *names: str, hard: bool = True) -> None:
        """Kill (-9 unless `hard=False`) and start again the named processes."""
        (self.kill if hard else self.stop)(*names)
        self.start(*names)

    def close(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                self.kill(name)
        self.http.close()
        if self._conn is not None:
            self._conn.close()

    def logs(self, n: int = 30) -> str:
        """The last lines of every process's log (for failure messages)."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-n:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    # ---- SQL (the runbooks' sql_app / sql_sys: one database, schemas app and dbos) ---------------

    def sql(self, query: str, params: Mapping[str, Any] | Iterable[Any] | None = None) -> list[Json]:
        """One statement on one kept connection (autocommit), rows as dicts. Thread-safe."""
        with self._sql_lock:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row)
            cur = self._conn.execute(query, params)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []

    def psql(self, script: str, *args: str) -> str:
        """The runbooks' shell helpers: `ops/db/psql-app.sh` / `psql-sys.sh` with psql's arguments."""
        out = subprocess.run(
            ["bash", str(processes.REPO / "ops" / "db" / script), *args],
            env=processes.child_env(self.env),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, f"{script} {args}: {out.stderr}"
        return out.stdout

    def sql_app(self, query: str) -> str:
        """`sql_app` with `-tA` (one bare value per line), as the runbooks' counts read it."""
        return self.psql("psql-app.sh", "-tA", "-c", query).strip()

    def sql_sys(self, query: str) -> str:
        return self.psql("psql-sys.sh", "-tA", "-c", query).strip()

    def scalar(self, query: str, params: Mapping[str, Any] | Iterable[Any] | None = None) -> Any:
        rows = self.sql(query, params)
        assert len(rows) == 1, rows
        return next(iter(rows[0].values()))

    # ---- HTTP (the runbooks' curl + jq) ----------------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.base + path, timeout=10, **kwargs)

    def post(
        self, path: str, body: Any = None, *, raw: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """POST `body` as JSON with the runbooks' `content-type: application/json`; `raw` sends text as is."""
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        headers = {"content-type": "application/json"} if data is not None else {}
        return self.http.post(self.base + path, data=data, headers=headers, timeout=10, **kwargs)

    def new_intent(self, body: Json) -> str:
        r = self.post("/intents", body)
        assert r.status_code == 201, (r.status_code, r.text)
        intent_id = r.json()["intentId"]
        assert isinstance(intent_id, str)
        return intent_id

    def new_run(self, intent_id: str, body: Json) -> requests.Response:
        return self.post(f"/intents/{intent_id}/run", body)

    def start_run(self, intent_id: str, body: Json) -> str:
        r = self.new_run(intent_id, body)
        assert r.status_code == 202, (r.status_code, r.text)
        run_id = r.json()["runId"]
        assert isinstance(run_id, str)
        return run_id

    def view(self, run_id: str) -> Json:
        r = self.get(f"/runs/{run_id}")
        assert r.status_code == 200, (r.status_code, r.text)
        body: Json = r.json()
        return body

    def approve(self, run_id: str, approved_by: str = "e2e") -> requests.Response:
        return self.post(f"/runs/{run_id}/approve-plan", {"approvedBy": approved_by})

    def wait_view(
        self, run_id: str, cond: Callable[[Json], bool], what: str, timeout: float = WAIT_S
    ) -> Json:
        """Poll GET /runs/:id until `cond(view)`; fail with the last view and the process logs."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            r = self.get(f"/runs/{run_id}")
            last = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
            if r.status_code == 200 and cond(last):
                body: Json = last
                return body
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"run {run_id}: no {what} after {timeout}s; last {r.status_code} {last}\n{self.logs()}"
                )
            time.sleep(POLL_S)

    def wait_status(self, run_id: str, want: str, timeout: float = WAIT_S) -> Json:
        """The runbooks' wait_status: poll until `.status == want`."""
        return self.wait_view(run_id, lambda v: v.get("status") == want, f"status {want}", timeout)

    def wait_header(self, wid: str, cond: Callable[[Json], bool], what: str, timeout: float = WAIT_S) -> Json:
        """Poll GET /api/runs/:wid (seed 001's wait_h / wait_next)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/api/runs/{wid}")
            if r.status_code == 200 and cond(r.json()):
                body: Json = r.json()
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{wid}: no {what} after {timeout}s; last {r.status_code} {r.text}")
            time.sleep(POLL_S)

    def counts(self, *tables: str) -> tuple[int, ...]:
        """Row counts of app tables (the zero-write oracle)."""
        return tuple(int(self.scalar(f"SELECT count(*) FROM app.{t}")) for t in tables)


SystemFactory = Callable[..., LiveSystem]
