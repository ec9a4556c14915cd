"""Sandbox streaming (seed 000 L10, `sbx-streaming`): a task's stdout and stderr reach
`dbos.notifications` (destination = the task key) as ordered chunks while the command runs, closed
by one terminal `stream_closed`; the run stream (`GET /api/runs/:wid/stream`) carries the same chunks
(tests/integration/test_run_stream.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

from kodo.runtime import Runtime
from tests.support import procs
from tests.support.intent import Sql, start_run, wait_run


def test_stdout_and_stderr_chunks_in_order_then_stream_closed(
    rt: Runtime, sql: Sql, start_worker: Callable[..., procs.WorkerProc]
) -> None:
    start_worker(env={"SBX_MODE": "live", "SBX_PROVIDER": "local"})
    # Pauses between the writes: each one arrives as its own chunk, in the order written.
    command = "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; sleep 0.3; echo four >&2"
    _, run_id = start_run(
        rt, sql, "streaming", constraints={"testHooks": {"testCommand": command}}, approved=True
    )
    wait_run(sql, run_id, "succeeded")
    [task] = sql("SELECT task_key FROM app.sbx_runs WHERE run_id = %s", (run_id,))
    rows = sql(
        "SELECT topic, message FROM dbos.notifications WHERE destination_uuid = %s ORDER BY seq",
        (task["task_key"],),
    )
    chunks = [(r["topic"], json.loads(r["message"])) for r in rows]
    assert [(topic, m.get("chunk")) for topic, m in chunks] == [
        ("stdout", "one\n"),
        ("stderr", "two\n"),
        ("stdout", "three\n"),
        ("stderr", "four\n"),
        ("stream_closed", None),
    ]
    # Numbered in order, the terminal marker last.
    assert [m["seq"] for _, m in chunks] == [0, 1, 2, 3, 4]
    assert [m.get("kind") for _, m in chunks[:-1]] == ["stdout", "stderr", "stdout", "stderr"]
