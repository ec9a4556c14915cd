"""Intent and run ids: `it_`/`run_` + 16 lowercase hex from a xorshift32 PRNG (contract-api §6.1).

Ids are drawn, not guaranteed unique: several API processes share one seed (RANDOM_SEED) and a
restart replays it. Callers insert with ON CONFLICT DO NOTHING and take the next candidate on a
collision, so an existing row is never overwritten. Must not import flask or psycopg.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

from kodo.errors import KodoError

INTENT_PREFIX = "it"
RUN_PREFIX = "run"
ID_HEX_LENGTH = 16
MAX_DRAWS = 100_000  # a bound on the collision loop, far past any real sequence of taken ids

_MASK = 0xFFFFFFFF
_DEFAULT_STATE = 0x12345678  # xorshift32 is stuck at 0: a zero seed falls back to the original's
_HEX = "0123456789abcdef"


class IdSpaceExhaustedError(KodoError):
    """MAX_DRAWS candidates in a row were taken (a bug, not an expected state)."""

    code = "id_space_exhausted"


class Xorshift32:
    """The original's PRNG (`rng.ts`): 13/17/5 shifts on a 32-bit state."""

    def __init__(self, seed: int) -> None:
        self.state = (seed & _MASK) or _DEFAULT_STATE

    def next_u32(self) -> int:
        x = self.state
        x ^= (x << 13) & _MASK
        x ^= x >> 17
        x ^= (x << 5) & _MASK
        self.state = x
        return x

    def hex(self, length: int = ID_HEX_LENGTH) -> str:
        # floor(rand() * 16) with rand() = state / 2**32: the top nibble of each draw.
        return "".join(_HEX[self.next_u32() >> 28] for _ in range(length))


def _process_seed() -> int:
    """A fresh seed per process: OS randomness mixed with the pid and the clock."""
    return int.from_bytes(os.urandom(4), "big") ^ os.getpid() ^ (time.time_ns() & _MASK)


class IdGenerator:
    """Thread-safe id source. Seeded: one deterministic sequence. Unseeded: per process, re-seeded
    after a fork, so forked API workers do not walk the same sequence.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._rng = Xorshift32(_process_seed() if seed is None else seed)

    def new_id(self, prefix: str) -> str:
        with self._lock:
            if self._seed is None and os.getpid() != self._pid:
                self._pid = os.getpid()
                self._rng = Xorshift32(_process_seed())
            return f"{prefix}_{self._rng.hex()}"

    def candidates(self, prefix: str) -> Iterator[str]:
        """Ids to try in order until an insert succeeds; raises after MAX_DRAWS collisions."""
        for _ in range(MAX_DRAWS):
            yield self.new_id(prefix)
        raise IdSpaceExhaustedError(f"no free {prefix}_ id after {MAX_DRAWS} draws")
