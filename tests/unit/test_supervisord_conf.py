"""The supervisord configuration `mise run start` runs, generated from the Procfile (ops/procfile.py),
read back by supervisord's own parser; and its event listener, fed supervisord's protocol."""

from __future__ import annotations

import io
import os
import shlex
import signal
from pathlib import Path

import pytest
from supervisor.datatypes import RestartUnconditionally  # type: ignore[import-untyped]
from supervisor.options import ServerOptions  # type: ignore[import-untyped]

from ops import processes, procfile


def _parsed(tmp_path: Path, role: str, names: list[str]) -> ServerOptions:
    files = procfile.SupervisordFiles(role, tmp_path)
    files.log_dir.mkdir(parents=True)
    files.conf.write_text(procfile.supervisord_conf(role, names, tmp_path))
    options = ServerOptions()
    options.realize(args=["-c", str(files.conf)])
    return options


def test_every_procfile_process_is_a_kept_alive_program(tmp_path: Path) -> None:
    options = _parsed(tmp_path, "all", [])
    assert options.nodaemon is True
    assert options.pidfile == str(tmp_path / "kodo-start.all.pid")  # what ops/stop.sh stops
    groups = {g.name: g for g in options.process_group_configs}
    assert set(groups) == {procfile.GROUP, procfile.LISTENER}
    programs = {p.name: p for p in groups[procfile.GROUP].process_configs}
    assert list(programs) == list(procfile.procfile_entries())
    for name, p in programs.items():
        # the Procfile line through `sh -c` (so ${VAR:-default} expands), `%h` and quotes intact
        assert shlex.split(p.command) == ["/bin/sh", "-c", "exec " + procfile.procfile_line(name)]
        assert p.autorestart is RestartUnconditionally
        assert (p.startsecs, p.startretries) == (procfile.START_SECS, procfile.START_RETRIES)
        assert (p.stopsignal, p.stopwaitsecs) == (signal.SIGTERM, procfile.STOP_WAIT_S)
        assert p.stopasgroup and p.killasgroup and p.redirect_stderr and p.stdout_events_enabled
        assert p.stdout_logfile == str(tmp_path / "logs" / "all" / f"{name}.log")
    assert "intent@%h" in programs["intent"].command
    listener = groups[procfile.LISTENER].process_configs[0]
    assert listener.stderr_logfile == "/dev/stdout"


def test_a_subset_is_only_those_and_an_unknown_name_is_refused(tmp_path: Path) -> None:
    options = _parsed(tmp_path, "api", ["api"])
    group = next(g for g in options.process_group_configs if g.name == procfile.GROUP)
    assert [p.name for p in group.process_configs] == ["api"]
    with pytest.raises(KeyError, match="'nope'"):
        procfile.supervisord_conf("x", ["intent", "nope"], tmp_path)


def test_a_socket_path_too_long_to_bind_moves_to_the_temporary_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90)
    socket = procfile.SupervisordFiles("intent-sbx-reconciler", deep).socket
    assert len(str(socket)) <= procfile.SOCKET_MAX
    assert socket != procfile.SupervisordFiles("api", deep).socket


def _event(name: str, payload: bytes) -> bytes:
    header = (
        f"ver:3.0 server:supervisor serial:1 pool:output poolserial:1 eventname:{name} len:{len(payload)}\n"
    )
    return header.encode() + payload


def test_the_listener_prints_whole_lines_prefixed_and_answers_every_event() -> None:
    events = io.BytesIO(
        _event("PROCESS_LOG_STDOUT", b"processname:api groupname:kodo pid:7 channel:stdout\nGET / 200\nhal")
        + _event("PROCESS_LOG_STDOUT", b"processname:api groupname:kodo pid:7 channel:stdout\nf a line\n")
        + _event("PROCESS_LOG_STDOUT", b"processname:intent groupname:kodo pid:8 channel:stdout\nno newline")
        + _event(
            "PROCESS_STATE_EXITED", b"processname:intent groupname:kodo from_state:RUNNING expected:0 pid:0"
        )
    )
    replies, out = io.BytesIO(), io.BytesIO()
    procfile.listen(events, replies, out)
    assert replies.getvalue() == b"READY\nRESULT 2\nOK" * 4 + b"READY\n"
    lines = [line.split(" ", 1)[1] for line in out.getvalue().decode().splitlines()]
    assert lines == ["api        | GET / 200", "api        | half a line", "intent     | no newline"]


def test_the_listener_kills_what_is_left_of_an_exited_programs_group(tmp_path: Path) -> None:
    """A program's main process killed -9 leaves a child in its group; the EXITED event ends it."""
    proc = processes.spawn(
        "prog", ["/bin/sh", "-c", "sleep 60 & wait"], dict(os.environ), tmp_path / "prog.log"
    )
    try:
        processes.wait_until("the child", lambda: len(proc.live_pids()) == 2, 10)
        (child,) = [pid for pid in proc.live_pids() if pid != proc.pid]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        payload = f"processname:prog groupname:kodo from_state:RUNNING expected:0 pid:{proc.pid}".encode()
        out = io.BytesIO()
        procfile.listen(io.BytesIO(_event("PROCESS_STATE_EXITED", payload)), io.BytesIO(), out)
        processes.wait_until("the child's end", lambda: not processes.pid_alive(child), 5)
        assert f"[supervisor] SIGKILLed what was left of its group: [{child}]" in out.getvalue().decode()
    finally:
        if proc.live_pids():
            os.killpg(proc.pgid, signal.SIGKILL)
