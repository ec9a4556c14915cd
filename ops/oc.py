"""The OpenCode daemon tasks (contract-internals §7, §12): `python -m ops.oc up|health|stop|smoke|refresh`.

* `up` (`mise run oc:daemon:up`): nothing to do if `OC_BASE_URL` is healthy already. Otherwise it starts
  `opencode serve --hostname $OC_SERVER_HOST --port $OC_SERVER_PORT --cors $OC_SERVER_CORS` when the
  `opencode` binary is installed, else the local stand-in `ops.ocmock` on that port, which kodo ships
  because this build installs no OpenCode (the stand-in is a local fake of the daemon, as the
  runbook's strict signoff L16 runs here; strict mode still fails every call the daemon cannot
  answer); `--require-binary` (`oc:daemon:signoff`) makes a missing binary a failure instead. Pid file `.tmp/oc-daemon-<port>.pid`, log `.tmp/oc-daemon-<port>.log`; then it
  waits for health like `health`.
* `health` (`oc:daemon:health`): `GET /global/health` must say `healthy: true` within
  `OC_HEALTH_RETRIES` x 0.5 s.
* `stop` (`oc:daemon:stop`): stops the process the pid file names (and what it started).
* `smoke` (`oc:live:smoke`): health, then the agent list (must include `plan` and `build`). An
  unreachable or unauthorized daemon fails; without strict mode a 401/unauthorized is reported as
  skipped (the original's rule).
* `refresh` (`oc:refresh`): writes the record-mode fixture of intent `refresh-fixture`, seed
  `TEST_SEED` (424242): `<OC_FIXTURE_DIR>/d932df41...8d7b.json`, a `noop` tool call.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from kodo.config import Settings
from kodo.intent import planner
from kodo.intent.opencode import OcError, OpenCodeClient
from ops import pidfiles, processes

DEFAULT_CORS = "http://localhost:3000"


def say(message: str) -> None:
    print(f"[oc] {message}", file=sys.stderr, flush=True)


def _client(s: Settings) -> OpenCodeClient:
    return OpenCodeClient(s.oc_base_url, min(s.oc_timeout_ms, 10_000))


def wait_healthy(s: Settings) -> bool:
    client = _client(s)
    for _ in range(s.oc_health_retries):
        if client.health():
            return True
        time.sleep(0.5)
    return False


def up(s: Settings, cors: str, require_binary: bool = False) -> int:
    if _client(s).health():
        say(f"already healthy at {s.oc_base_url}")
        return 0
    port = str(s.oc_server_port)
    binary = shutil.which("opencode")
    if binary is not None:
        argv = [binary, "serve", "--hostname", s.oc_server_host, "--port", port, "--cors", cors]
    elif require_binary:
        say("no `opencode` binary installed and --require-binary: no stand-in")
        return 1
    else:
        strict = " (OC_STRICT_MODE=1: a local fake of the daemon, not a fallback)" if s.oc_strict_mode else ""
        say(f"no `opencode` binary installed: starting the local stand-in (ops.ocmock){strict}")
        argv = [sys.executable, "-m", "ops.ocmock", "--host", s.oc_server_host, "--port", port]
    log = pidfiles.RUN_DIR / f"oc-daemon-{port}.log"
    proc = processes.spawn("oc-daemon", argv, processes.child_env({}), log)
    (pidfiles.RUN_DIR / f"oc-daemon-{port}.pid").write_text(f"{proc.pid}\n")
    if not wait_healthy(s):
        say(f"not healthy at {s.oc_base_url}; log: {log}")
        return 1
    say(f"healthy at {s.oc_base_url} (pid {proc.pid}, log {log})")
    return 0


def stop(s: Settings) -> int:
    path = pidfiles.RUN_DIR / f"oc-daemon-{s.oc_server_port}.pid"
    pid = pidfiles.recorded_pid(path)
    if pid is not None:
        processes.terminate_tree(pid)
        say(f"stopped pid {pid}")
    path.unlink(missing_ok=True)
    return 0


def smoke(s: Settings) -> int:
    client = _client(s)
    try:
        if not client.health():
            raise OcError(f"GET {s.oc_base_url}/global/health is not healthy")
        agents = client.agents()
    except OcError as exc:
        if not s.oc_strict_mode and ("401" in str(exc) or "unauthorized" in str(exc).lower()):
            say(f"SKIPPED (not strict): {exc}")
            return 0
        say(f"FAILED: {exc}")
        return 1
    missing = {"plan", "build"} - set(agents)
    if missing:
        say(f"FAILED: agents {agents} lack {sorted(missing)}")
        return 1
    say(f"OK: {s.oc_base_url} healthy, agents {agents}")
    return 0


def refresh(s: Settings) -> int:
    answer = {
        "structured": {},
        "toolcalls": [{"name": "noop", "args": {}}],
        "responses": [],
    }
    path = planner.write_fixture(s, "refresh-fixture", answer)
    say(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.oc", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "health", "stop", "smoke", "refresh"))
    parser.add_argument("--cors", default=DEFAULT_CORS, help="OC_SERVER_CORS")
    parser.add_argument(
        "--require-binary", action="store_true", help="up: fail unless a real `opencode` binary is installed"
    )
    args = parser.parse_args(argv)
    s = Settings.from_env()
    pidfiles.RUN_DIR.mkdir(parents=True, exist_ok=True)
    if args.command == "up":
        return up(s, args.cors, args.require_binary)
    if args.command == "health":
        ok = wait_healthy(s)
        say(("healthy at " if ok else "not healthy at ") + s.oc_base_url)
        return 0 if ok else 1
    if args.command == "stop":
        return stop(s)
    if args.command == "smoke":
        return smoke(s)
    return refresh(s)


if __name__ == "__main__":
    sys.exit(main())
