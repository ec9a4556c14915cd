"""The operation template's vocabulary: what an operation is, and the hooks around every one.

Every durable primitive (step, transaction, sleep, send, recv, start child, get result, wait for
children) runs through `Execution._operation`, which takes the next function id, calls
`before(op)` on each hook, runs the primitive (or replays its recorded result), and calls
`after(op, error)`. Hooks are where tracing spans, metrics and admission plug in, once, like
dramatiq's middleware. An exception a hook raises is logged and ignored, except a
`WorkflowInterrupt` (an admission hook may park the workflow with `Parked`); `after` sees `Parked`,
`Cancelled` and `Preempted` as the `error` when the operation unwound the workflow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kodo.records import Recorded
from kodo.states import OpKind

log = logging.getLogger(__name__)


@dataclass
class Op:
    """One operation of one workflow run, as the hooks see it."""

    kind: OpKind
    name: str
    workflow_id: str
    function_id: int
    recorded: Recorded | None  # set when the operation replays a recorded result
    companion_id: int = 0  # an operation recorded in two rows (recv: its deadline) has a companion
    companion: Recorded | None = None
    attempt: int = 1  # for steps: the attempt now running (retries count up)

    @property
    def replayed(self) -> bool:
        return self.recorded is not None


class OperationHook(Protocol):
    def before(self, op: Op) -> None: ...

    def after(self, op: Op, error: BaseException | None) -> None: ...


class Hooks:
    """The hooks of one engine, called in the order they were added (`after` in reverse)."""

    def __init__(self) -> None:
        self._hooks: list[OperationHook] = []

    def add(self, hook: OperationHook) -> None:
        self._hooks.append(hook)

    def remove(self, hook: OperationHook) -> None:
        self._hooks.remove(hook)

    def before(self, op: Op) -> None:
        for hook in self._hooks:
            self._call(hook.before, op)

    def after(self, op: Op, error: BaseException | None) -> None:
        for hook in reversed(self._hooks):
            self._call(hook.after, op, error)

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # an observer never breaks a workflow (a WorkflowInterrupt passes)
            log.warning("operation hook %r failed", fn, exc_info=True)
