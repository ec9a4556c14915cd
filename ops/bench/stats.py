"""What one benchmarked system measured: latency distributions and the `Result` (JSON across processes)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Dist:
    n: int
    median: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Dist:
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            n=len(values),
            median=statistics.median(values),
            p99=percentile(values, 99),
            mean=statistics.fmean(values),
            min=min(values),
            max=max(values),
        )


@dataclass
class Result:
    """What one system measured; serialised to JSON by the DBOS driver subprocess."""

    system: str
    config: str
    count: int = 0
    throughput_wps: float = math.nan  # median over the rounds
    throughput_rounds: list[float] = field(default_factory=list)
    throughput_window_s: float = math.nan  # of the median round
    start_window_s: float = math.nan  # of the median round
    latency: Dist = field(default_factory=lambda: Dist.of([]))
    observed: Dist = field(default_factory=lambda: Dist.of([]))
    breakdown: list[tuple[str, float]] = field(default_factory=list)
    cpu: list[tuple[str, float]] = field(default_factory=list)  # seconds over all throughput rounds
    cpu_workflows: int = 0  # workflows those CPU seconds were spent on
    latency_steal_pct: float = math.nan  # hypervisor steal during the latency run (noise indicator)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Result:
        d = json.loads(text)
        d["latency"] = Dist(**d["latency"])
        d["observed"] = Dist(**d["observed"])
        d["breakdown"] = [tuple(x) for x in d["breakdown"]]
        d["cpu"] = [tuple(x) for x in d["cpu"]]
        return cls(**d)
