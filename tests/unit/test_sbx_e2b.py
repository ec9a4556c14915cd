"""The e2b provider, through the real `e2b` SDK, against a local stand-in of the E2B API and envd
(`tests/support/fake_e2b.py`, plain HTTP on 127.0.0.1; the sandbox's commands really run)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from kodo.config import Settings
from kodo.intent import sandbox
from kodo.intent.sbx_e2b import E2BProvider, classify
from tests.support import fake_e2b


@pytest.fixture
def e2b() -> Iterator[fake_e2b.FakeE2B]:
    server = fake_e2b.start()
    yield server
    server.close()


def _provider(server: fake_e2b.FakeE2B) -> E2BProvider:
    env = {
        "SBX_MODE": "live",
        "SBX_PROVIDER": "e2b",
        "E2B_API_KEY": "e2b_test_key",
        "E2B_API_URL": server.url,
        "E2B_SANDBOX_URL": server.url,
    }
    provider = sandbox.provider_for(Settings.from_env(env))
    assert isinstance(provider, E2BProvider)
    return provider


def _req(cmd: str, **over: Any) -> dict[str, Any]:
    base = {
        "envRef": sandbox.ENV_REF,
        "cmd": cmd,
        "filesIn": [],
        "env": {},
        "timeoutMs": 20_000,
        "limits": {"cpu": 1, "memMB": 512},
        "net": False,
        "taskKey": "t" * 64,
    }
    return {**base, **over}


def test_a_command_runs_in_a_sandbox_from_the_template_with_files_in_and_out(e2b: fake_e2b.FakeE2B) -> None:
    chunks: list[tuple[str, str]] = []
    res = _provider(e2b).run(
        _req("cat in.txt; echo warn >&2; echo \"$GREETING\" > report.md", filesIn=[{"path": "in.txt", "inline": "IN\n"}],
             env={"GREETING": "hi"}),
        {"runId": "r", "stepId": "ExecuteST"},
        lambda k, t: chunks.append((k, t)),
    )  # fmt: skip
    assert (res["exit"], res["errCode"], res["stdout"], res["stderr"]) == (0, "NONE", "IN\n", "warn\n")
    assert [(f["path"], f["inline"]) for f in res["filesOut"]] == [("report.md", "hi\n")]
    assert ("stdout", "IN\n") in chunks and ("stderr", "warn\n") in chunks
    [sbx] = e2b.state.sandboxes.values()
    assert sbx.template == sandbox.ENV_REF
    assert (sbx.body["allow_internet_access"], sbx.body["timeout"]) == (False, 20 + 60)
    assert sbx.commands[0]["envs"] == {"GREETING": "hi"} and sbx.commands[0]["cwd"] == "/home/user"
    assert sbx.killed, "the sandbox is always killed"
    assert e2b.state.auth == ["e2b_test_key"]
    assert res["sandboxRef"] == f"e2b:{sbx.id}" and res["raw"]["provider"] == "e2b"


def test_nonzero_exit_is_cmd_nonzero(e2b: fake_e2b.FakeE2B) -> None:
    res = _provider(e2b).run(_req("echo no >&2; exit 4"), {"runId": "r"}, lambda k, t: None)
    assert (res["exit"], res["errCode"]) == (4, "CMD_NONZERO")
    assert res["filesOut"] == []


def test_timeout_is_terminal_and_kills_the_sandbox(e2b: fake_e2b.FakeE2B) -> None:
    started = time.monotonic()
    res = _provider(e2b).run(
        _req("echo started; sleep 30", timeoutMs=1_000), {"runId": "r"}, lambda k, t: None
    )
    assert time.monotonic() - started < 10
    assert res["errCode"] == "TIMEOUT" and res["stdout"] == "started\n"
    [sbx] = e2b.state.sandboxes.values()
    assert sbx.killed and all(p.poll() is not None for p in sbx.procs)


def test_a_sandbox_that_cannot_boot_is_a_retryable_infra_error(e2b: fake_e2b.FakeE2B) -> None:
    e2b.state.fail_create.append(500)
    res = _provider(e2b).run(_req("echo hi"), {"runId": "r"}, lambda k, t: None)
    assert (res["errCode"], res["sandboxRef"], res["exit"]) == ("BOOT_FAIL", "e2b-error", 1)
    assert res["errCode"] in sandbox.RETRYABLE_CODES
    assert "injected create failure" in res["stderr"]


def test_an_unsupported_files_in_source_is_upload_fail(e2b: fake_e2b.FakeE2B) -> None:
    res = _provider(e2b).run(
        _req("true", filesIn=[{"path": "a", "uri": "artifact://run/x/step/y/task//a"}]),
        {"runId": "r"},
        lambda k, t: None,
    )
    assert res["errCode"] == "UPLOAD_FAIL"
    [sbx] = e2b.state.sandboxes.values()
    assert sbx.killed and sbx.commands == []


@pytest.mark.parametrize(
    ("text", "exit_code", "code"),
    [
        ("Request timed out", None, "TIMEOUT"),
        ("process ran out of memory", 1, "OOM"),
        ("connect ECONNREFUSED 127.0.0.1", None, "NET_FAIL"),
        ("failed to write file", None, "UPLOAD_FAIL"),
        ("download failed", None, "DOWNLOAD_FAIL"),
        ("exit status 2", 2, "CMD_NONZERO"),
        ("401: Invalid API key", None, "BOOT_FAIL"),
    ],
)
def test_the_original_failure_classifier(text: str, exit_code: int | None, code: str) -> None:
    assert classify(text, exit_code) == code
