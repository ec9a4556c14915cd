"""kodo's own processes as the `Procfile` runs them: `Stack`, a set of them started and killed by
name (the kill -9 proofs, the e2e tests), and the supervisord that `mise run start` runs them under.

    python -m ops.procfile supervise ROLE [NAME...]   write .tmp/supervisord.ROLE.conf, become supervisord
    python -m ops.procfile status                     supervisorctl status of every running process set
    python -m ops.procfile listen                     (supervisord's event listener: output, leftovers)

Both run the command lines of the `Procfile` (through `sh -c`), so what the proofs and the e2e tests
exercise is what `mise run start` deploys. The process mechanics are `ops.processes`'.

supervisord keeps each program alive: a program that exits (kill -9, a Celery worker giving up on a
lost Redis connection) is started again at once and never stops its siblings; one that exits within
`startsecs` of its start is retried after 1 s, 2 s, 3 s, ... (supervisord's own linear backoff) up to
`startretries` times. Its state changes (`exited: intent (terminated by SIGKILL; not expected)`,
`spawned: 'intent' with pid N`, `success: intent entered RUNNING state`) go to the terminal and to
`.tmp/supervisord.ROLE.log`. Each program's output goes to `.tmp/logs/ROLE/NAME.log` and, through the
event listener (`listen`), to the terminal as `HH:MM:SS name | line`, as honcho printed it. The
listener also SIGKILLs what is left of an exited program's process group (a gunicorn worker still
holding the port after its master's kill -9), so the new one can bind it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

from ops import pidfiles, processes
from ops.http_client import wait_healthy
from ops.processes import Proc

PROCFILE = processes.REPO / "Procfile"
READY_S = 60.0
STOP_ORDER = ("sbx", "intent", "api", "reconciler")


def procfile_entries(procfile: Path = PROCFILE) -> dict[str, str]:
    """Every Procfile entry, name -> command, in file order (the one parser of the Procfile)."""
    entries: dict[str, str] = {}
    for raw in procfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, _, command = line.partition(":")
        entries.setdefault(name.strip(), command.strip())
    return entries


def procfile_line(process: str, procfile: Path = PROCFILE) -> str:
    """The command of one Procfile entry (`api`, `intent`, `sbx`, `reconciler`, `flower`)."""
    try:
        return procfile_entries(procfile)[process]
    except KeyError:
        raise KeyError(f"no {process!r} process in {procfile}") from None


def procfile_argv(process: str, procfile: Path = PROCFILE) -> list[str]:
    """Run a Procfile entry through `sh -c` (so `${VAR:-default}` expands as in a shell), `exec`ed so
    the command itself is the process (it leads its group; a kill -9 of it is a kill of the program)."""
    return ["/bin/sh", "-c", "exec " + procfile_line(process, procfile)]


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


# ---- supervisord: what `mise run start` runs the Procfile under ------------------------------------

GROUP = "kodo"  # one group: supervisord stops the programs of a group at once, groups one by one
LISTENER = "output"
# Up this long = started; an earlier exit is a failed start, retried with backoff. Not 1 s: a program
# that cannot import its code (gunicorn, Celery) takes 1-3 s here to die, and one that lived past
# startsecs is restarted at once, every time, with no backoff at all.
START_SECS = 5
START_RETRIES = 1000  # failed starts in a row before FATAL: 1 s, 2 s, ... apart (about 6 days)
STOP_WAIT_S = 10  # SIGTERM to the program's group, then SIGKILL after this (Celery's warm shutdown)
LOG_BYTES = "10MB"
SOCKET_MAX = 100  # a unix socket path longer than ~107 bytes cannot be bound
ConfValue = str | int | Path  # a bool is written true/false


@dataclass(frozen=True)
class SupervisordFiles:
    """What the supervisord of one process set (`role`) keeps in the run directory (`.tmp`)."""

    role: str
    run_dir: Path

    @property
    def conf(self) -> Path:
        return self.run_dir / f"supervisord.{self.role}.conf"

    @property
    def log(self) -> Path:
        return self.run_dir / f"supervisord.{self.role}.log"

    @property
    def socket(self) -> Path:
        """supervisorctl's socket: beside the rest, unless that path is too long to bind (a deep
        KODO_RUN_DIR), then in the temporary directory under a name of its own."""
        path = self.run_dir / f"supervisord.{self.role}.sock"
        if len(str(path)) <= SOCKET_MAX:
            return path
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"kodo-supervisord-{digest}.sock"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs" / self.role

    def program_log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"


def _section(title: str, values: Mapping[str, ConfValue]) -> str:
    lines = [f"[{title}]"]
    for key, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if "\n" in text or re.search(r"\s[;#]", text):  # a newline, or what the parser takes for a comment
            raise ValueError(f"[{title}] {key}: cannot be written to a supervisord configuration: {text!r}")
        lines.append(f"{key}={text.replace('%', '%%')}")  # supervisord expands %(name)s in values
    return "\n".join(lines) + "\n"


def supervisord_conf(
    role: str, names: Iterable[str] = (), run_dir: Path | None = None, procfile: Path = PROCFILE
) -> str:
    """supervisord's configuration for the Procfile entries `names` (none: all of them), each run as
    `procfile_argv` runs it, kept alive and stopped with its whole process group."""
    files = SupervisordFiles(role, run_dir or pidfiles.RUN_DIR)
    entries = procfile_entries(procfile)
    chosen = list(dict.fromkeys(names)) or list(entries)
    unknown = [name for name in chosen if name not in entries]
    if unknown:
        raise KeyError(
            f"no {', '.join(map(repr, unknown))} process in {procfile} (it has {', '.join(entries)})"
        )
    supervisord: dict[str, ConfValue] = {
        "nodaemon": True,  # in the foreground: Ctrl-C (or ops/stop.sh's SIGTERM) stops every program
        "logfile": files.log,  # and the terminal (nodaemon)
        "logfile_maxbytes": LOG_BYTES,
        "logfile_backups": 3,
        "loglevel": "info",
        "pidfile": pidfiles.pidfile(role, files.run_dir),  # the pid ops/stop.sh stops
        "childlogdir": files.log_dir,
        "directory": processes.REPO,
    }
    if os.geteuid() == 0:
        supervisord["user"] = "root"  # as started; without it supervisord logs a CRIT about root
    sections = [
        _section("supervisord", supervisord),
        _section("unix_http_server", {"file": files.socket, "chmod": "0700"}),
        _section("supervisorctl", {"serverurl": f"unix://{files.socket}"}),
        _section(
            "rpcinterface:supervisor",
            {"supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"},
        ),
        _section(f"group:{GROUP}", {"programs": ",".join(chosen)}),
        _section(
            f"eventlistener:{LISTENER}",
            {
                "command": shlex.join([sys.executable, "-m", "ops.procfile", "listen"]),
                "directory": processes.REPO,
                "events": "PROCESS_LOG,PROCESS_STATE_EXITED",
                "buffer_size": 10000,
                "autorestart": True,
                "startretries": START_RETRIES,
                "stdout_logfile": "NONE",  # its stdout is supervisord's event protocol
                "stderr_logfile": "/dev/stdout",  # what it prints: the programs' output, prefixed
                "stderr_logfile_maxbytes": 0,
            },
        ),
    ]
    for name in chosen:
        values: dict[str, ConfValue] = {
            "command": shlex.join(procfile_argv(name, procfile)),
            "directory": processes.REPO,
            "autostart": True,
            "autorestart": True,
            "startsecs": START_SECS,
            "startretries": START_RETRIES,
            "stopsignal": "TERM",
            "stopwaitsecs": STOP_WAIT_S,
            "stopasgroup": True,
            "killasgroup": True,
            "redirect_stderr": True,
            "stdout_logfile": files.program_log(name),
            "stdout_logfile_maxbytes": LOG_BYTES,
            "stdout_logfile_backups": 3,
            "stdout_events_enabled": True,  # to the listener, which prints it prefixed
            "environment": 'PYTHONUNBUFFERED="1"',
        }
        sections.append(_section(f"program:{name}", values))
    header = (
        f"; generated by ops/procfile.py from {procfile.name} for `{role}`: edit the Procfile, not this\n"
    )
    return header + "\n".join(sections)


def _append_only(fd: int) -> None:
    """Make `fd` append if it is a regular file (`mise run start > kodo.log`): supervisord writes its
    own log to fd 1 and the programs' lines through a file it opens on /dev/stdout (appending), two
    offsets into one file, so without this each overwrites the other."""
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)


def supervise(role: str, names: list[str]) -> NoReturn:
    """Write the configuration of `role` (the entries `names` of the Procfile, or of `KODO_PROCFILE`;
    none: all), record this pid as the role's and become supervisord (in the foreground)."""
    files = SupervisordFiles(role, pidfiles.RUN_DIR)
    running = pidfiles.recorded_pid(pidfiles.pidfile(role))
    if running is not None:  # its pid file would name us, and `stop` would leave it running
        pidfiles.say(f"{role} already runs (supervisord pid {running}): mise run stop first")
        raise SystemExit(1)
    procfile = processes.REPO / os.environ.get("KODO_PROCFILE", "Procfile")  # absolute stays absolute
    try:
        conf = supervisord_conf(role, names, procfile=procfile)
    except (KeyError, ValueError) as exc:
        pidfiles.say(f"cannot start {role}: {exc.args[0]}")
        raise SystemExit(2) from exc
    files.log_dir.mkdir(parents=True, exist_ok=True)
    files.conf.write_text(conf)
    for fd in (1, 2):  # see _append_only
        _append_only(fd)
    pidfiles.say(f"supervisord: {files.conf} (log {files.log}; program logs {files.log_dir})")
    pidfiles.exec_recorded(role, [str(processes.BIN / "supervisord"), "-c", str(files.conf)])


