"""`mise run sbx:live:smoke`: one real command through the configured sandbox provider (§6 "Live smoke").

    SBX_MODE=live SBX_PROVIDER=local|e2b|microsandbox python -m ops.sbxsmoke

The request is the original's: `cmd` = `SBX_LIVE_CMD` (default `echo sbx-live-stub`), task key
`sbx-live-smoke`, envRef `local-node-24`, timeout 30 s, ctx `{runId:"direct", stepId:"ExecuteST"}`.
It passes on exit 0, or on the microsandbox provider's deterministic `UNSUPPORTED` result; anything
else fails. Without `OC_STRICT_MODE`, an error that mentions `e2b_api_key`, `api key` or
`unauthorized` is reported as skipped (the original's rule); in strict mode it fails.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from kodo.config import Settings
from kodo.errors import ConfigError
from kodo.intent import sandbox

AUTH_WORDS = ("e2b_api_key", "api key", "unauthorized")


def say(message: str) -> None:
    print(f"[sbx] {message}", file=sys.stderr, flush=True)


def main() -> int:
    s = Settings.from_env()
    if s.sbx_mode != "live":
        say("SBX_MODE is not live: set SBX_MODE=live (and SBX_PROVIDER)")
        return 1
    req: dict[str, Any] = {
        "envRef": sandbox.ENV_REF,
        "cmd": s.sbx_live_cmd,
        "filesIn": [],
        "env": {},
        "timeoutMs": 30_000,
        "limits": {"cpu": 1, "memMB": 512},
        "net": s.sbx_default_net,
        "taskKey": "sbx-live-smoke",
    }

    def chunk(kind: str, text: str) -> None:
        print(f"{kind}: {text}", end="" if text.endswith("\n") else "\n", flush=True)

    try:
        res = sandbox.provider_for(s).run(req, {"runId": "direct", "stepId": "ExecuteST"}, chunk)
    except ConfigError as exc:
        res = {"exit": 1, "errCode": "BOOT_FAIL", "stderr": str(exc), "raw": {}}
    summary = {k: res.get(k) for k in ("exit", "errCode", "sandboxRef", "metrics")}
    say(f"provider {s.sbx_provider}: {json.dumps(summary)}")
    if (res.get("raw") or {}).get("status") == "UNSUPPORTED":
        say("PASS (deterministic unsupported result, no fallback)")
        return 0
    if res["exit"] == 0 and res["errCode"] == "NONE":
        say("PASS")
        return 0
    text = str(res.get("stderr", "")).lower()
    if not s.oc_strict_mode and any(w in text for w in AUTH_WORDS):
        say(f"SKIPPED (credentials missing, not strict): {res.get('stderr')}")
        return 0
    say(f"FAILED: {res.get('stderr')}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
