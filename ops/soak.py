"""The harness shared by the kill -9 proofs (`ops.crashdemo`, `ops.intentchaos`).

A proof runs rounds; each round starts an `ops.procfile.Stack` of Procfile processes, kills some of
them with kill -9, starts them again and checks SQL. What the proofs share lives here: the progress
printer, a database reader, the common command-line options and environment, the round plan, the run
loop (Ctrl-C and SIGTERM always stop every process) and the recovery summary.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg
import redis

from kodo.config import Settings
from kodo.db import migrate
from kodo.db.pool import Conn, connect
from kodo.dispatch import producer_app
from ops import processes


def progress(tag: str) -> Callable[[str], None]:
    """A progress printer: `[tag +  12.3s] message`, seconds counted from this call, flushed at once."""
    t0 = time.monotonic()

    def say(message: str) -> None:
        print(f"[{tag} +{time.monotonic() - t0:6.1f}s] {message}", flush=True)

    return say


def env_int(name: str, default: int) -> int:
    """An integer from the environment (for argparse defaults); unset or blank gives `default`."""
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


class SqlReader:
    """One lazily (re)opened connection for the proof's SQL oracles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: Conn | None = None

    def sql(self, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        """Run `query`; a connection that a Postgres restart cut is replaced and the query run again."""
        for attempt in (1, 2):
            if self._db is None or self._db.closed:
                self._db = connect(self.settings.database_url)
            try:
                return self._db.execute(query, params).fetchall()
            except psycopg.OperationalError:
                self._db.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

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


def bad_usage(args: argparse.Namespace, *more: tuple[bool, str]) -> bool:
    """Say the first usage problem, if any: --rounds < 1, --port = --admin-port, or one of `more`
    (problem, message)."""
    common = (
        (args.rounds < 1, "--rounds must be >= 1"),
        (args.port == args.admin_port, "--port and --admin-port must differ"),
    )
    for problem, message in (*common, *more):
        if problem:
            print(message, file=sys.stderr)
            return True
    return False


def stamp(prefix: str) -> str:
    """A name of this invocation's own (an application version: only its processes run its work)."""
    return f"{prefix}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"


def proof_env(
    args: argparse.Namespace, values: Mapping[str, str], drop: Iterable[str] = ()
) -> dict[str, str]:
    """The processes' environment: ours without armed fault points (nor `drop`), with PORT and
    ADMIN_PORT of the command line and `values`."""
    env = {k: v for k, v in os.environ.items() if k not in (*processes.FAULT_VARS, *drop)}
    env.update({"PORT": str(args.port), "ADMIN_PORT": str(args.admin_port), **values})
    return env


def _workers_on(broker_url: str) -> list[str]:
    """The Celery workers consuming `broker_url` (those that answer a ping within a second)."""
    app = producer_app(Settings.from_env({**os.environ, "KODO_BROKER_URL": broker_url}))
    try:
        replies = app.control.ping(timeout=1.0) or []
    except Exception:  # the broker does not answer: the proof's own start reports it
        return []
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)


def _holds_messages(broker_url: str) -> bool:
    """Whether a Redis db has a message queued (a non-empty list). What workers left behind is not
    counted: kombu's bindings, and the deliveries a killed worker held (`unacked`, restored to their
    queue only by a consumer of that db; for a proof's workers they are no-op deliveries of ids that
    are not theirs). Every db of a machine that ran kill -9 tests holds some of those."""
    client = redis.Redis.from_url(broker_url)
    try:
        lists = (key for key in client.scan_iter(count=500) if client.execute_command("TYPE", key) == b"list")
        return any(client.llen(key) for key in lists)
    finally:
        client.close()


