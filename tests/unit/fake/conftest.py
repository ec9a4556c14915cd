"""Fixtures of the engine tests on the fake store (tests/support/memstore.py): no Postgres, no Redis,
no Celery; a fake clock at T0; after each test, no doorbell rang inside a transaction and none is open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kodo import clock
from tests.support.memstore import Fake, FakeClock, make_engine

T0 = 1_700_000_000_000


@pytest.fixture(scope="session")
def _fresh_database() -> Iterator[None]:
    """Overrides the autouse fixture of tests/conftest.py: these tests need neither Postgres nor Redis."""
    yield


@pytest.fixture
def clk(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock(T0)
    monkeypatch.setattr(clock, "now_ms", c)
    return c


@pytest.fixture
def fake(clk: FakeClock) -> Iterator[Fake]:
    f = make_engine()
    yield f
    assert f.dispatcher.during_transaction == [], "a doorbell rang before its transaction committed"
    assert not f.store.in_transaction()
