"""kodo's own processes as the `Procfile` runs them, and `Stack`: a set of them, started and killed by name.

The API, the workers and the reconciler are started with the command lines of the `Procfile` (run
through `sh -c`, as honcho does), so what the kill -9 proofs and the e2e tests exercise is what
`mise run start` deploys. The process mechanics are `ops.processes`'.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ops import processes
from ops.http_client import wait_healthy
from ops.processes import Proc

PROCFILE = processes.REPO / "Procfile"
READY_S = 60.0
STOP_ORDER = ("sbx", "intent", "api", "reconciler")


def procfile_line(process: str, procfile: Path = PROCFILE) -> str:
    """The command of one Procfile entry (`api`, `intent`, `sbx`, `reconciler`, `flower`)."""
    for raw in procfile.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or ":" not in line:
            continue
        name, _, command = line.partition(":")
        if name.strip() == process:
            return command.strip()
    raise KeyError(f"no {process!r} process in {procfile}")


def procfile_argv(process: str) -> list[str]:
    """Run a Procfile entry as honcho does (`sh -c`), `exec`ed so the command leads its group."""
    return ["/bin/sh", "-c", "exec " + procfile_line(process)]


def celery_worker_argv(
    queues: str,
    concurrency: int,
    nodename: str,
    *,
    app: str = "kodo",
    loglevel: str = "INFO",
    fast_start: bool = True,
) -> list[str]:
    """A Celery worker command line outside the Procfile (tests, the benchmark); `fast_start` skips
    mingle and gossip."""
    argv = [str(processes.BIN / "celery"), "-A", app, "worker", "-Q", queues, "-c", str(concurrency)]
    argv += ["-n", nodename, "--loglevel", loglevel]
    if fast_start:
        argv += ["--without-mingle", "--without-gossip"]
    return argv


class Stack:
    """Procfile processes by name: reconciler (+ admin on `admin_port`), api (on `port`), intent, sbx."""

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

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def _spawn(self, name: str, env: Mapping[str, str], faults: str | None, fault_file: Path | None) -> Proc:
        overrides: dict[str, str | None] = {}
        if name == "api":
            overrides["KODO_API_PORT"] = str(self.port)
        elif name == "reconciler":
            overrides["KODO_ADMIN_PORT"] = str(self.admin_port)
        elif name == "intent" and faults:  # armed fault points (only the intent worker has them)
            overrides["KODO_FAULTS"] = faults
            if fault_file is not None:
                overrides["KODO_FAULT_FILE"] = str(fault_file)
        elif name not in ("intent", "sbx"):
            raise ValueError(f"unknown process {name!r}")
        self.starts[name] = self.starts.get(name, 0) + 1
        log = self.log_dir / f"{self.tag}-{name}-{self.starts[name]}.log"
        return processes.spawn(name, procfile_argv(name), processes.child_env(env, overrides), log)

    def _wait_ready(self, name: str) -> None:
        proc = self.procs[name]
        if name == "api":
            wait_healthy(f"{self.api_url}/healthz", proc, READY_S)
        elif name == "reconciler":
            wait_healthy(f"{self.admin_url}/healthz", proc, READY_S)
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
        return killed_at[0]

    def stop(self) -> None:
        procs = [self.procs.get(name) for name in STOP_ORDER]
        self.procs.clear()
        processes.stop_all(procs, 5.0, self.warn)

    def tails(self) -> str:
        return "\n".join(f"--- {proc.name} ({proc.log}) ---\n{proc.tail(15)}" for proc in self.procs.values())
