"""`--profile` of the end-to-end benchmark: where the API and the workers spend their CPU.

py-spy (installed into .venv on first use: `pip install py-spy`) samples the gunicorn master, the
intent worker's and the sbx worker's Celery main process with all their subprocesses (`--subprocesses`:
the gunicorn workers, the prefork pool children), 100 times a second, without pausing them
(`--nonblocking`), from the start to the end of the measured window. Each target leaves
`<name>.folded.txt` (collapsed stacks: open it in speedscope.app or feed it to flamegraph.pl) and
`<name>.top.txt` (a `py-spy top`-like table: functions by own and by total samples).

Without py-spy (it cannot be installed), `--profiler cprofile` or auto falls back to cProfile in every
Python process of the stack through a `sitecustomize` on their PYTHONPATH (`ops.bench.cprofile_hook`):
every thread of every process is profiled from its start (startup and warm-up included, which py-spy
leaves out) until the benchmark asks for the dump at the end of the window; `<pid>.prof` files are
merged per group into `<name>.prof` (pstats / snakeviz) and `<name>.top.txt`.
"""

from __future__ import annotations

import contextlib
import os
import pstats
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from ops import processes
from ops.bench import cprofile_hook
from ops.processes import Proc

PY_SPY = processes.BIN / "py-spy"
TARGETS = ("api", "intent worker", "sbx worker")
TOP_N = 30


def ensure_py_spy() -> str | None:
    """py-spy in .venv, installed with pip if missing; None if it is there, else why not."""
    if PY_SPY.exists():
        return None
    pip = [str(processes.BIN / "python"), "-m", "pip", "install", "-q", "py-spy"]
    try:
        done = subprocess.run(pip, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return "pip install py-spy timed out"
    if done.returncode != 0 or not PY_SPY.exists():
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"pip install py-spy failed: {lines[-1] if lines else done.returncode}"
    return None


def file_name(group: str) -> str:
    return group.replace(" ", "-")


class PySpy:
    """One `py-spy record` per target, from `start()` until `stop()`."""

    def __init__(self, out_dir: Path, rate: int = 100) -> None:
        self.out_dir = out_dir
        self.rate = rate
        self.procs: dict[str, Proc] = {}

    def start(self, targets: Mapping[str, int]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in targets.items():
            out = self.out_dir / f"{file_name(name)}.folded.txt"
            argv = [str(PY_SPY), "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--gil"]
            argv += ["--rate", str(self.rate), "--format", "raw", "-o", str(out)]
            self.procs[name] = processes.spawn(
                f"py-spy-{file_name(name)}", argv, os.environ, self.out_dir / f"{file_name(name)}.py-spy.log"
            )
        time.sleep(1.0)  # attaching to every subprocess takes a moment
        for proc in self.procs.values():
            proc.ensure_running(" (py-spy could not attach?)")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.running()]

    def kill(self) -> None:
        """kill -9 whatever py-spy still runs (the benchmark failed before `stop()`)."""
        for proc in self.procs.values():
            if proc.running():
                proc.kill9()

    def stop(self) -> list[str]:
        """SIGINT each (py-spy then writes its file); returns one summary line per target."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
        lines = []
        for name, proc in self.procs.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill9()
            folded = self.out_dir / f"{file_name(name)}.folded.txt"
            if not folded.exists():
                lines.append(f"{name}: no profile written (see {proc.log}): {proc.tail(3)}")
                continue
            header = f"py-spy --gil at {self.rate}/s: the thread holding the GIL in each process"
            top, total = summarize_folded(folded.read_text(), header)
            path = self.out_dir / f"{file_name(name)}.top.txt"
            path.write_text(top)
            lines.append(f"{name}: {total} samples -> {folded.name}, {path.name}")
        return lines


def summarize_folded(text: str, header: str = "", n: int = TOP_N) -> tuple[str, int]:
    """A `py-spy top`-like table from collapsed stacks: functions by own samples, by total (inclusive)
    samples, and kodo's own functions (kodo/, workers/) by total samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        k = int(count)
        samples += k
        if frames:
            own[frames[-1]] += k
        for f in set(frames):
            total[f] += k

    def pct(k: int) -> float:
        return 100 * k / max(samples, 1)

    out = [f"{samples} samples{'; ' + header if header else ''}", "", f"{'%own':>6} {'%total':>7}  function"]
    out += [f"{pct(k):6.1f} {pct(total[func]):7.1f}  {func}" for func, k in own.most_common(n)]
    out += ["", "by total (inclusive) samples:", f"{'%total':>7}  function"]
    out += [f"{pct(k):7.1f}  {func}" for func, k in total.most_common(n)]
    ours = [(func, k) for func, k in total.most_common() if "(kodo/" in func or "(workers/" in func][:n]
    out += ["", "kodo's own functions (kodo/, workers/) by total samples:", f"{'%total':>7}  function"]
    out += [f"{pct(k):7.1f}  {func}" for func, k in ours]
    return "\n".join(out) + "\n", samples


class CProfileHook:
    """cProfile in every Python process of the stack (`ops.bench.cprofile_hook`), dumped on request."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.site_dir = out_dir / "site"

    def env(self, base_pythonpath: str | None) -> dict[str, str]:
        """What the stack's environment needs: the sitecustomize first on PYTHONPATH, and the dir."""
        self.site_dir.mkdir(parents=True, exist_ok=True)
        for old in [self.out_dir / cprofile_hook.TRIGGER, *self.out_dir.glob("*.prof")]:
            old.unlink(missing_ok=True)  # a dump of an earlier run in the same directory
        (self.site_dir / "sitecustomize.py").write_text(
            "from ops.bench import cprofile_hook\n\ncprofile_hook.install()\n"
        )
        path = os.pathsep.join(filter(None, [str(self.site_dir), str(processes.REPO), base_pythonpath]))
        return {"PYTHONPATH": path, cprofile_hook.DIR_VAR: str(self.out_dir)}

    def stop(self, groups: Mapping[str, list[int]]) -> list[str]:
        """Ask every process for its dump, wait for them, merge them per group."""
        (self.out_dir / cprofile_hook.TRIGGER).touch()
        wanted = {pid for name in TARGETS for pid in groups.get(name, [])}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            have = {int(p.stem) for p in self.out_dir.glob("*.prof") if p.stem.isdigit()}
            if wanted <= have:
                break
            time.sleep(0.2)
        lines = []
        for name in TARGETS:
            files = [self.out_dir / f"{pid}.prof" for pid in groups.get(name, [])]
            files = [f for f in files if f.exists()]
            if not files:
                lines.append(f"{name}: no cProfile dump")
                continue
            stats = pstats.Stats(str(files[0]))
            for f in files[1:]:
                stats.add(str(f))
            merged = self.out_dir / f"{file_name(name)}.prof"
            stats.dump_stats(str(merged))
            top = self.out_dir / f"{file_name(name)}.top.txt"
            with top.open("w") as out:
                out.write(
                    "cProfile times are wall-clock, summed over every thread: the top of this list is"
                    " mostly waiting\n(lock acquire, queue get, epoll, sleep); read the kodo/ rows and"
                    " cumtime for where the work goes.\n"
                )
                pstats.Stats(str(merged), stream=out).sort_stats("tottime").print_stats(TOP_N)
            lines.append(f"{name}: {len(files)} processes -> {merged.name}, {top.name}")
        shutil.rmtree(self.site_dir, ignore_errors=True)
        return lines
