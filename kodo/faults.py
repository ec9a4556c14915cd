"""Named fault points for crash tests (DBOS's debug-trigger idea). No-ops unless KODO_FAULTS is set.

`KODO_FAULTS="step.committed@mark"` arms the point `step.committed` for operations named `mark`
(`*` matches any). When an armed point is reached the process writes `<point>@<name>` to the file
named by KODO_FAULT_FILE (if set), flushes it, and then hangs, so a test can `kill -9` the worker at
exactly that instruction. Each point is used at exactly one call site. The variables are read through
`kodo.config.fault_settings`, at each call (not once), so a test arms a worker through its environment.
"""

from __future__ import annotations

import os
import time

from kodo.config import fault_settings

STEP_STARTED = "step.started"  # inside a step: boundary checked, function not yet run
STEP_COMMITTED = "step.committed"  # right after a step's checkpoint committed
WORKFLOW_PARKED = "workflow.parked"  # right after a wait was committed (lease released)
OC_RECORDED = "oc.recorded"  # a model call's ledger row committed, its step's checkpoint not yet

ALL_POINTS = (STEP_STARTED, STEP_COMMITTED, WORKFLOW_PARKED, OC_RECORDED)


def _armed(spec: str | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        point, _, name = item.partition("@")
        if point not in ALL_POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {', '.join(ALL_POINTS)}")
        out.append((point, name or "*"))
    return out


def armed(point: str, name: str) -> bool:
    """Whether `point` is armed for `name` (the engine commits its batch before such a point)."""
    settings = fault_settings()
    return settings is not None and any(p == point and n in ("*", name) for p, n in _armed(settings.spec))


def reached(point: str, name: str) -> None:
    """Hang here (awaiting SIGKILL) if `point` is armed for `name`; otherwise return at once."""
    if not armed(point, name):
        return
    settings = fault_settings()
    if settings is not None and settings.marker_file:
        with open(settings.marker_file, "a", encoding="utf-8") as fh:
            fh.write(f"{point}@{name} pid={os.getpid()}\n")
    while True:  # the test kills us here
        time.sleep(3600)
