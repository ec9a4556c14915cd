"""The calls a workflow body makes. Each routes to the current Execution (a contextvar).

Outside a workflow, steps and transactions simply run, and `sleep` sleeps; the other calls need a
workflow and raise RuntimeError.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, NamedTuple

from kodo.workflow.registry import RetryPolicy, WorkflowDef

if TYPE_CHECKING:
    from kodo.config import Settings
    from kodo.workflow.execution import Execution

_current: ContextVar[Execution | None] = ContextVar("kodo_execution", default=None)
DEFAULT_TOPIC = "__default__"


def enter(ex: Execution) -> Token[Execution | None]:
    """Make `ex` the current execution (the engine, while it runs a workflow body)."""
    return _current.set(ex)


def leave(token: Token[Execution | None]) -> None:
    _current.reset(token)


def current() -> Execution | None:
    return _current.get()


def _require(what: str) -> Execution:
    ex = _current.get()
    if ex is None:
        raise RuntimeError(f"{what} can only be called inside a workflow")
    return ex


def current_workflow_id() -> str:
    return _require("current_workflow_id()").workflow_id


def connection(transaction: bool = False) -> AbstractContextManager[Any]:
    """A product connection for reads and writes outside any checkpoint (a step's own effects).

    Writes that must commit with the step's checkpoint belong in a `@transaction` step instead.
    """
    return _require("connection()").engine.store.product_connection(transaction)


def settings() -> Settings:
    """The Settings of the process running the current workflow."""
    return _require("settings()").engine.settings


class TraceIds(NamedTuple):
    """The trace and span id of the operation now running (32 and 16 hex digits), or None twice."""

    trace_id: str | None
    span_id: str | None


_NO_TRACE = TraceIds(None, None)
_trace: ContextVar[TraceIds] = ContextVar("kodo_trace_ids", default=_NO_TRACE)


def trace_ids() -> TraceIds:
    """The ids of the span of the operation now running, as a tracing hook set them (`kodo.telemetry`);
    (None, None) when tracing is off. The product stores them (`app.run_steps`) without a tracer."""
    return _trace.get()


def bind_trace_ids(trace_id: str, span_id: str) -> Token[TraceIds]:
    """For an operation hook's `before`: what `trace_ids()` returns until `unbind_trace_ids(token)`."""
    return _trace.set(TraceIds(trace_id, span_id))


def unbind_trace_ids(token: Token[TraceIds]) -> None:
    _trace.reset(token)


def step_attempt() -> int:
    """1-based attempt number of the step now running (retries count up)."""
    return _require("step_attempt()").step_attempt


def run_step(
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    retry: RetryPolicy | None,
    pure: bool = False,
) -> Any:
    ex = _current.get()
    if ex is None:
        return fn(*args, **kwargs)
    return ex.run_step(name, fn, args, kwargs, retry, pure)


def run_transaction(
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    batch: bool | Callable[[], bool] = True,
) -> Any:
    ex = _current.get()
    if ex is None:
        raise RuntimeError(f"transaction {name} can only run inside a workflow (it needs the checkpoint tx)")
    return ex.run_transaction(name, fn, args, kwargs, batch)


def sleep(seconds: float) -> None:
    """Durable sleep: the wake-up time is recorded; the worker is released until it is due."""
    ex = _current.get()
    if ex is None:
        time.sleep(seconds)
        return
    ex.sleep(seconds)


def recv(topic: str = DEFAULT_TOPIC, timeout_s: float = 60.0) -> Any:
    """Receive the next message on `topic` (consumed exactly once), or None after `timeout_s`."""
    return _require("recv()").recv(topic, timeout_s)


def send(destination: str, message: Any, topic: str = DEFAULT_TOPIC) -> None:
    """Send a durable message to another workflow (exactly once per call site)."""
    _require("send()").send(destination, message, topic)


def start_child(
    wf: WorkflowDef[..., Any],
    *args: Any,
    workflow_id: str | None = None,
    queue: str | None = None,
    partition_key: str | None = None,
    **kwargs: Any,
) -> str:
    """Start a child workflow (idempotent); returns its id."""
    return _require("start_child()").start_child(wf, args, kwargs, workflow_id, queue, partition_key)


def start_children(
    wf: WorkflowDef[..., Any],
    calls: list[tuple[tuple[Any, ...], str]],
    *,
    queue: str | None = None,
    partition_key: str | None = None,
) -> list[str]:
    """Start one child per `(args, workflow_id)` at once (one operation, one transaction, one
    checkpoint, however many children); returns their ids. Wait for them with `wait_children()`."""
    return _require("start_children()").start_children(wf, calls, queue, partition_key)


def get_result(child_id: str) -> Any:
    """Wait (without holding a worker) for a child to finish; return its output or raise its error."""
    return _require("get_result()").get_result(child_id)


def wait_children() -> list[dict[str, Any]]:
    """Wait until every child of this workflow finished; returns their ids, statuses and outputs."""
    return _require("wait_children()").wait_children()
