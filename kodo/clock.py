"""Wall-clock time in epoch milliseconds: the one place kodo reads the clock."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)


def monotonic_ms() -> int:
    """A clock for intervals (cache ages): never goes back."""
    return int(time.monotonic() * 1000)