def own_broker(env: dict[str, str], say: Callable[[str], None]) -> str | None:
    """Give the proof a broker no other worker consumes. A proof starts workers of an app version of
    its own; workers already on its broker (e.g. `mise run start`'s, of another version) would take
    its deliveries and drop them as no-ops, leaving its runs to the republish window. If they are
    there, the proof moves to the first idle Redis db: one nobody consumes with no message queued
    (what earlier runs left there, kombu's bindings and a killed worker's unacked deliveries, is no
    queued message). `env` is updated and the move
    said. Returns why it cannot run (no such db), or None."""
    url = Settings.from_env(env).broker_url
    workers = _workers_on(url)
    if not workers:
        return None
    base, _, db = url.rpartition("/")
    if url.startswith("redis://") and db.isdigit():
        for n in range(16):
            candidate = f"{base}/{n}"
            if n == int(db) or _holds_messages(candidate) or _workers_on(candidate):
                continue
            env["KODO_BROKER_URL"] = candidate
            say(f"workers already consume {url} ({', '.join(workers)}): this proof uses the idle {candidate}")
            return None
    return (
        f"workers already consume the broker {url} ({', '.join(workers)}) and no idle Redis db (no consumer, no queued message) is free: "
        "they would take this proof's deliveries. Stop them (mise run stop) or give the proof a broker "
        "of its own (KODO_BROKER_URL=redis://127.0.0.1:6379/<n>)"
    )


def setup(
    env: dict[str, str], log_dir: Path | None, prefix: str, say: Callable[[str], None]
) -> tuple[Settings, Path] | None:
    """What every proof does before it starts its processes: a broker of its own (`own_broker`), its
    log dir (`log_dir`, or a new one named after `prefix`) and the migrations. None (after printing
    why) when no broker is free."""
    problem = own_broker(env, say)
    if problem:
        print(problem, file=sys.stderr)
        return None
    settings = Settings.from_env(env)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"kodo-{prefix}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    return settings, log_dir


def plan_rounds(kind: str, choices: tuple[str, ...], rounds: int, seed: int) -> list[str]:
    """What each round does: `kind`, or for `random` a draw from `choices` seeded by `seed`."""
    if kind != "random":
        return [kind] * rounds
    rng = random.Random(seed)
    return [rng.choice(choices) for _ in range(rounds)]


@dataclass(frozen=True)
class Prepared:
    settings: Settings
    log_dir: Path
    plan: list[str]  # what each round does


def prepare(
    args: argparse.Namespace,
    env: dict[str, str],
    *,
    prefix: str,
    version: str,
    details: str,
    kind: tuple[str, str, Callable[[str, int, int], list[str]]],
    say: Callable[[str], None],
) -> Prepared | None:
    """Check the ports are free, make the log dir, migrate, plan the rounds (`kind`: the label, the
    option's value and the plan function) and say what will run. None (after saying why) on bad usage."""
    for port in (args.port, args.admin_port):
        if not processes.port_free(port):
            print(f"port {port} is in use; pick another with --port/--admin-port", file=sys.stderr)
            return None
    ready = setup(env, args.log_dir, prefix, say)
    if ready is None:
        return None
    settings, log_dir = ready
    label, value, plan_of = kind
    seed = int(args.seed) if args.seed is not None else int(time.time()) % 100_000
    say(
        f"database {settings.database_url.rsplit('/', 1)[-1]}, broker {settings.broker_url}, "
        f"app version {version}, {details}, rounds={args.rounds}, {label} {value}"
        + (f" (seed {seed})" if value == "random" else "")
        + f", logs in {log_dir}; migrations applied"
    )
    return Prepared(settings, log_dir, plan_of(value, args.rounds, seed))


class Round(Protocol):
    @property
    def converged(self) -> bool: ...

    recovery_s: float | None
    restart_s: float | None

    def line(self, total: int) -> str: ...


R = TypeVar("R", bound=Round)


R_co = TypeVar("R_co", bound=Round, covariant=True)


class Proof(Protocol[R_co]):
    def run_round(self, n: int, total: int, what: str) -> R_co: ...

    def close(self) -> None: ...


def recovery_text(recovery_s: float | None, restart_s: float | None) -> str:
    """`12.34s (worker_back=3.21s)`, as a round's line shows its recovery."""
    text = "n/a" if recovery_s is None else f"{recovery_s:.2f}s"
    return text if restart_s is None else f"{text} (worker_back={restart_s:.2f}s)"


def run_proof(
    proof: Proof[R],
    plan: list[str],
    say: Callable[[str], None],
    summary: Callable[[list[R]], tuple[str, bool]],
) -> int:
    """Run the rounds, print the summary; the exit status: 0 if it passed, 1 if not, 130 if interrupted."""
    try:
        results = run_rounds(plan, proof.run_round, say)
    finally:
        proof.close()
    if results is None:
        return 130
    text, ok = summary(results)
    print(text, flush=True)
    return 0 if ok else 1


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
