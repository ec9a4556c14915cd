"""Real kodo processes as subprocesses: start them, wait until they serve, kill -9 them, stop them.

Used by the crash demo (`python -m ops.crashdemo`), the intent chaos proof (`python -m
ops.intentchaos`) and by the chaos and e2e tests. Every process starts in its own session (so its own
process group): `kill9` takes down the whole group at once, e.g. a Celery worker's main process and
all its pool children, or a gunicorn master and its workers, the way a power cut or the OOM killer
would.

The API, worker and reconciler are started with the command lines of the `Procfile` (run through
`sh -c`, as honcho does), so what the crash demo proves is what `mise run start` deploys.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROCFILE = REPO / "Procfile"
BIN = Path(sys.executable).parent  # the virtualenv's bin: celery and gunicorn live next to python

# Variables a faulted process needs; they are stripped from every other process's environment.
FAULT_VARS = ("KODO_FAULTS", "KODO_FAULT_FILE")


def now_ms() -> int:
    return int(time.time() * 1000)


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


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.02) -> None:
    """Call `check` every `interval` s until it is true; TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM raise KeyboardInterrupt, so both unwind through the
    `finally` blocks that stop the processes a script started (SIGINT explicitly too: a shell starts
    background jobs with SIGINT ignored). The previous handlers come back on exit."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def live_group_pids(pgid: int) -> list[int]:
    """Processes of process group `pgid` that still run (zombies, already dead, are left out)."""
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        # after the command: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@dataclass
class Proc:
    """One started process (and its process group, which it leads)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    killed_at_ms: int | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def live_pids(self) -> list[int]:
        """Every still-running process of this group (the leader and whatever it forked)."""
        return live_group_pids(self.popen.pid)

    def kill9(self, timeout: float = 10.0) -> int:
        """SIGKILL the whole process group; return once none of it runs. Returns the kill time (ms)."""
        killed_at = now_ms()
        with contextlib.suppress(ProcessLookupError):  # ProcessLookupError: the group is already gone
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout)
        deadline = time.monotonic() + timeout
        while self.live_pids():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: processes {self.live_pids()} survived SIGKILL")
            time.sleep(0.01)
        self.killed_at_ms = killed_at
        return killed_at

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group (graceful shutdown), then SIGKILL whatever is left after `timeout`."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        if self.live_pids() or self.running():
            self.kill9()
        else:
            self.popen.wait()

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def wait_log(self, needle: str, timeout: float = 30.0) -> None:
        """Block until `needle` appears in the process's output (e.g. Celery's "ready.")."""
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if not self.running():
                raise RuntimeError(f"{self.name} exited {self.popen.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {needle!r} after {timeout}s:\n{self.tail()}")
            time.sleep(0.05)


def stop_all(
    procs: Iterable[Proc | None], timeout: float = 5.0, warn: Callable[[str], None] | None = None
) -> None:
    """Stop each process in turn (SIGTERM, then SIGKILL after `timeout`); an error stopping one is
    reported through `warn` and the others are still stopped. An interrupt in the middle (Ctrl-C, or
    SIGTERM turned into KeyboardInterrupt) kill -9s every process not yet stopped before it
    propagates, so no process outlives the script that started it."""
    pending = [p for p in procs if p is not None]
    while pending:
        proc = pending[0]
        try:
            proc.stop(timeout)
        except Exception as exc:  # cleanup must go on for the others
            if warn is not None:
                warn(f"warning: stopping {proc.name}: {exc!r}")
        except BaseException:
            for left in pending:
                with contextlib.suppress(Exception):
                    left.kill9()
            raise
        pending.pop(0)


def child_env(base: Mapping[str, str], overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """`base` plus `overrides` (None removes a variable), with the repository on PYTHONPATH."""
    env = dict(base)
    for var in FAULT_VARS:
        env.pop(var, None)
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def spawn(name: str, argv: list[str], env: Mapping[str, str], log: Path) -> Proc:
    """Start `argv` in its own session, output (stdout and stderr) to `log` (truncated first)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=dict(env),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, popen, log)


# ---- the Procfile's processes ----------------------------------------------------------------------


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


def start_api(port: int, env: Mapping[str, str], log: Path, name: str = "api") -> Proc:
    """The kodo API (gunicorn, Procfile `api:`) on 127.0.0.1:`port`."""
    return spawn(name, procfile_argv("api"), child_env(env, {"KODO_API_PORT": str(port)}), log)


def start_intent_worker(
    env: Mapping[str, str],
    log: Path,
    name: str = "intent",
    faults: str | None = None,
    fault_file: Path | None = None,
) -> Proc:
    """A Celery worker on intentQ,controlQ (Procfile `intent:`), optionally with armed fault points."""
    overrides: dict[str, str | None] = {}
    if faults:
        overrides["KODO_FAULTS"] = faults
        if fault_file is not None:
            overrides["KODO_FAULT_FILE"] = str(fault_file)
    return spawn(name, procfile_argv("intent"), child_env(env, overrides), log)


def start_sbx_worker(env: Mapping[str, str], log: Path, name: str = "sbx") -> Proc:
    """A Celery worker on sbxQ, the fan-out children (Procfile `sbx:`)."""
    return spawn(name, procfile_argv("sbx"), child_env(env), log)


def start_reconciler(admin_port: int, env: Mapping[str, str], log: Path, name: str = "reconciler") -> Proc:
    """The reconciler with the admin server on `admin_port` (Procfile `reconciler:`)."""
    return spawn(name, procfile_argv("reconciler"), child_env(env, {"KODO_ADMIN_PORT": str(admin_port)}), log)


def celery_worker_argv(queues: str, concurrency: int, nodename: str, *, fast_start: bool = True) -> list[str]:
    """A Celery worker command line (tests use it; `fast_start` skips mingle and gossip)."""
    argv = [
        str(BIN / "celery"),
        "-A",
        "kodo",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-n",
        nodename,
        "--loglevel",
        "INFO",
    ]
    if fast_start:
        argv += ["--without-mingle", "--without-gossip"]
    return argv


# ---- readiness -----------------------------------------------------------------------------------


def http_json(method: str, url: str, timeout: float = 5.0, json_body: Any = None) -> tuple[int, Any]:
    """One HTTP request; returns (status, decoded JSON body or None).

    `json_body`, when given, is sent as JSON (`content-type: application/json`, as the runbooks' curl
    calls send it); a POST without one sends an empty body.
    """
    if json_body is not None:
        req = urllib.request.Request(
            url,
            method=method,
            data=json.dumps(json_body).encode(),
            headers={"content-type": "application/json"},
        )
    else:
        req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


def wait_healthy(url: str, proc: Proc | None = None, timeout: float = 30.0) -> None:
    """Poll `url` (a /healthz) until it answers 200 {"ok": true}. Fails fast if `proc` exits."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.running():
            raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.tail()}")
        try:
            status, body = http_json("GET", url, timeout=2.0)
            if status == 200 and isinstance(body, dict) and body.get("ok") is True:
                return
            last = f"{status} {body}"
        except (OSError, urllib.error.URLError) as exc:
            last = repr(exc)
        time.sleep(0.1)
    tail = f":\n{proc.tail()}" if proc is not None else ""
    raise TimeoutError(f"{url} not healthy after {timeout}s (last: {last}){tail}")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on host:port (so a health check cannot hit someone else's server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
