"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kodo.runtime import Runtime
from tests.support.admission import QUEUE_FIELDS, Limits
from tests.support.helpers import Sql


@pytest.fixture
def limits(rt: Runtime, sql: Sql) -> Iterator[Limits]:
    """Set exact sbxQ limits (every queue-wide field; or one partition's); all dropped afterwards."""

    def put(partition: str | None = None, **values: Any) -> None:
        if partition is None:
            values = {f: None for f in QUEUE_FIELDS} | values
        rt.set_limits("sbxQ", partition, values)

    yield put
    sql("DELETE FROM dbos.queue_partition_limits")
    sql("DELETE FROM dbos.queue_limits")