def status(run_dir: Path | None = None) -> int:
    """`supervisorctl status` of every process set whose supervisord runs; 0 if all their programs run."""
    run_dir = run_dir or pidfiles.RUN_DIR
    worst = 0
    live = 0
    for conf in sorted(run_dir.glob("supervisord.*.conf")):
        role = conf.name.removeprefix("supervisord.").removesuffix(".conf")
        pid = pidfiles.recorded_pid(pidfiles.pidfile(role, run_dir))
        if pid is None:
            continue
        live += 1
        pidfiles.say(f"{role}: supervisord pid {pid} ({processes.BIN / 'supervisorctl'} -c {conf})")
        ctl = [str(processes.BIN / "supervisorctl"), "-c", str(conf), "status"]
        worst = max(worst, subprocess.run(ctl, check=False).returncode)
    if not live:
        pidfiles.say(f"nothing running (no live {run_dir}/kodo-start.*.pid)")
    return worst


# ---- the event listener: the programs' output on the terminal, leftovers of an exited program ------


def _fields(line: bytes) -> dict[str, str]:
    return dict(tok.split(":", 1) for tok in line.decode(errors="replace").split() if ":" in tok)


def _print(out: BinaryIO, name: str, lines: Iterable[bytes]) -> None:
    prefix = f"{time.strftime('%H:%M:%S')} {name:<10} | ".encode()
    out.write(b"".join(prefix + line.rstrip(b"\r") + b"\n" for line in lines))
    out.flush()


