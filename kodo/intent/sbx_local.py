"""`SBX_MODE=live SBX_PROVIDER=local`: one sandbox attempt as a real subprocess (contract-internals §6).

The command runs under `/bin/sh -c` in a fresh temporary directory (its `workdir` inside it), in a
process group of its own, with a minimal environment (`PATH`, `HOME`, `TMPDIR`, `LANG`, then the
request's `env`; nothing of the worker's, so no credential leaks in) and these limits:

* wall clock `timeoutMs`: the whole group is killed (SIGKILL) -> `TIMEOUT`;
* `RLIMIT_CPU` = the timeout in seconds x `limits.cpu` (+1) -> SIGXCPU -> `TIMEOUT`;
* `RLIMIT_AS` = `limits.memMB` -> an allocation fails (`MemoryError`, "Cannot allocate memory", ...)
  or the process is SIGKILLed by the kernel -> `OOM`;
* `RLIMIT_FSIZE` = `SBX_LOCAL_MAX_FILE_MB`, `RLIMIT_NPROC` = `SBX_LOCAL_MAX_PROCS` (the kernel does not
  apply RLIMIT_NPROC to root), `RLIMIT_CORE` = 0;
* `net: false`: a network namespace of its own (only a down loopback); if the kernel refuses one the
  attempt fails with `BOOT_FAIL`, never silently with the network on.

`filesIn` items with `inline` content are written under the workdir (`UPLOAD_FAIL` otherwise); after a
successful run the `*.json`, `*.md` and `*.patch` files under the workdir come back as `filesOut`
(`DOWNLOAD_FAIL` if one cannot be read). stdout/stderr are streamed through `on_chunk` as they arrive
(CRLF turned into LF) from the calling thread, a non-zero exit is `CMD_NONZERO`.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import math
import os
import queue
import re
import resource
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from kodo.config import Settings
from kodo.intent.canonical import sha256_hex

Chunk = Callable[[str, str], None]

SHELL = "/bin/sh"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUT_SUFFIXES = (".json", ".md", ".patch")
MAX_OUT_FILES, MAX_OUT_BYTES = 50, 1 << 20
MAX_CAPTURE = 4 << 20  # stdout/stderr kept in the result (the stream carries everything)
_MEMORY = re.compile(
    r"memoryerror|cannot allocate memory|out of memory|bad_alloc|memory exhausted|xmalloc", re.IGNORECASE
)
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000


class _BootError(Exception):
    pass


def _unshare_network() -> None:
    """A network namespace of its own (as root; otherwise inside a user namespace mapping our ids)."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        if libc.unshare(_CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        return
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER|CLONE_NEWNET)")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w", encoding="ascii") as fh:
            fh.write(text)


def _limits(req: dict[str, Any], settings: Settings) -> Callable[[], None]:
    limits = req.get("limits") or {}
    timeout_s = int(req["timeoutMs"]) / 1000
    cpu_s = math.ceil(timeout_s * max(float(limits.get("cpu") or 1), 0.01)) + 1
    mem = int(limits.get("memMB") or 512) << 20
    fsize = settings.sbx_local_max_file_mb << 20
    nproc = settings.sbx_local_max_procs
    isolate = not bool(req.get("net"))

    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if isolate:
            _unshare_network()

    return apply


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"path {rel!r} leaves the sandbox directory")
    return path


class _Pump(threading.Thread):
    """Reads one pipe as it fills and queues the decoded text; `None` when the pipe is closed."""

    def __init__(self, kind: str, pipe: IO[bytes], out: queue.Queue[tuple[str, str] | None]) -> None:
        super().__init__(name=f"sbx-{kind}", daemon=True)
        self.kind, self._pipe, self._out = kind, pipe, out
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.start()

    def run(self) -> None:
        fd = self._pipe.fileno()
        while True:
            data = os.read(fd, 65536)
            text = self._decoder.decode(data, final=not data).replace("\r\n", "\n")
            if text:
                self._out.put((self.kind, text))
            if not data:
                self._out.put(None)
                return


