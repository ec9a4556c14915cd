"""Child processes: start them, watch them, kill -9 them, stop them; the one place ops/ does that.

Every ops tool that runs a process goes through here: the kill -9 proofs (`ops.crashdemo`,
`ops.intentchaos`, their `ops.procfile.Stack`), the engine benchmark (`ops.bench`), the chaos and e2e
tests, and `ops/stop.sh` (through `ops.pidfiles`). `mise run start` leaves keeping its processes alive
to supervisord (`ops.procfile`), whose event listener and `ops/stop.sh` clean up process groups here.

Every process starts in its own session (so its own process group): `kill9` takes down the whole group
at once, e.g. a Celery worker's main process and all its pool children, or a gunicorn master and its
workers, the way a power cut or the OOM killer would. What ops/ reads about processes and the machine
(process groups, zombies, CPU times, hypervisor steal, this process's sockets) comes from `psutil`,
here and nowhere else.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's bin: celery and gunicorn live next to python

# Variables a faulted process needs; they are stripped from every other process's environment.
FAULT_VARS = ("KODO_FAULTS", "KODO_FAULT_FILE")


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    interval: float = 0.02,
    detail: Callable[[], str] | None = None,
) -> None:
    """Call `check` every `interval` s until it is true; TimeoutError naming `what` (and `detail()`,
    when given) after `timeout` s. An exception from `check` ends the wait at once."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            more = f":\n{detail()}" if detail is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{more}")
        time.sleep(interval)


# ---- signals: unwind through the `finally` blocks that stop what a script started ------------------


@contextlib.contextmanager
def signals_raise(make: Callable[[int], BaseException], *signums: int) -> Iterator[None]:
    """Inside the block each of `signums` raises `make(signum)`; the previous handlers come back on exit."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise make(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signums}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def signals_interrupt() -> contextlib.AbstractContextManager[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (SIGINT explicitly too: a shell starts background
    jobs with SIGINT ignored)."""
    return signals_raise(lambda _: KeyboardInterrupt(), signal.SIGINT, signal.SIGTERM)


def signals_exit() -> contextlib.AbstractContextManager[None]:
    """SIGTERM and SIGHUP raise SystemExit(128 + signal), the shell's exit status for it."""
    return signals_raise(lambda signum: SystemExit(128 + signum), signal.SIGTERM, signal.SIGHUP)


# ---- what runs: process groups, zombies, CPU times, sockets (psutil) -------------------------------

_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:  # exited while we looked
        return None


def live_group_pids(pgid: int) -> list[int]:
    """Processes of process group `pgid` that still run (zombies, already dead, are left out)."""
    procs = psutil.process_iter(["status"])
    return [p.pid for p in procs if p.info["status"] not in _GONE and _pgid(p.pid) == pgid]


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as dead)."""
    try:
        return psutil.Process(pid).status() not in _GONE
    except psutil.NoSuchProcess:
        return False


def cpu_by_process() -> dict[int, tuple[str, int, float]]:
    """pid -> (name, process group, CPU seconds: user + system) of every process that can be read."""
    out: dict[int, tuple[str, int, float]] = {}
    for p in psutil.process_iter(["name", "cpu_times"]):
        pgid, times = _pgid(p.pid), p.info["cpu_times"]
        if pgid is not None and times is not None:
            out[p.pid] = (str(p.info["name"]), pgid, times.user + times.system)
    return out


def cpu_idle_steal() -> tuple[float, float]:
    """Seconds of (idle + iowait, steal) summed over all CPUs since boot."""
    times = psutil.cpu_times()
    return times.idle + times.iowait, times.steal


def started_at(pid: int) -> float | None:
    """When `pid` started (epoch s), None if it does not run."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def terminate_tree(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM `pid` (not a process we started: e.g. one a pid file names); after `timeout` s SIGKILL
    it if it still runs, and whatever it had started either way, with every process group one of
    those leads (a supervisor's programs: a Celery worker and the pool children it forked since).
    True if it ended within `timeout`."""
    try:
        proc = psutil.Process(pid)
        tree = [proc, *proc.children(recursive=True)]
        proc.terminate()
    except psutil.NoSuchProcess:
        return True
    groups = {p.pid for p in tree[1:] if _pgid(p.pid) == p.pid}
    asked = time.time()
    ended = not psutil.wait_procs([proc], timeout)[1]
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):  # psutil also refuses a pid reused since
            p.kill()
    for pgid in groups:
        kill_group(pgid, asked)
    return ended


def kill_group(pgid: int, started_before: float) -> list[int]:
    """SIGKILL what still runs of process group `pgid` and started before `started_before` (epoch s;
    a process started since, which can only have that group number if the group emptied and the
    number was reused, is left alone); returns the pids killed."""
    killed = []
    for pid in live_group_pids(pgid):
        with contextlib.suppress(psutil.NoSuchProcess):
            p = psutil.Process(pid)
            if p.create_time() <= started_before:
                p.kill()
                killed.append(pid)
    return killed


def process_tree(pid: int) -> dict[int, tuple[int, str]]:
    """`pid` and every process under it: pid -> (parent pid, command line); empty if it does not run."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out: dict[int, tuple[int, str]] = {}
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if p.status() not in _GONE:
                out[p.pid] = (p.ppid(), " ".join(p.cmdline()))
    return out


def pids_with_env(var: str, value: str) -> list[int]:
    """Running processes whose environment has `var=value` (whatever started them: orphans too)."""
    found = []
    for p in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            if p.info["status"] not in _GONE and p.environ().get(var) == value:
                found.append(p.pid)
    return found


def own_tcp_ports() -> set[int]:
    """Local TCP ports of this process's sockets (to tell our broker connections from others')."""
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.laddr}


