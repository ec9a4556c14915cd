"""Workflows used by the tests. Real workers import this module via KODO_WORKFLOW_MODULES.

Effects go to `public.test_effects`, which counts every execution (it is NOT idempotent), so a test
can tell "ran once" from "ran twice".
"""

from __future__ import annotations

import os
import time
from typing import Any

from kodo import workflow as wf
from kodo.db.pool import Database
from kodo.workflow import context

TEST_EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS public.test_effects (
    workflow_id text NOT NULL, effect text NOT NULL, n integer NOT NULL DEFAULT 1,
    PRIMARY KEY (workflow_id, effect))
"""
_COUNT = """
INSERT INTO public.test_effects (workflow_id, effect) VALUES (%(w)s, %(e)s)
ON CONFLICT (workflow_id, effect) DO UPDATE SET n = test_effects.n + 1
"""


def _db() -> Database:
    ex = context.current()
    assert ex is not None
    return ex.engine.db


def count_effect(effect: str) -> None:
    with _db().conn() as c:
        c.execute(_COUNT, {"w": wf.current_workflow_id(), "e": effect})


@wf.transaction(name="t.tx_effect")
def tx_effect(conn: Any, effect: str) -> str:
    conn.execute(_COUNT, {"w": wf.current_workflow_id(), "e": effect})
    return effect


@wf.step(name="t.plain_effect")
def plain_effect(effect: str, hold_s: float = 0.0) -> str:
    count_effect(effect)
    if hold_s:
        time.sleep(hold_s)
    return effect


@wf.step(name="t.noop")
def noop(i: int) -> int:
    return i


@wf.workflow(name="t.four_steps", queue="intentQ")
def four_steps() -> int:
    total = 0
    for i in range(4):
        total += noop(i)
    return total


@wf.workflow(name="t.effects", queue="intentQ")
def effects(n: int, hold_s: float = 0.0) -> list[str]:
    return [tx_effect(f"e{i}") if i % 2 == 0 else plain_effect(f"e{i}", hold_s) for i in range(n)]


@wf.workflow(name="t.sleeper", queue="intentQ")
def sleeper(sleep_s: float) -> str:
    tx_effect("before")
    wf.sleep(sleep_s)
    tx_effect("after")
    return "woke"


@wf.workflow(name="t.receiver", queue="intentQ")
def receiver(topic: str, timeout_s: float) -> Any:
    first = wf.recv(topic, timeout_s)
    tx_effect("received")
    return first


@wf.workflow(name="t.child", queue="sbxQ")
def child(i: int, fail: bool = False) -> int:
    tx_effect(f"child{i}")
    if fail:
        raise ValueError(f"child {i} failed")
    return i * 10


@wf.workflow(name="t.fan_out", queue="intentQ")
def fan_out(n: int) -> list[int]:
    ids = [wf.start_child(child, i, workflow_id=f"{wf.current_workflow_id()}-c{i}") for i in range(n)]
    done = wf.wait_children()
    assert sorted(d["workflow_id"] for d in done) == sorted(ids)
    return [int(wf.get_result(cid)) for cid in ids]


@wf.workflow(name="t.fails", queue="intentQ")
def fails(message: str) -> None:
    tx_effect("before-fail")
    raise RuntimeError(message)


@wf.step(name="t.flaky", retry=wf.RetryPolicy(max_attempts=3, interval_s=0.05, backoff=2.0))
def flaky(succeed_on: int) -> int:
    count_effect("flaky-attempt")
    attempt = context.step_attempt()
    if attempt < succeed_on:
        raise ConnectionError(f"attempt {attempt} failed")
    return attempt


@wf.workflow(name="t.retrying", queue="intentQ")
def retrying(succeed_on: int) -> int:
    return int(flaky(succeed_on))


@wf.workflow(name="t.branchy", queue="intentQ")
def branchy() -> str:
    # Non-deterministic on purpose: the step name depends on the environment of the runner.
    if os.environ.get("KODO_TEST_BRANCH") == "b":
        return str(plain_effect("b"))
    return str(tx_effect("a"))


@wf.workflow(name="t.sender", queue="intentQ")
def sender(destination: str, topic: str, message: Any) -> str:
    wf.send(destination, message, topic)
    return "sent"
