"""The monolith under benchmark: `ops/start.sh` itself (supervisord over the Procfile, as `mise run
start` runs it) on free ports, with a run directory, a database and a broker of its own; and the
process groups the benchmark accounts CPU and memory to.

Postgres and Redis: by default private servers (`ops.servers`: a PostgreSQL cluster and a redis-server
on free ports, removed at the end), so the figures of `postgres` and `redis` are those servers' own
processes and nothing of a running dev system is touched. The private cluster is durable like the
machine's (fsync, synchronous_commit and full_page_writes on, shared_buffers 128MB, Debian's defaults;
`ops.servers` turns them off for its fault tests) and preloads pg_stat_statements. `shared=True` uses
the machine's servers instead (127.0.0.1:5432, database `kodo_bench_e2e` recreated; Redis 6379, db
`redis_db`, flushed, refused while another client uses it); `postgres` and `redis` then count every
postgres and redis-server process of the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from ops import processes
from ops.bench import BenchError, services
from ops.http_client import try_get
from ops.procfile import SupervisordFiles
from ops.servers import PostgresServer, RedisServer

DBNAME = "kodo_bench_e2e"
ROLE = "all"  # ops/start.sh's process set when KODO_PROCESSES is empty: the whole Procfile
START_S = 120.0
# The Procfile's programs, by what their main process's command line holds (supervisord starts each
# through `sh -c exec ...`, so the program is the direct child of supervisord).
PROGRAMS = {
    "api": "kodo.api:create_app()",
    "intent worker": "-Q intentQ,controlQ",
    "sbx worker": "-Q sbxQ",
    "reconciler": "ops reconcile",
    "flower": "workers.flower",
}
GROUPS = (*PROGRAMS, "supervisord", "postgres", "redis")
# The machine's durability settings (Debian's defaults), for the private cluster.
PG_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "128MB",
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track_utility": "on",
}
# What must not leak from the caller's environment into the stack: its database, broker, ports,
# process set and run directory are the benchmark's.
_DROP = (
    "DB_HOST",
    "DB_PORT",
    "DB_USER",
    "DB_PASSWORD",
    "PORT",
    "ADMIN_PORT",
    "FLOWER_PORT",
    "PROMETHEUS_MULTIPROC_DIR",
)


@dataclass
class Backends:
    """The Postgres and Redis the stack runs on."""

    database_url: str
    broker_url: str
    env: dict[str, str]
    describe: str
    pg: PostgresServer | None = None
    redis: RedisServer | None = None

    @classmethod
    def open(cls, shared: bool, redis_db: int, base_dir: Path) -> Backends:
        if shared:
            services.recreate_database(DBNAME)
            services.prepare_broker(redis_db, allow_shared=False)
            url = services.db_url(DBNAME)
            env = {"KODO_DATABASE_URL": url, "DB_HOST": "127.0.0.1", "DB_PORT": "5432", "APP_DB_NAME": DBNAME}
            describe = (
                f"the machine's servers (Postgres 127.0.0.1:5432 database {DBNAME}, Redis db {redis_db});"
                " postgres/redis = every postgres/redis-server process of the machine"
            )
            return cls(url, services.broker_url(redis_db), env, describe)
        pg = PostgresServer(base_dir=base_dir, settings=PG_SETTINGS)
        rd: RedisServer | None = None
        try:
            pg.start()
            rd = RedisServer(base_dir=base_dir)
            rd.start()
            pg.create_database(DBNAME)
        except BaseException:
            pg.close()
            if rd is not None:
                rd.close()
            raise
        version = pg.psql("SHOW server_version").strip()
        describe = (
            f"private servers started for the bench (Postgres {version} on :{pg.port}, fsync on, database"
            f" {DBNAME}; redis-server on :{rd.port}); postgres/redis = those servers' own processes"
        )
        return cls(pg.dsn(DBNAME), rd.url(0), pg.env(DBNAME), describe, pg, rd)

    def pg_pids(self) -> list[int]:
        if self.pg is not None and self.pg.popen is not None:
            return list(processes.process_tree(self.pg.popen.pid))
        return _named("postgres")

    def redis_pids(self) -> list[int]:
        if self.redis is not None and self.redis.popen is not None:
            return list(processes.process_tree(self.redis.popen.pid))
        return _named("redis-server")

    def close(self) -> None:
        for server in (self.redis, self.pg):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.close()


def _named(prefix: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if str(p.info["name"]).startswith(prefix)]


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class Monolith:
    """`bash ops/start.sh` with everything of its own; `stop()` is `ops/stop.sh` on its run directory."""

    def __init__(self, backends: Backends, run_dir: Path, version: str, extra_env: Mapping[str, str]) -> None:
        self.run_dir = run_dir
        self.files = SupervisordFiles(ROLE, run_dir)
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(processes.free_port())
        self.port, self.admin_port, self.flower_port = sorted(ports)
        base = {k: v for k, v in services.base_env().items() if k not in _DROP}
        overrides: dict[str, str | None] = {
            **backends.env,
            "KODO_BROKER_URL": backends.broker_url,
            "KODO_APP_VERSION": version,
            "KODO_RUN_DIR": str(run_dir),
            "KODO_BIND_HOST": "127.0.0.1",
            "PORT": str(self.port),
            "ADMIN_PORT": str(self.admin_port),
            "FLOWER_PORT": str(self.flower_port),
            "OC_MODE": "replay",
            "SBX_MODE": "mock",
            **extra_env,
        }
        self.env = processes.child_env(base, overrides)
        self.output = run_dir / "start.out"
        self.proc: processes.Proc | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def supervisord_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # start.sh execs python, which execs supervisord: one pid

    def tail(self, n: int = 40) -> str:
        assert self.proc is not None
        return self.proc.tail(n)

    def start(self) -> float:
        """Run ops/start.sh and wait until every program serves; returns the seconds it took."""
        began = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.proc = processes.spawn(
            "start", ["bash", str(processes.REPO / "ops" / "start.sh")], self.env, self.output
        )
        admin_url = f"http://127.0.0.1:{self.admin_port}/healthz"

        def ready(name: str) -> bool:
            try:
                return "ready." in self.files.program_log(name).read_text(errors="replace")
            except FileNotFoundError:
                return False

        def serving() -> bool:
            assert self.proc is not None
            self.proc.ensure_running(" while starting")
            api = try_get(f"{self.api_url}/healthz")
            return (
                api == (200, {"ok": True})
                and isinstance(try_get(admin_url), tuple)
                and _port_open(self.flower_port)
                and ready("intent")
                and ready("sbx")
                and set(self.groups()) >= set(PROGRAMS)
            )

        processes.wait_until("the monolith (ops/start.sh)", serving, START_S, 0.2, self.tail)
        return time.monotonic() - began

    def groups(self) -> dict[str, list[int]]:
        """Every process of the stack now, by program (the main process and all it started), plus
        supervisord with its event listener."""
        root = self.supervisord_pid
        tree = processes.process_tree(root)
        out: dict[str, list[int]] = {}
        for pid, (ppid, _cmd) in tree.items():
            if pid == root:
                name = "supervisord"
            else:
                top, parent = pid, ppid
                while parent != root and parent in tree:  # up to the program (a direct child)
                    top, parent = parent, tree[parent][0]
                main_cmd = tree[top][1]
                name = next((g for g, marker in PROGRAMS.items() if marker in main_cmd), "supervisord")
            out.setdefault(name, []).append(pid)
        return out

    def main_pid(self, name: str) -> int:
        """The main process of one program (the gunicorn master, the Celery main process)."""
        tree = processes.process_tree(self.supervisord_pid)
        for pid, (ppid, cmd) in tree.items():
            if ppid == self.supervisord_pid and PROGRAMS[name] in cmd:
                return pid
        raise BenchError(f"no {name} process under supervisord {self.supervisord_pid}")

    def stop(self) -> list[int]:
        """ops/stop.sh (SIGTERM to supervisord, which stops every program's group); any process of
        the stack left after it (one carrying its KODO_RUN_DIR) is killed -9, and returned."""
        if self.proc is None:
            return []
        argv = ["bash", str(processes.REPO / "ops" / "stop.sh")]
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(argv, env=self.env, capture_output=True, timeout=60, check=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(20)
        left = sorted(processes.pids_with_env("KODO_RUN_DIR", str(self.run_dir)))
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.running():
            self.proc.kill9()
        return left
