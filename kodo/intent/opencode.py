"""A client of the OpenCode server's HTTP API (contract-internals §7), the one the original called.

Endpoints: `GET /global/health` (`{healthy: true}`), `GET /app/agents` (`[{id}]`), `POST /session
{title}` (`{id}`), `POST /session/<id>/prompt {agent, parts:[{type:"text", text}], format:{type:
"json_schema", schema, retryCount}}`, `GET /session/<id>/message`, `POST /session/<id>/revert
{messageID}` and `POST /app/log {message, level}`. A prompt's answer is read from
`info.structured_output`, `info.tool_calls[{name, arguments|args}]`, `messages` and
`usage.total_tokens`; an error body named `StructuredOutputError` (or carrying `attempts`) is a
`StructuredOutputError`.

Stall policy: no byte for `OC_TIMEOUT_MS` is a stall; the session is reverted and the prompt sent
once more with a request to be concise; a second stall is `oc_timeout_terminal`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

CONCISE = "\n\nIMPORTANT: Be more concise and tighten scope to avoid timeout."
CONNECT_TIMEOUT_S = 5.0


class OcError(Exception):
    """A failed call to the OpenCode server."""


class OcUnavailableError(OcError):
    """The server cannot be reached, refused the call (e.g. 401) or answered something unreadable."""


class StructuredOutputError(OcError):
    """The model's answer does not fit the schema."""

    def __init__(self, message: str, attempts: Any = None, raw: Any = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.raw = raw


class OcStallError(OcError):
    """No activity from the server for OC_TIMEOUT_MS (`oc_stall`)."""


class OcTimeoutTerminalError(OcError):
    """The prompt stalled twice (`oc_timeout_terminal`)."""


@dataclass(frozen=True)
class PromptResult:
    structured: dict[str, Any]
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    total_tokens: int | None = None
    raw_response: str = ""


class OpenCodeClient:
    def __init__(self, base_url: str, timeout_ms: int) -> None:
        # httpx is imported on first use, not with this module: with `rich` installed it loads its
        # command line (rich, pygments), 18 MiB in every process, most of which never call OpenCode.
        import httpx

        self.base_url = base_url.rstrip("/")
        # `read` is the stall detector: the longest silence between two bytes of an answer.
        self._timeout = httpx.Timeout(timeout_ms / 1000, connect=min(CONNECT_TIMEOUT_S, timeout_ms / 1000))

    def _request(self, op: str, method: str, path: str, body: Any = None) -> httpx.Response:
        import httpx

        try:
            with httpx.Client(timeout=self._timeout) as http:
                return http.request(method, self.base_url + path, json=body)
        except httpx.ReadTimeout as exc:
            raise OcStallError(f"oc_stall: {op}: no activity for {self._timeout.read} s") from exc
        except httpx.HTTPError as exc:
            raise OcUnavailableError(f"{op}: {type(exc).__name__}: {exc}") from exc

    def _json(self, op: str, method: str, path: str, body: Any = None) -> Any:
        res = self._request(op, method, path, body)
        if res.status_code >= 400:
            raise OcUnavailableError(f"{op}: HTTP {res.status_code}: {res.text[:200]}")
        try:
            return res.json()
        except ValueError as exc:
            raise OcUnavailableError(f"{op}: the answer is not JSON: {res.text[:200]}") from exc

    # ---- the server ------------------------------------------------------------------------------

    def health(self) -> bool:
        """True when `GET /global/health` answers 200 with `healthy: true`."""
        try:
            body = self._json("health", "GET", "/global/health")
        except OcError:
            return False
        return isinstance(body, dict) and body.get("healthy") is True

    def agents(self) -> list[str]:
        body = self._json("agents", "GET", "/app/agents")
        if not isinstance(body, list):
            raise OcUnavailableError(f"agents: expected a list, got {str(body)[:200]}")
        return [str(a.get("id") if isinstance(a, dict) else a) for a in body]

    def log(self, message: str, level: str = "info") -> None:
        """Best effort: a log line lost never fails a step."""
        try:
            self._request("log", "POST", "/app/log", {"message": message, "level": level})
        except OcError:
            log.debug("OpenCode log call failed", exc_info=True)

    # ---- sessions and prompts --------------------------------------------------------------------

    def create_session(self, title: str) -> str:
        body = self._json("session", "POST", "/session", {"title": title})
        sid = body.get("id") if isinstance(body, dict) else None
        if not isinstance(sid, str) or not sid:
            raise OcUnavailableError(f"session: no id in {str(body)[:200]}")
        return sid

    def prompt(
        self, session_id: str, agent: str, text: str, schema: dict[str, Any], retry_count: int
    ) -> PromptResult:
        payload = {
            "agent": agent,
            "parts": [{"type": "text", "text": text}],
            "format": {"type": "json_schema", "schema": schema, "retryCount": retry_count},
        }
        res = self._request("prompt", "POST", f"/session/{session_id}/prompt", payload)
        body: Any
        try:
            body = res.json()
        except ValueError:
            body = None
        error = _structured_error(body)
        if error is not None:
            raise error
        if res.status_code >= 400 or not isinstance(body, dict):
            raise OcUnavailableError(f"prompt: HTTP {res.status_code}: {res.text[:200]}")
        info: dict[str, Any] = body["info"] if isinstance(body.get("info"), dict) else {}
        structured = info.get("structured_output")
        if not isinstance(structured, dict):
            raise StructuredOutputError("prompt: the answer has no structured_output", raw=res.text)
        calls = info.get("tool_calls") or []
        usage: dict[str, Any] = body["usage"] if isinstance(body.get("usage"), dict) else {}
        tokens = usage.get("total_tokens")
        return PromptResult(
            structured=structured,
            tool_calls=[
                {"name": str(c.get("name")), "args": c.get("arguments", c.get("args"))}
                for c in calls
                if isinstance(c, dict)
            ],
            responses=list(body.get("messages") or []),
            total_tokens=tokens if isinstance(tokens, int) else None,
            raw_response=res.text,
        )

    def revert_last(self, session_id: str) -> None:
        """Revert the session's last message (best effort: the retry is sent either way)."""
        try:
            messages = self._json("messages", "GET", f"/session/{session_id}/message")
            last = messages[-1] if isinstance(messages, list) and messages else None
            info = last.get("info", last) if isinstance(last, dict) else None
            mid = info.get("id") if isinstance(info, dict) else None
            if isinstance(mid, str):
                self._request("revert", "POST", f"/session/{session_id}/revert", {"messageID": mid})
        except OcError:
            log.warning("OpenCode revert of session %s failed", session_id, exc_info=True)

    def prompt_with_stall_retry(
        self, session_id: str, agent: str, text: str, schema: dict[str, Any], retry_count: int
    ) -> PromptResult:
        """The stall policy: one stall reverts and retries once (asking for concision); two end it."""
        try:
            return self.prompt(session_id, agent, text, schema, retry_count)
        except OcStallError:
            log.warning("OpenCode prompt stalled (session %s); reverting and retrying once", session_id)
        self.revert_last(session_id)
        try:
            return self.prompt(session_id, agent, text + CONCISE, schema, retry_count)
        except OcStallError as exc:
            raise OcTimeoutTerminalError(f"oc_timeout_terminal: {exc}") from exc


def _structured_error(body: Any) -> StructuredOutputError | None:
    if not isinstance(body, dict):
        return None
    err: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else body
    if err.get("name") == "StructuredOutputError" or "attempts" in err:
        message = str(err.get("message") or err.get("data") or "StructuredOutputError")
        return StructuredOutputError(message, attempts=err.get("attempts"), raw=body)
    return None
