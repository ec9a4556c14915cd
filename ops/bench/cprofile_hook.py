"""cProfile in every thread of a Python process, from its start (or its fork) until it is asked for a
dump: the fallback of the end-to-end benchmark's `--profile` when py-spy is missing.

`install()` does nothing unless `KODO_BENCH_CPROFILE_DIR` is set; the benchmark sets it and puts a
`sitecustomize.py` calling it first on the stack's PYTHONPATH (`ops.bench.profiling.CProfileHook`).
Then each thread gets its own `cProfile.Profile` (the main thread at once, every later thread through
`threading.setprofile`, a forked child a fresh set), and a watcher thread writes them all, merged, to
`<dir>/<pid>.prof` once `<dir>/dump` exists.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import threading
import time
from types import FrameType
from typing import Any

DIR_VAR = "KODO_BENCH_CPROFILE_DIR"
TRIGGER = "dump"
_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _enable_here() -> None:
    prof = cProfile.Profile()
    with _lock:
        _profiles.append(prof)
    prof.enable()  # this thread's profile function from now on


def _thread_start(frame: FrameType, event: str, arg: Any) -> None:
    _enable_here()  # replaces this (Python-level) hook with the thread's own profiler


def _dump(out_dir: str) -> None:
    with _lock:
        profs = list(_profiles)
    stats = pstats.Stats(profs[0])
    for prof in profs[1:]:
        stats.add(prof)
    tmp = os.path.join(out_dir, f".{os.getpid()}.prof.tmp")
    stats.dump_stats(tmp)
    os.replace(tmp, os.path.join(out_dir, f"{os.getpid()}.prof"))


def _watch(out_dir: str, pid: int) -> None:
    trigger = os.path.join(out_dir, TRIGGER)
    while not os.path.exists(trigger):
        time.sleep(0.5)
    if os.getpid() == pid:
        _dump(out_dir)


def _begin(out_dir: str) -> None:
    global _lock
    _lock = threading.Lock()  # a child forked while another thread held it
    _profiles.clear()
    _enable_here()
    threading.Thread(target=_watch, args=(out_dir, os.getpid()), daemon=True, name="cprofile-dump").start()


def install() -> None:
    out_dir = os.environ.get(DIR_VAR)
    if not out_dir:
        return
    _begin(out_dir)
    threading.setprofile(_thread_start)  # threads started from now on (the watcher is already running)
    os.register_at_fork(after_in_child=lambda: _begin(out_dir))
