"""`SBX_MODE=live SBX_PROVIDER=e2b`: one sandbox attempt in an E2B sandbox, through the `e2b` SDK
(contract-internals §6, "E2B provider").

1. Create a sandbox from template `templateId ?? envRef`, alive for the task's timeout plus a margin,
   with internet access only when `net` is true.
2. Write `filesIn` (inline content; an `http(s)` URI is fetched first) under the workdir
   (`workdir` or `/home/user`); a failure is `UPLOAD_FAIL`.
3. Run `cmd` with `env` in the workdir with the task's timeout, streaming stdout/stderr chunks.
4. On success, read back the `*.json`, `*.md` and `*.patch` files under the workdir as `filesOut`
   (listed with `find` in the sandbox); a failure is `DOWNLOAD_FAIL`.
5. Always kill the sandbox (so a timed-out command dies with it).

A non-zero exit is `CMD_NONZERO` (the SDK's `CommandExitException` carries the exit code; the
original lost it and could report a retryable `BOOT_FAIL`), the SDK's `TimeoutException` is
`TIMEOUT`, and any other error goes through the original's classifier (`classify`). Credentials
and endpoints come from `E2B_API_KEY`, `E2B_DOMAIN`, `E2B_API_URL`, `E2B_SANDBOX_URL` (read by
`kodo.config`, passed explicitly).
"""

from __future__ import annotations

import contextlib
import math
import posixpath
import shlex
import time
from collections.abc import Callable
from typing import Any

import httpx
from e2b import CommandExitException, Sandbox, TimeoutException

from kodo.config import Settings
from kodo.errors import ConfigError
from kodo.intent.canonical import sha256_hex

Chunk = Callable[[str, str], None]

DEFAULT_WORKDIR = "/home/user"
SANDBOX_MARGIN_S = 60  # the sandbox outlives the command's timeout by this much (it is killed anyway)
OUT_FIND = r"find . -maxdepth 4 -type f \( -name '*.json' -o -name '*.md' -o -name '*.patch' \) -size -1024k"

_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("timeout", "timed out", "etimedout", "command timed out", "deadline exceeded"), "TIMEOUT"),
    (("out of memory", "oom", "killed process"), "OOM"),
    (("enotfound", "econnrefused", "econnreset", "network", "dns", "socket hang up"), "NET_FAIL"),
    (("upload", "write file", "filesin"), "UPLOAD_FAIL"),
    (("download", "read file", "filesout"), "DOWNLOAD_FAIL"),
)


def classify(text: str, exit_code: int | None) -> str:
    """The original's failure classifier: case-insensitive substrings, first match wins."""
    lowered = text.lower()
    for needles, code in _RULES:
        if any(n in lowered for n in needles):
            return code
    return "CMD_NONZERO" if exit_code not in (None, 0) else "BOOT_FAIL"


class _StageError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class E2BProvider:
    name = "e2b"

    def __init__(self, settings: Settings) -> None:
        if not settings.e2b_api_key:
            raise ConfigError("SBX_PROVIDER=e2b needs E2B_API_KEY")
        self._opts: dict[str, Any] = {
            "api_key": settings.e2b_api_key,
            "domain": settings.e2b_domain,
            "api_url": settings.e2b_api_url,
            "sandbox_url": settings.e2b_sandbox_url,
        }

    def run(
        self, req: dict[str, Any], ctx: dict[str, Any], on_chunk: Chunk, attempt: int = 1
    ) -> dict[str, Any]:
        started = time.monotonic()
        timeout_s = int(req["timeoutMs"]) / 1000
        workdir = str(req.get("workdir") or DEFAULT_WORKDIR)
        raw: dict[str, Any] = {"provider": self.name, "ctx": ctx, "exitCode": None, "error": None}
        sbx: Sandbox | None = None
        stdout: list[str] = []
        stderr: list[str] = []

        def out(text: str) -> None:
            stdout.append(text)
            on_chunk("stdout", text)

        def err(text: str) -> None:
            stderr.append(text)
            on_chunk("stderr", text)

        code, err_code, files = 1, "NONE", []
        try:
            sbx = Sandbox.create(
                template=str(req.get("templateId") or req["envRef"]),
                timeout=math.ceil(timeout_s) + SANDBOX_MARGIN_S,
                allow_internet_access=bool(req.get("net")),
                **self._opts,
            )
            raw["sandboxId"] = sbx.sandbox_id
            _upload(sbx, workdir, req.get("filesIn") or [])
            try:
                result = sbx.commands.run(
                    str(req["cmd"]),
                    envs={str(k): str(v) for k, v in (req.get("env") or {}).items()},
                    cwd=workdir,
                    timeout=timeout_s,
                    on_stdout=out,
                    on_stderr=err,
                )
                code = result.exit_code
            except CommandExitException as exc:
                code, err_code = exc.exit_code, "CMD_NONZERO"
            except TimeoutException as exc:
                raise _StageError("TIMEOUT", f"command timed out after {timeout_s} s: {exc}") from exc
            if code == 0:
                files = _download(sbx, workdir)
        except _StageError as exc:
            err_code, raw["error"] = exc.code, str(exc)
            stderr.append(("\n" if stderr else "") + str(exc))
        except Exception as exc:  # the SDK's errors: boot, auth, network, ...
            message = f"{type(exc).__name__}: {exc}"
            err_code, raw["error"] = classify("".join(stderr) + " " + message, None), message
            stderr.append(("\n" if stderr else "") + message)
        finally:
            if sbx is not None:
                with contextlib.suppress(Exception):  # it dies on its own timeout anyway
                    sbx.kill()
        raw["exitCode"] = code
        wall = max(int((time.monotonic() - started) * 1000), 1)
        failed = err_code != "NONE"
        return {
            "exit": code if not failed or code != 0 else 1,
            "stdout": "".join(stdout),
            "stderr": "".join(stderr),
            "filesOut": files,
            "metrics": {"wallMs": wall, "cpuMs": wall, "memPeakMB": 0},
            "sandboxRef": "e2b-error" if failed and raw["error"] else f"e2b:{raw.get('sandboxId')}",
            "errCode": err_code,
            "taskKey": req["taskKey"],
            "raw": raw,
        }


def _upload(sbx: Sandbox, workdir: str, items: list[dict[str, Any]]) -> None:
    for item in items:
        path = posixpath.join(workdir, str(item.get("path")))
        try:
            content = item.get("inline")
            uri = str(item.get("uri") or "")
            if not isinstance(content, str) and uri.startswith(("http://", "https://")):
                content = httpx.get(uri, timeout=30, follow_redirects=True).raise_for_status().text
            if not isinstance(content, str):
                raise ValueError(f"unsupported filesIn source {uri or item!r}")
            sbx.files.write(path, content)
        except Exception as exc:
            raise _StageError("UPLOAD_FAIL", f"upload filesIn {path}: {exc}") from exc


def _download(sbx: Sandbox, workdir: str) -> list[dict[str, Any]]:
    try:
        listing = sbx.commands.run(OUT_FIND, cwd=workdir, timeout=60)
        paths = sorted(p[2:] if p.startswith("./") else p for p in listing.stdout.splitlines() if p.strip())
        files = []
        for rel in paths:
            text = sbx.files.read(posixpath.join(workdir, rel))
            files.append({"path": rel, "sha256": sha256_hex(text), "inline": text})
        return files
    except Exception as exc:
        raise _StageError("DOWNLOAD_FAIL", f"download filesOut ({shlex.quote(workdir)}): {exc}") from exc