class LocalProvider:
    name = "local"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def run(
        self, req: dict[str, Any], ctx: dict[str, Any], on_chunk: Chunk, attempt: int = 1
    ) -> dict[str, Any]:
        started = time.monotonic()
        raw: dict[str, Any] = {"provider": self.name, "ctx": ctx}
        with tempfile.TemporaryDirectory(prefix="kodo-sbx-") as tmp:
            root = Path(tmp).resolve()
            try:
                workdir = _inside(root, str(req.get("workdir") or "."))
                workdir.mkdir(parents=True, exist_ok=True)
            except (OSError, ValueError) as exc:
                return _fail(req, "BOOT_FAIL", f"workdir: {exc}", started, raw)
            try:
                for item in req.get("filesIn") or []:
                    if not isinstance(item.get("inline"), str):
                        raise ValueError(f"filesIn {item.get('path')!r}: only inline content is supported")
                    target = _inside(workdir, str(item["path"]))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(item["inline"], encoding="utf-8")
            except (OSError, ValueError, KeyError) as exc:
                return _fail(req, "UPLOAD_FAIL", f"upload filesIn: {exc}", started, raw)
            try:
                code, timed_out, usage, out, err = self._execute(req, root, workdir, on_chunk)
            except _BootError as exc:
                return _fail(req, "BOOT_FAIL", str(exc), started, raw)
            wall = max(int((time.monotonic() - started) * 1000), 1)
            metrics = {
                "wallMs": wall,
                "cpuMs": int((usage.ru_utime + usage.ru_stime) * 1000),
                "memPeakMB": math.ceil(usage.ru_maxrss / 1024),
            }
            raw.update(exitCode=code, timedOut=timed_out)
            err_code = _classify(code, timed_out, err)
            files: list[dict[str, Any]] = []
            if err_code == "NONE":
                try:
                    files = _files_out(workdir)
                except (OSError, UnicodeDecodeError) as exc:
                    err += f"\nread filesOut: {exc}"
                    err_code = "DOWNLOAD_FAIL"
        return {
            "exit": 124 if timed_out else code,
            "stdout": out,
            "stderr": err,
            "filesOut": files,
            "metrics": metrics,
            "sandboxRef": f"local:{root.name}",
            "errCode": err_code,
            "taskKey": req["taskKey"],
            "raw": raw,
        }

    def _execute(
        self, req: dict[str, Any], root: Path, workdir: Path, on_chunk: Chunk
    ) -> tuple[int, bool, Any, str, str]:
        env = {"PATH": BASE_PATH, "HOME": str(root), "TMPDIR": str(root), "LANG": "C.UTF-8"}
        env.update({str(k): str(v) for k, v in (req.get("env") or {}).items()})
        try:
            proc = subprocess.Popen(
                [SHELL, "-c", str(req["cmd"])],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_limits(req, self._settings),  # noqa: PLW1509 (limits must be set in the child)
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise _BootError(f"boot: {exc}") from exc
        assert proc.stdout is not None and proc.stderr is not None
        chunks: queue.Queue[tuple[str, str] | None] = queue.Queue()
        _Pump("stdout", proc.stdout, chunks)
        _Pump("stderr", proc.stderr, chunks)
        timed_out = threading.Event()
        exited: list[tuple[int, Any]] = []

        def kill_group() -> None:
            timed_out.set()
            _killpg(proc.pid)

        def wait() -> None:
            _, status, usage = os.wait4(proc.pid, 0)
            exited.append((os.waitstatus_to_exitcode(status), usage))

        timer = threading.Timer(int(req["timeoutMs"]) / 1000, kill_group)
        timer.daemon = True
        timer.start()
        waiter = threading.Thread(target=wait, name="sbx-wait", daemon=True)
        waiter.start()
        # Chunks go to on_chunk from this thread (it writes through the workflow's context), as they come.
        text: dict[str, list[str]] = {"stdout": [], "stderr": []}
        closed, drain_until = 0, None
        while closed < 2 and (drain_until is None or time.monotonic() < drain_until):
            try:
                item = chunks.get(timeout=0.05)
            except queue.Empty:
                item = ("", "")
            if item is None:
                closed += 1
            elif item[1]:
                kind, part = item
                if sum(map(len, text[kind])) < MAX_CAPTURE:
                    text[kind].append(part)
                on_chunk(kind, part)
            if drain_until is None and not waiter.is_alive():
                timer.cancel()
                _killpg(proc.pid)  # what the command left running in its group goes with it
                drain_until = time.monotonic() + 2  # a descendant that left the group keeps a pipe open
        waiter.join()
        timer.cancel()
        proc.stdout.close()
        proc.stderr.close()
        code, usage = exited[0]
        proc.returncode = code
        code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell reports it
        if code == 128 + signal.SIGXCPU:
            timed_out.set()
        return code, timed_out.is_set(), usage, "".join(text["stdout"]), "".join(text["stderr"])


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _classify(code: int, timed_out: bool, stderr: str) -> str:
    if timed_out:
        return "TIMEOUT"
    if code == 0:
        return "NONE"
    if code == 128 + signal.SIGKILL or _MEMORY.search(stderr):
        return "OOM"  # SIGKILL that was not ours: the kernel's OOM killer
    return "CMD_NONZERO"


def _files_out(workdir: Path) -> list[dict[str, Any]]:
    found = sorted(
        p for p in workdir.rglob("*") if p.suffix in OUT_SUFFIXES and p.is_file() and not p.is_symlink()
    )
    out = []
    for path in found[:MAX_OUT_FILES]:
        if path.stat().st_size > MAX_OUT_BYTES:
            continue
        text = path.read_bytes().decode("utf-8")
        out.append({"path": path.relative_to(workdir).as_posix(), "sha256": sha256_hex(text), "inline": text})
    return out


def _fail(
    req: dict[str, Any], code: str, message: str, started: float, raw: dict[str, Any]
) -> dict[str, Any]:
    wall = max(int((time.monotonic() - started) * 1000), 1)
    return {
        "exit": 1,
        "stdout": "",
        "stderr": message,
        "filesOut": [],
        "metrics": {"wallMs": wall, "cpuMs": 0, "memPeakMB": 0},
        "sandboxRef": "local-error",
        "errCode": code,
        "taskKey": req["taskKey"],
        "raw": {**raw, "error": message},
    }
