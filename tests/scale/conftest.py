"""Fixtures of the scale-out tests: a real redis-server per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_support import RedisServer, redis_server


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A fresh, empty ``redis-server`` for one test."""
    with redis_server() as server:
        yield server
