"""Which Redis db a proof may move to (`ops.soak.own_broker`): one nobody consumes that holds no
message queued (tests/e2e/test_sandbox_soaks.py moves a real soak beside a real worker). A private
redis-server on a spare port, so the machine's dbs are not touched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ops import soak
from ops.servers import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(base_dir=tmp_path) as rd:
        yield rd


def test_what_workers_left_behind_is_no_message_but_a_queued_delivery_is(server: RedisServer) -> None:
    url = server.url(3)
    client = redis.Redis.from_url(url)
    assert soak._holds_messages(url) is False  # empty
    # What workers leave behind: bindings, an unacked index, and a killed worker's unacked delivery.
    client.sadd("_kombu.binding.sbxQ", "sbxQ\x06\x16\x06\x16sbxQ")
    client.zadd("unacked_index", {"tag-1": 1})
    client.hset("unacked", "tag-1", '{"body": "..."}')
    assert soak._holds_messages(url) is False
    client.lpush("sbxQ", '{"body": "..."}')  # a delivery waiting in a queue
    assert soak._holds_messages(url) is True
