"""The pid files of `ops/start.sh`, and what `ops/stop.sh` does with them.

    python -m ops.pidfiles exec ROLE COMMAND...   record this pid as ROLE's, then become COMMAND
    python -m ops.pidfiles stop                   stop every recorded process set

`ops/start.sh` becomes supervisord through `exec` (`python -m ops.procfile supervise`), so the recorded
pid is supervisord's (which rewrites the file itself, and removes it when it ends). There is one pid
file per process set (`.tmp/kodo-start.<role>.pid`, role `all` or e.g. `intent-sbx-reconciler`), so a
worker and a shim started side by side are both stopped. `stop` touches only the recorded processes
(and what they started): SIGTERM (supervisord stops each program's process group, SIGKILL after its
`stopwaitsecs`), then after 15 s SIGKILL whatever is left of the tree and of every process group in
it, so no program's child outlives it; a pid file whose pid now names a process started later (the
pid was reused) is only removed.

`KODO_RUN_DIR` (default `.tmp`) moves the pid files, and what `ops.procfile` keeps beside them, elsewhere:
the e2e test of `start.sh`/`stop.sh` runs a stack of its own without touching anyone else's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from ops import processes

RUN_DIR = Path(os.environ.get("KODO_RUN_DIR") or processes.REPO / ".tmp")
# Longer than supervisord's own SIGTERM-to-SIGKILL wait (ops.procfile.STOP_WAIT_S), so it gets to
# stop its programs itself.
STOP_TIMEOUT_S = 15.0


def pidfile(role: str, run_dir: Path | None = None) -> Path:
    return (run_dir or RUN_DIR) / f"kodo-start.{role}.pid"


def exec_recorded(role: str, argv: list[str]) -> NoReturn:
    """Record this process's pid as `role`'s, then become `argv` (the same pid: what `stop` stops)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    pidfile(role).write_text(f"{os.getpid()}\n")
    os.execvp(argv[0], argv)


def say(message: str) -> None:
    print(f"[kodo] {message}", file=sys.stderr, flush=True)


def recorded_pid(path: Path) -> int | None:
    """The pid a pid file names, if that process runs and started before the file was written."""
    try:
        pid = int(path.read_text().split()[0])
        written = path.stat().st_mtime
    except (ValueError, IndexError, OSError):
        return None
    started = processes.started_at(pid)
    return pid if started is not None and started <= written + 1 else None


def stop() -> None:
    pidfiles = sorted({*RUN_DIR.glob("kodo-start.pid"), *RUN_DIR.glob("kodo-start.*.pid")})
    for path in pidfiles:
        pid = recorded_pid(path)
        if pid is not None:
            say(f"stopping kodo (pid {pid}, {path.name})")
            if not processes.terminate_tree(pid, STOP_TIMEOUT_S):
                say("still running; SIGKILL")
        path.unlink(missing_ok=True)
    if not pidfiles:
        say("nothing to stop (no .tmp/kodo-start.*.pid)")
    say("stopped")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["stop"]:
        stop()
        return 0
    if args[:1] == ["exec"] and len(args) > 2:
        exec_recorded(args[1], args[2:])
    print("usage: python -m ops.pidfiles exec ROLE COMMAND... | stop", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
