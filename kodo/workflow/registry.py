"""Declaring workflows and steps: the decorators and the name -> function registry.

Names are the stable identity recorded in `dbos.workflow_status.name` and
`dbos.operation_outputs.function_name`; renaming one is a breaking change for in-flight runs.
Must not import flask, celery or psycopg.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast

from kodo.errors import UnknownWorkflowError

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class RetryPolicy:
    """Step retries: `max_attempts` in all, waiting `interval_s * backoff**(n-2)` before attempt n.

    `retry_if` decides per exception; by default every Exception is retried. Each failed attempt is
    recorded and the workflow parks for the backoff (no worker waits through it).
    """

    max_attempts: int = 3
    interval_s: float = 1.0
    backoff: float = 2.0
    retry_if: Callable[[Exception], bool] = field(default=lambda exc: True)

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before `attempt` (2, 3, ...)."""
        return float(self.interval_s * self.backoff ** (attempt - 2))

    def delay_ms_before(self, attempt: int) -> int:
        return max(int(self.delay_before(attempt) * 1000), 0)


@dataclass(frozen=True)
class WorkflowDef(Generic[P, R]):
    """A registered workflow. Calling it runs the body directly; start it with `kodo.workflow.client`."""

    name: str
    fn: Callable[P, R]
    queue: str
    max_recovery_attempts: int
    # The product hook: `on_transition(conn, transition, detail, *args, **kwargs)` runs inside the
    # transaction of every engine transition (kodo.states.Transition: success, error with its
    # message as `detail`, cancel, resume), with the workflow's own arguments, so product rows
    # change together with the status, even when no runner holds the workflow.
    on_transition: Callable[..., None] | None = None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)


class Registry:
    def __init__(self) -> None:
        self._workflows: dict[str, WorkflowDef[Any, Any]] = {}

    def add(self, wf: WorkflowDef[Any, Any]) -> None:
        existing = self._workflows.get(wf.name)
        if existing is not None and existing.fn is not wf.fn:
            raise ValueError(f"workflow name {wf.name!r} is registered twice")
        self._workflows[wf.name] = wf

    def get(self, name: str) -> WorkflowDef[Any, Any]:
        try:
            return self._workflows[name]
        except KeyError:
            raise UnknownWorkflowError(f"no workflow registered as {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._workflows)


REGISTRY = Registry()


def workflow(
    name: str | None = None,
    *,
    queue: str = "intentQ",
    max_recovery_attempts: int = 50,
    on_transition: Callable[..., None] | None = None,
) -> Callable[[Callable[P, R]], WorkflowDef[P, R]]:
    """Register a workflow function under `name` (default: module.qualname).

    `on_transition` is the product hook (see WorkflowDef).
    """

    def deco(fn: Callable[P, R]) -> WorkflowDef[P, R]:
        wf = WorkflowDef(
            name=name or f"{fn.__module__}.{fn.__qualname__}",
            fn=fn,
            queue=queue,
            max_recovery_attempts=max_recovery_attempts,
            on_transition=on_transition,
        )
        REGISTRY.add(wf)
        return wf

    return deco


def step(
    name: str | None = None, *, retry: RetryPolicy | None = None, pure: bool = False
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A checkpointed step: inside a workflow its result (or error) is recorded and replayed.

    Its function runs after the delivery's batch has committed (its effects leave the database), and
    its record commits at once. `pure=True` says it has no effect at all (a computation on its
    arguments): it runs inside the batch, and its record commits with it (`kodo.workflow.execution`).
    """

    def deco(fn: Callable[P, R]) -> Callable[P, R]:
        op_name = name or fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            from kodo.workflow import context

            return cast(R, context.run_step(op_name, fn, args, kwargs, retry=retry, pure=pure))

        return wrapper

    return deco


def transaction(
    name: str | None = None, *, batch: bool | Callable[[], bool] = True
) -> Callable[[Callable[Concatenate[Any, P], R]], Callable[P, R]]:
    """A step whose database writes commit in the same transaction as its checkpoint.

    The function receives the open connection as its first argument. If the checkpoint's fence fails
    (another runner owns the workflow) the whole transaction rolls back: exactly-once for SQL effects.
    Its transaction joins the delivery's batch (`kodo.workflow.execution`): it commits with the
    operations around it. `batch=False` (or a callable saying False when the step runs) commits the
    batch first, so a step that waits on something outside the database holds none of its locks.
    """

    def deco(fn: Callable[Concatenate[Any, P], R]) -> Callable[P, R]:
        op_name = name or fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            from kodo.workflow import context

            return cast(R, context.run_transaction(op_name, fn, args, kwargs, batch))

        return wrapper

    return deco
