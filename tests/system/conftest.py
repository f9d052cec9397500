"""Fixtures of the system tests: a real Redis and a real Kafka-compatible broker.

Only this level runs them (tests/test_suite_hygiene.py keeps it so); the
servers behind them are in tests/helpers/redis_server.py and kafka_broker.py.

Each pytest-xdist worker runs its own session, so it starts servers of its
own. On a shared server (`REDIS_URL`) each worker keeps to a database of its
own and empties only that one; on a shared cluster (`KAFKA_BOOTSTRAP`) every
test writes to topics of its own already.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from tests.helpers.kafka_broker import KafkaBroker
from tests.helpers.redis_server import RedisServer


def worker_number() -> int:
    """This pytest-xdist worker's number (gw0 is 0), and 0 without xdist."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer.from_environment(database=worker_number()) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The server's URL, running (a test before may have stopped it) and empty."""
    redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        if redis_server.controllable:
            client.flushall()
        else:  # shared: other workers' databases are theirs
            client.flushdb()
    return redis_server.url


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    with KafkaBroker.from_environment() as broker:
        yield broker


@pytest.fixture
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """The broker's bootstrap address, running (a test before may have stopped it)."""
    kafka_broker.resume()
    kafka_broker.start()
    return kafka_broker.bootstrap