def listen(events: BinaryIO, replies: BinaryIO, out: BinaryIO) -> None:
    """supervisord's event listener protocol until `events` ends: each program's output printed line
    by line as `HH:MM:SS name | line`; when a program exits, what is left of its process group
    (a gunicorn worker holding the port, a pool child) is SIGKILLed, so the new one starts clean."""
    partial: dict[str, bytes] = {}
    while True:
        replies.write(b"READY\n")
        replies.flush()
        header = events.readline()
        if not header:
            return
        fields = _fields(header)
        payload = events.read(int(fields.get("len", "0")))
        event = fields.get("eventname", "")
        if event.startswith("PROCESS_LOG"):
            head, _, data = payload.partition(b"\n")
            name = _fields(head).get("processname", "?")
            *lines, rest = (partial.pop(name, b"") + data).split(b"\n")
            if len(rest) > 65536:  # no newline for that long: print it as it is
                lines, rest = [*lines, rest], b""
            if rest:
                partial[name] = rest
            _print(out, name, lines)
        elif event == "PROCESS_STATE_EXITED":
            state = _fields(payload)
            name, pid = state.get("processname", "?"), int(state.get("pid", "0"))
            if name in partial:
                _print(out, name, [partial.pop(name)])
            killed = processes.kill_group(pid, time.time()) if pid > 1 and pid != os.getpgrp() else []
            if killed:
                _print(out, name, [f"[supervisor] SIGKILLed what was left of its group: {killed}".encode()])
        replies.write(b"RESULT 2\nOK")
        replies.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["supervise"] and len(args) >= 2:
        supervise(args[1], args[2:])
    if args == ["status"]:
        return status()
    if args == ["listen"]:
        listen(sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer)
        return 0
    print("usage: python -m ops.procfile supervise ROLE [NAME...] | status | listen", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
