"""The sandbox layer: fan-out task requests, providers and result merge (contract-internals §3.5-§3.6, §6).

One port (`Provider.run(req, ctx, on_chunk, attempt)` -> SBXRes), chosen by `provider_for`:

* `SBX_MODE=mock` (the default): the original's mock provider, keyed on the first word of `cmd`.
* `SBX_MODE=live SBX_PROVIDER=e2b` (the default provider): an E2B sandbox (`kodo.intent.sbx_e2b`).
* `SBX_MODE=live SBX_PROVIDER=local`: a real subprocess with limits (`kodo.intent.sbx_local`).
* `SBX_MODE=live SBX_PROVIDER=microsandbox`: only with `SBX_ALT_PROVIDER_ENABLED=true`, and then the
  deterministic unsupported result (`BOOT_FAIL`); never a fallback to another provider.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from kodo.config import Settings
from kodo.errors import ConfigError
from kodo.intent.canonical import sha256_hex

RETRYABLE_CODES = frozenset({"BOOT_FAIL", "NET_FAIL", "UPLOAD_FAIL", "DOWNLOAD_FAIL"})
ENV_REF = "local-node-24"

Chunk = Callable[[str, str], None]  # (kind "stdout"|"stderr", text)


class SbxInfraError(Exception):
    """A retryable infrastructure failure of one sandbox attempt: `SBX Infra Error [<code>]: <stderr>`."""


def is_infra_error(exc: Exception) -> bool:
    return isinstance(exc, SbxInfraError)


def task_key(intent_id: str, run_id: str, normalized_req: dict[str, Any]) -> str:
    return sha256_hex(
        {"intentId": intent_id, "runId": run_id, "stepId": "ExecuteST", "normalizedReq": normalized_req}
    )


def build_tasks(
    decision: dict[str, Any], intent_id: str, run_id: str, settings: Settings
) -> list[dict[str, Any]]:
    """One task per test (`<command> <test>`), or one task running the command when there are none."""
    structured = decision.get("structured") or {}
    command = structured.get("test_command")
    if not isinstance(command, str) or not command:
        raise ValueError("decision has no test_command")
    tests = [str(t) for t in structured.get("tests") or []]
    pairs = [(f"{command} {t}", {"cmd": command, "test": t}) for t in tests] or [(command, {"cmd": command})]
    return [
        {
            "envRef": ENV_REF,
            "cmd": cmd,
            "filesIn": [],
            "env": {},
            "timeoutMs": settings.sbx_default_timeout_ms,
            "limits": {"cpu": 1, "memMB": 512},
            "net": settings.sbx_default_net,
            "taskKey": task_key(intent_id, run_id, normalized),
        }
        for cmd, normalized in pairs
    ]


class Provider(Protocol):
    name: str

    def run(
        self, req: dict[str, Any], ctx: dict[str, Any], on_chunk: Chunk, attempt: int = 1
    ) -> dict[str, Any]:
        """Run one sandbox attempt (`attempt` counts the step's attempts from 1)."""


def _result(req: dict[str, Any], **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "exit": 1,
        "stdout": "",
        "stderr": "",
        "filesOut": [],
        "metrics": {"wallMs": 1, "cpuMs": 1, "memPeakMB": 1},
        "sandboxRef": "mock-runner-fail",
        "errCode": "NONE",
        "taskKey": req["taskKey"],
    }
    base.update(fields)
    return base


class MockProvider:
    """Outcomes keyed on the first word of `cmd` (contract-internals §6)."""

    name = "mock"

    def run(
        self, req: dict[str, Any], ctx: dict[str, Any], on_chunk: Chunk, attempt: int = 1
    ) -> dict[str, Any]:
        cmd = str(req["cmd"])
        word = (cmd.split(maxsplit=1) or [""])[0]
        raw = {"mock": True, "provider": "mock", "ctx": ctx}
        if word == "INFRA_FAIL":
            return _result(req, stderr="Injected infra failure", errCode="BOOT_FAIL", raw=raw)
        if word == "FAIL_ME":
            return _result(req, stderr="Simulated command failure", errCode="CMD_NONZERO", raw=raw)
        if word == "TIMEOUT_ME":
            metrics = {"wallMs": req["timeoutMs"], "cpuMs": 1, "memPeakMB": 1}
            return _result(
                req, stderr="Command timed out", errCode="TIMEOUT", metrics=metrics,
                sandboxRef="mock-runner-timeout", raw=raw,
            )  # fmt: skip
        # FLAKY_INFRA_FAIL fails the step's first two attempts. Attempts are durable (a retry may run
        # in another worker process), so the count is the step's, not a process's.
        if word == "FLAKY_INFRA_FAIL" and attempt <= 2:
            return _result(
                req, stderr="Injected flaky infra failure", errCode="BOOT_FAIL",
                sandboxRef="mock-runner-flaky-fail", raw=raw,
            )  # fmt: skip
        stdout = f"OK: {cmd}\n"
        on_chunk("stdout", stdout)
        return _result(
            req,
            exit=0,
            stdout=stdout,
            filesOut=[{"path": "out.json", "sha256": sha256_hex("{}"), "inline": "{}"}],
            sandboxRef="mock-runner",
            raw=raw,
        )


class MicrosandboxProvider:
    """The alternative provider: a deterministic 'unsupported' result, never a fallback."""

    name = "microsandbox"

    def run(
        self, req: dict[str, Any], ctx: dict[str, Any], on_chunk: Chunk, attempt: int = 1
    ) -> dict[str, Any]:
        return _result(
            req,
            stderr="microsandbox provider is not implemented in v0; use e2b or mock",
            errCode="BOOT_FAIL",
            sandboxRef="microsandbox-unsupported",
            metrics={"wallMs": 0, "cpuMs": 0, "memPeakMB": 0},
            raw={"provider": "microsandbox", "ctx": ctx, "status": "UNSUPPORTED"},
        )


def provider_for(settings: Settings) -> Provider:
    if settings.sbx_mode == "mock":
        return MockProvider()
    if settings.sbx_provider == "microsandbox":
        if not settings.sbx_alt_provider_enabled:
            raise ConfigError("microsandbox provider is disabled; set SBX_ALT_PROVIDER_ENABLED=true")
        return MicrosandboxProvider()
    if settings.sbx_provider == "local":
        from kodo.intent.sbx_local import LocalProvider

        return LocalProvider(settings)
    from kodo.intent.sbx_e2b import E2BProvider  # the SDK is imported only where it is used

    return E2BProvider(settings)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One SBXRes from the task results, in task order (contract-internals §3.6)."""
    failed = next((r for r in results if r["errCode"] != "NONE"), None)
    return {
        "exit": failed["exit"] if failed else 0,
        "stdout": "\n---\n".join(r["stdout"] for r in results),
        "stderr": "\n---\n".join(r["stderr"] for r in results),
        "filesOut": [f for r in results for f in r.get("filesOut", [])],
        "metrics": {
            "wallMs": max(r["metrics"]["wallMs"] for r in results),
            "cpuMs": sum(r["metrics"]["cpuMs"] for r in results),
            "memPeakMB": max(r["metrics"]["memPeakMB"] for r in results),
        },
        "sandboxRef": ",".join(r["sandboxRef"] for r in results),
        "errCode": failed["errCode"] if failed else "NONE",
        "taskKey": "aggregated",
        "artifactIndexRef": ",".join(r["artifactIndexRef"] for r in results),
        "raw": {
            "attempt": max(r["attempt"] for r in results),
            "tasks": [
                {
                    "taskKey": r["taskKey"],
                    "errCode": r["errCode"],
                    "exit": r["exit"],
                    "artifactIndexRef": r["artifactIndexRef"],
                    "metrics": r["metrics"],
                    "attempt": r["attempt"],
                }
                for r in results
            ],
        },
    }