# ---- one started process ---------------------------------------------------------------------------


class ProcessExitedError(RuntimeError):
    """A process ended while it was expected to run (the message ends with its log's tail)."""


@dataclass(eq=False)
class Proc:
    """One started process (and its process group, which it leads)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path  # its output (os.devnull when it goes to ours: no log to read)
    killed_at_ms: int | None = field(default=None)
    fault_file: Path | None = None  # where it reports reaching an armed fault point (KODO_FAULT_FILE)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def pgid(self) -> int:
        return self.popen.pid  # started in a new session: it leads its own process group

    def running(self) -> bool:
        return self.popen.poll() is None

    def ensure_running(self, context: str = "") -> None:
        """Raise ProcessExitedError, with the tail of the log, unless the process still runs."""
        if not self.running():
            raise ProcessExitedError(f"{self.name} exited {self.popen.returncode}{context}:\n{self.tail()}")

    def live_pids(self) -> list[int]:
        """Every still-running process of this group (the leader and whatever it forked)."""
        return live_group_pids(self.pgid)

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def kill9(self, timeout: float = 10.0) -> int:
        """SIGKILL the whole process group; return once none of it runs. Returns the kill time (ms)."""
        killed_at = now_ms()
        with contextlib.suppress(ProcessLookupError):  # ProcessLookupError: the group is already gone
            os.killpg(self.pgid, signal.SIGKILL)
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
                os.killpg(self.pgid, signal.SIGTERM)
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

        def seen() -> bool:
            if needle in self.text():
                return True
            self.ensure_running()
            return False

        wait_until(f"{needle!r} from {self.name}", seen, timeout, 0.05, self.tail)

    def faults_reached(self) -> list[str]:
        """The armed fault points it reported reaching, one `point@name pid=N` line each."""
        if self.fault_file is None or not self.fault_file.exists():
            return []
        return self.fault_file.read_text().strip().splitlines()

    def wait_fault(self, count: int = 1, timeout: float = 30.0) -> str:
        """Block until `count` armed fault points were reached (it now hangs there); returns them."""

        def reached() -> bool:
            if len(self.faults_reached()) >= count:
                return True
            self.ensure_running(" before its fault point")
            return False

        wait_until(f"{count} fault point(s) in {self.name}", reached, timeout, 0.01, self.tail)
        return "\n".join(self.faults_reached())

    def fault_pids(self) -> list[int]:
        """The pids that reported reaching a fault point (the pool children now hanging there)."""
        return [int(p) for p in re.findall(r"pid=(\d+)", "\n".join(self.faults_reached()))]


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


def spawn(name: str, argv: list[str], env: Mapping[str, str], log: Path | None) -> Proc:
    """Start `argv` in its own session, output (stdout and stderr) to `log` (truncated first; None:
    to ours). Its fault file is the environment's KODO_FAULT_FILE."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") if log is not None else contextlib.nullcontext() as out:
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    fault_file = env.get("KODO_FAULT_FILE")
    return Proc(name, popen, log or Path(os.devnull), fault_file=Path(fault_file) if fault_file else None)


def run_foreground(name: str, argv: list[str], env: Mapping[str, str]) -> int:
    """Run `argv` to its end in its own session, its output to ours; returns its exit status. If we
    are interrupted first (an exception, Ctrl-C), its whole group is killed -9 before we go on."""
    proc = spawn(name, argv, env, None)
    try:
        return proc.wait()
    finally:
        if proc.running():
            proc.kill9()


class Supervisor:
    """The processes one run starts, each logging to `<log_dir>/<name>.log`; `stop_all()` (from a
    `finally`) stops whichever are still running, the last started first."""

    def __init__(self, log_dir: Path, warn: Callable[[str], None] | None = None) -> None:
        self.log_dir = log_dir
        self.warn = warn
        self.procs: list[Proc] = []

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> Proc:
        proc = spawn(name, argv, env, self.log_dir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def stop(self, *procs: Proc, timeout: float = 10.0) -> None:
        stop_all(procs, timeout, self.warn)
        self.procs = [p for p in self.procs if all(p is not q for q in procs)]

    def stop_all(self, timeout: float = 10.0) -> None:
        self.stop(*reversed(self.procs), timeout=timeout)


# ---- ports ---------------------------------------------------------------------------------------


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
