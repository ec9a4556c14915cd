"""The local sandbox provider runs real commands: outcomes, limits, files, streaming (no services)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from kodo.config import Settings
from kodo.errors import ConfigError
from kodo.intent import sandbox
from kodo.intent.canonical import sha256_hex
from kodo.intent.sbx_e2b import E2BProvider
from kodo.intent.sbx_local import LocalProvider

LIVE_LOCAL = {"SBX_MODE": "live", "SBX_PROVIDER": "local"}


def _req(cmd: str, **over: Any) -> dict[str, Any]:
    base = {
        "envRef": sandbox.ENV_REF,
        "cmd": cmd,
        "filesIn": [],
        "env": {},
        "timeoutMs": 10_000,
        "limits": {"cpu": 1, "memMB": 512},
        "net": False,
        "taskKey": "k" * 64,
    }
    return {**base, **over}


def _run(cmd: str, **over: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    chunks: list[tuple[str, str]] = []

    def on_chunk(kind: str, text: str) -> None:
        # The workflow's chunk writer needs the workflow's context: it must be called on this thread.
        assert threading.get_ident() == caller
        chunks.append((kind, text))

    caller = threading.get_ident()
    provider = sandbox.provider_for(Settings.from_env(LIVE_LOCAL))
    assert isinstance(provider, LocalProvider)
    res = provider.run(_req(cmd, **over), {"runId": "r", "stepId": "ExecuteST"}, on_chunk)
    return res, chunks


def test_success_streams_output_and_returns_files_out_with_metrics() -> None:
    res, chunks = _run(
        "printf 'a\\r\\nb\\n'; echo oops >&2; cat in/data.txt > out.json; echo '# r' > notes.md; echo x > skip.txt",
        filesIn=[{"path": "in/data.txt", "inline": '{"v":1}'}],
    )
    assert (res["exit"], res["errCode"], res["stdout"], res["stderr"]) == (0, "NONE", "a\nb\n", "oops\n")
    assert [f["path"] for f in res["filesOut"]] == ["notes.md", "out.json"]
    out = res["filesOut"][1]
    assert out == {"path": "out.json", "sha256": sha256_hex('{"v":1}'), "inline": '{"v":1}'}
    assert "".join(t for k, t in chunks if k == "stdout") == "a\nb\n"
    assert ("stderr", "oops\n") in chunks
    assert res["metrics"]["wallMs"] >= 1 and res["metrics"]["memPeakMB"] >= 1
    assert res["taskKey"] == "k" * 64 and res["raw"]["provider"] == "local"


def test_nonzero_exit_is_cmd_nonzero_and_terminal() -> None:
    res, _ = _run("echo bad >&2; exit 3")
    assert (res["exit"], res["errCode"], res["stderr"]) == (3, "CMD_NONZERO", "bad\n")
    assert res["errCode"] not in sandbox.RETRYABLE_CODES
    assert res["filesOut"] == []


def test_timeout_kills_the_whole_process_group() -> None:
    started = time.monotonic()
    res, chunks = _run("echo start; (sleep 30; echo never) & sleep 30", timeoutMs=700)
    assert time.monotonic() - started < 5
    assert (res["errCode"], res["exit"]) == ("TIMEOUT", 124)
    assert res["stdout"] == "start\n" and "never" not in res["stdout"]
    assert chunks == [("stdout", "start\n")]


def test_cpu_limit_ends_a_busy_loop_as_timeout() -> None:
    # RLIMIT_CPU = timeout x limits.cpu (+1 s): 0.2 cpu over 2 s is a 2 s CPU budget under a 10 s wall.
    started = time.monotonic()
    res, _ = _run("while :; do :; done", timeoutMs=2_000, limits={"cpu": 0.2, "memMB": 512})
    assert res["errCode"] == "TIMEOUT"
    assert time.monotonic() - started < 8


def test_memory_limit_is_oom() -> None:
    res, _ = _run("python3 -c 'x = bytearray(600 * 1024 * 1024)'", limits={"cpu": 1, "memMB": 200})
    assert res["errCode"] == "OOM", res["stderr"]


def test_file_size_limit_fails_the_command() -> None:
    settings = Settings.from_env({**LIVE_LOCAL, "SBX_LOCAL_MAX_FILE_MB": "1"})
    res = LocalProvider(settings).run(
        _req("head -c 3000000 /dev/zero > big.bin"), {"runId": "r"}, lambda k, t: None
    )
    assert res["errCode"] == "CMD_NONZERO"


def test_no_network_when_net_is_false_and_a_minimal_environment() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        probe = f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)'"
        isolated, _ = _run(probe)
        open_net, _ = _run(probe, net=True)
    assert isolated["errCode"] == "CMD_NONZERO"
    assert open_net["errCode"] == "NONE", open_net["stderr"]
    env, _ = _run("env | sort", env={"EXTRA": "1"})
    names = {line.split("=", 1)[0] for line in env["stdout"].splitlines()}
    assert {"PATH", "HOME", "EXTRA"} <= names
    assert not any(n.startswith(("KODO_", "APP_DB", "E2B_")) for n in names)


def test_files_in_may_not_leave_the_sandbox_directory() -> None:
    res, _ = _run("true", filesIn=[{"path": "../../escape.txt", "inline": "x"}])
    assert res["errCode"] == "UPLOAD_FAIL"
    assert res["errCode"] in sandbox.RETRYABLE_CODES
    res, _ = _run("true", filesIn=[{"path": "a.txt", "uri": "artifact://run/x/step/y/task//a"}])
    assert res["errCode"] == "UPLOAD_FAIL"


def test_provider_choice_never_falls_back() -> None:
    assert sandbox.provider_for(Settings.from_env({})).name == "mock"
    assert sandbox.provider_for(Settings.from_env(LIVE_LOCAL)).name == "local"
    with pytest.raises(ConfigError, match="E2B_API_KEY"):
        sandbox.provider_for(Settings.from_env({"SBX_MODE": "live"}))
    e2b = sandbox.provider_for(Settings.from_env({"SBX_MODE": "live", "E2B_API_KEY": "e2b_x"}))
    assert isinstance(e2b, E2BProvider)
    with pytest.raises(ConfigError, match="SBX_ALT_PROVIDER_ENABLED"):
        sandbox.provider_for(Settings.from_env({"SBX_MODE": "live", "SBX_PROVIDER": "microsandbox"}))
    with pytest.raises(ConfigError, match="invalid SBX_PROVIDER"):
        Settings.from_env({"SBX_PROVIDER": "docker"})
    with pytest.raises(ConfigError, match="invalid E2B_API_URL"):
        Settings.from_env({"E2B_API_URL": "api.e2b.dev"})
