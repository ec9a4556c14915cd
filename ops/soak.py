"""The harness shared by the kill -9 proofs (`ops.crashdemo`, `ops.intentchaos`); the e2e tests'
`LiveSystem` runs its processes through the same `Stack`.

A proof runs rounds; each round starts a `Stack` of Procfile processes, kills some of them with
kill -9, starts them again and checks SQL. What the proofs share lives here: the process stack, a
database reader, the common command-line options, the round plan, the run loop (Ctrl-C and SIGTERM
always stop every process) and the recovery summary.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kodo.config import Settings
from kodo.db import migrate
from kodo.db.pool import Conn, connect
from ops import processes
from ops.processes import Proc, env_int

READY_S = 60.0
STOP_ORDER = ("sbx", "intent", "api", "reconciler")


class Stack:
    """The processes of one round, by Procfile name: reconciler (+ admin), api, intent, sbx."""

    def __init__(
        self,
        env: Mapping[str, str],
        port: int,
        admin_port: int,
        log_dir: Path,
        tag: str,
        warn: Callable[[str], None],
    ) -> None:
        self.env = dict(env)
        self.port = port
        self.admin_port = admin_port
        self.log_dir = log_dir
        self.tag = tag
        self.warn = warn
        self.procs: dict[str, Proc] = {}
        self.starts: dict[str, int] = {}

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _log(self, name: str) -> Path:
        self.starts[name] = self.starts.get(name, 0) + 1
        return self.log_dir / f"{self.tag}-{name}-{self.starts[name]}.log"

    def _spawn(self, name: str, env: Mapping[str, str], faults: str | None, fault_file: Path | None) -> Proc:
        if name == "reconciler":
            return processes.start_reconciler(self.admin_port, env, self._log(name))
        if name == "api":
            return processes.start_api(self.port, env, self._log(name))
        if name == "intent":
            return processes.start_intent_worker(env, self._log(name), faults=faults, fault_file=fault_file)
        if name == "sbx":
            return processes.start_sbx_worker(env, self._log(name))
        raise ValueError(f"unknown process {name!r}")

    def _wait_ready(self, name: str) -> None:
        proc = self.procs[name]
        if name == "api":
            processes.wait_healthy(f"{self.api_url}/healthz", proc, READY_S)
        elif name == "reconciler":
            processes.wait_healthy(f"http://127.0.0.1:{self.admin_port}/healthz", proc, READY_S)
        else:
            proc.wait_log("ready.", READY_S)

    def start(
        self,
        names: tuple[str, ...],
        *,
        extra_env: Mapping[str, Mapping[str, str]] | None = None,
        faults: str | None = None,
        fault_file: Path | None = None,
    ) -> int:
        """Start the named processes at once (`extra_env` per name; `faults` arm the intent worker),
        then wait until each serves; returns then (epoch ms)."""
        for name in names:
            env = {**self.env, **(extra_env or {}).get(name, {})}
            self.procs[name] = self._spawn(name, env, faults, fault_file)
        for name in names:
            self._wait_ready(name)
        return processes.now_ms()

    def kill9(self, names: tuple[str, ...]) -> int:
        """kill -9 the named processes' whole groups (the first named first); returns when none of
        them runs, with the time of the first kill (epoch ms)."""
        killed_at = [self.procs[name].kill9() for name in names]
        for name in names:
            if self.procs[name].live_pids():
                raise RuntimeError(f"{name} still has live processes {self.procs[name].live_pids()}")
        return killed_at[0]

    def stop(self) -> None:
        procs = [self.procs.get(name) for name in STOP_ORDER]
        self.procs.clear()
        processes.stop_all(procs, 5.0, self.warn)

    def tails(self) -> str:
        return "\n".join(f"--- {proc.name} ({proc.log}) ---\n{proc.tail(15)}" for proc in self.procs.values())


class SqlReader:
    """One lazily (re)opened connection for the proof's SQL oracles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: Conn | None = None

    def sql(self, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        if self._db is None or self._db.closed:
            self._db = connect(self.settings.database_url)
        return self._db.execute(query, params).fetchall()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def add_common_args(p: argparse.ArgumentParser, *, port: int, admin_port: int, max_median_s: float) -> None:
    """--seed, --port, --admin-port, --max-median-recovery, --log-dir."""
    p.add_argument("--seed", type=int, default=None, help="seed of the random plan (default: time)")
    p.add_argument(
        "--port", type=int, default=env_int("PORT", port), help=f"API port (default env PORT or {port})"
    )
    p.add_argument(
        "--admin-port",
        type=int,
        default=env_int("ADMIN_PORT", admin_port),
        help=f"admin/reconciler port (default env ADMIN_PORT or {admin_port})",
    )
    p.add_argument(
        "--max-median-recovery",
        type=float,
        default=max_median_s,
        help=f"fail when the median recovery reaches this many seconds (default {max_median_s:g})",
    )
    p.add_argument("--log-dir", type=Path, default=None, help="where process logs go (default: a temp dir)")


def plan_rounds(kind: str, choices: tuple[str, ...], rounds: int, seed: int) -> list[str]:
    """What each round does: `kind`, or for `random` a draw from `choices` seeded by `seed`."""
    if kind != "random":
        return [kind] * rounds
    rng = random.Random(seed)
    return [rng.choice(choices) for _ in range(rounds)]


def prepare(args: argparse.Namespace, settings: Settings, prefix: str) -> Path | None:
    """Check the ports are free, make the log dir, migrate. None (after saying why) on bad usage."""
    for port in (args.port, args.admin_port):
        if not processes.port_free(port):
            print(f"port {port} is in use; pick another with --port/--admin-port", file=sys.stderr)
            return None
    log_dir: Path = args.log_dir or Path(tempfile.mkdtemp(prefix=f"kodo-{prefix}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    return log_dir


class Round(Protocol):
    @property
    def converged(self) -> bool: ...

    recovery_s: float | None
    restart_s: float | None

    def line(self, total: int) -> str: ...


R = TypeVar("R", bound=Round)


def run_rounds(
    plan: list[str], run_round: Callable[[int, int, str], R], say: Callable[[str], None]
) -> list[R] | None:
    """Run every round, printing its line; None when interrupted (every process is stopped by then:
    Ctrl-C and SIGTERM unwind through each round's `finally`)."""
    results: list[R] = []
    try:
        with processes.signals_interrupt():
            for n, what in enumerate(plan, start=1):
                result = run_round(n, len(plan), what)
                results.append(result)
                print(result.line(len(plan)), flush=True)
    except KeyboardInterrupt:
        say(f"interrupted after {len(results)} round(s); processes stopped")
        return None
    return results


def summarize(
    results: list[R], plan: list[str], label: str, max_median_s: float, extra: str = ""
) -> tuple[str, bool]:
    """The summary line: rounds converged, recovery median/max, restart median, what each round
    did (`label`), and the verdict (every round converged and median recovery < `max_median_s`)."""
    converged = sum(1 for r in results if r.converged)
    recoveries = [r.recovery_s for r in results if r.recovery_s is not None]
    median = statistics.median(recoveries) if recoveries else None
    worst = max(recoveries) if recoveries else None
    restarts = [r.restart_s for r in results if r.restart_s is not None]
    done = plan[: len(results)]
    kinds = {k: done.count(k) for k in dict.fromkeys(done)}
    ok = converged == len(results) and median is not None and median < max_median_s
    text = (
        f"summary: rounds={len(results)} converged={converged}/{len(results)} "
        f"recovery_median={'n/a' if median is None else f'{median:.2f}s'} "
        f"recovery_max={'n/a' if worst is None else f'{worst:.2f}s'} "
        f"worker_back_median={f'{statistics.median(restarts):.2f}s' if restarts else 'n/a'} "
        + (f"{extra} " if extra else "")
        + f"{label}={','.join(f'{k}:{v}' for k, v in kinds.items())} "
        f"-> {'PASS' if ok else f'FAIL (needs every round converged and median recovery < {max_median_s:g}s)'}"
    )
    return text, ok
