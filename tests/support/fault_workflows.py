"""Workflows of the fault tests (tests/chaos/test_pg_fault.py, test_redis_fault.py).

`f.chain(n, pause_s)`: n transactional effects (each counted in `public.test_effects` in the step's
own transaction, so a step that ran twice shows n = 2) with a pause step between them, so that a
fault lands in the middle of runs.
"""

from __future__ import annotations

import time

from kodo import workflow as wf
from tests.support.workflows import tx_effect


@wf.step(name="f.pause")
def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@wf.workflow(name="f.chain", queue="intentQ")
def chain(n: int, pause_s: float) -> int:
    for i in range(n):
        tx_effect(f"e{i}")
        pause(pause_s)
    return n
