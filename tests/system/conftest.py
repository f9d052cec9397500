"""Fixtures of the system tests: a real Redis and a real Kafka-compatible broker.

Only this level runs them (tests/test_suite_hygiene.py keeps it so); the
servers behind them are in tests/helpers/redis_server.py and kafka_broker.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.helpers.kafka_broker import KafkaBroker
from tests.helpers.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer.from_environment() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The server's URL, running (a test before may have stopped it) and empty."""
    redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
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
