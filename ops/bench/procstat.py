"""CPU and memory of named groups of processes, read from /proc (the end-to-end benchmark's accounting).

CPU: `/proc/<pid>/stat` utime + stime of every pid of a group, plus its cutime + cstime (the CPU of
children it has reaped), at the start and at the end of a window. A process that exits inside the
window is still counted, through its parent's cutime/cstime, when the parent is in the same group
(a postgres backend and its postmaster, a pool child and its Celery main process); a process that
starts inside it counts from zero. Processes are keyed by (pid, start time), so a reused pid is a new
process. Memory: `/proc/<pid>/smaps_rollup` Pss (each shared page divided among its sharers, so the
groups add up to what they really use) and Rss, in kB, summed per group.

Groups are given as {name: pids}, resolved by the caller at each sample (a process forked in between
joins its group at the next one).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
Groups = Mapping[str, Iterable[int]]


@dataclass(frozen=True)
class ProcCpu:
    started: int  # /proc/<pid>/stat starttime (ticks since boot): tells a reused pid apart
    own_s: float  # utime + stime
    reaped_s: float  # cutime + cstime: the reaped children's utime + stime


def read_cpu(pid: int) -> ProcCpu | None:
    """One process's CPU times from /proc/<pid>/stat; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may hold spaces: count the fields after its closing one.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])  # fields 14-17
    return ProcCpu(int(fields[19]), (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK)  # 22: starttime


def read_memory_kb(pid: int) -> tuple[int, int] | None:
    """(Pss, Rss) in kB from /proc/<pid>/smaps_rollup; None if it is gone or unreadable."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    values = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            values[key] = int(rest.split()[0])
    if "Pss" not in values or "Rss" not in values:
        return None  # a kernel thread, or a zombie
    return values["Pss"], values["Rss"]


@dataclass
class CpuSample:
    """Every process of every group at one moment: group -> (pid, start time) -> its CPU."""

    groups: dict[str, dict[tuple[int, int], ProcCpu]] = field(default_factory=dict)

    @classmethod
    def take(cls, groups: Groups) -> CpuSample:
        sample = cls()
        for name, pids in groups.items():
            procs: dict[tuple[int, int], ProcCpu] = {}
            for pid in pids:
                cpu = read_cpu(pid)
                if cpu is not None:
                    procs[(pid, cpu.started)] = cpu
            sample.groups[name] = procs
        return sample

    def total_s(self, name: str) -> float:
        return sum(p.own_s + p.reaped_s for p in self.groups.get(name, {}).values())

    def count(self, name: str) -> int:
        return len(self.groups.get(name, {}))


@dataclass(frozen=True)
class GroupCpu:
    name: str
    cpu_s: float  # used between the two samples
    procs_before: int
    procs_after: int
    exited: int  # processes of the first sample missing from the second (counted if reaped in-group)


def cpu_between(before: CpuSample, after: CpuSample) -> list[GroupCpu]:
    """CPU seconds each group used between two samples (groups in the order of `after`)."""
    out = []
    for name in after.groups:
        gone = set(before.groups.get(name, {})) - set(after.groups[name])
        out.append(
            GroupCpu(
                name,
                max(after.total_s(name) - before.total_s(name), 0.0),
                before.count(name),
                after.count(name),
                len(gone),
            )
        )
    return out


@dataclass(frozen=True)
class GroupMemory:
    name: str
    procs: int
    pss_kb: int
    rss_kb: int


def memory(groups: Groups) -> list[GroupMemory]:
    """Summed Pss and Rss of each group's processes, now."""
    out = []
    for name, pids in groups.items():
        read = [m for m in (read_memory_kb(pid) for pid in pids) if m is not None]
        out.append(GroupMemory(name, len(read), sum(m[0] for m in read), sum(m[1] for m in read)))
    return out
