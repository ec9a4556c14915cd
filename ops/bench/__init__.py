"""Benchmarks. `python -m ops.bench.engine`: kodo vs DBOS Transact (queue mode) vs raw Celery.

The pieces, by what they own: `engine` (the command line and the run), `systems` (each system's workers
started, measured and stopped), `measure` (the measurement loops and the timing method), `probes` (how
completion is seen), `stats` (what was measured), `services` (the databases and the broker), `report`
(the printed tables), `dbos_app` / `raw_celery` / `kodo_workflows` (the workload on each system) and
`kodo_profile` (kodo in-process, without Celery). Processes are started and stopped by `ops.processes`.
"""

from __future__ import annotations

import time


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
