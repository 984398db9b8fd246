"""Per-user limits across a fleet: two bot processes' limiters counting in one real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_fleet_queue import REDIS_SERVER, RedisServer

from bot.limits import CooldownError, RedisUserLimiter, UserBusyError

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path)
    server.start()
    yield server.url
    server.stop()


async def test_a_users_running_requests_are_counted_across_processes(redis_url: str) -> None:
    one, two = (RedisUserLimiter(redis_url, concurrency=1, rate=10, window_s=60)
                for _ in range(2))
    async with one.admitted(7):
        with pytest.raises(UserBusyError):
            async with two.admitted(7):
                pass
        async with two.admitted(8):  # another user is not held back
            pass
    async with two.admitted(7):  # the slot is free again
        pass
    await one.close()
    await two.close()


async def test_the_rate_is_shared_and_says_when_to_retry(redis_url: str) -> None:
    one, two = (RedisUserLimiter(redis_url, concurrency=5, rate=3, window_s=30)
                for _ in range(2))
    for limiter in (one, two, one):
        async with limiter.admitted(7):
            pass
    with pytest.raises(CooldownError) as refused:
        async with two.admitted(7):
            pass
    assert 25 < refused.value.retry_after_s <= 30
    await one.close()
    await two.close()


async def test_the_window_slides(redis_url: str) -> None:
    limiter = RedisUserLimiter(redis_url, concurrency=5, rate=2, window_s=1.0)
    for _ in range(2):
        async with limiter.admitted(7):
            pass
    with pytest.raises(CooldownError):
        async with limiter.admitted(7):
            pass
    await asyncio.sleep(1.1)
    async with limiter.admitted(7):
        pass
    await limiter.close()


async def test_without_redis_requests_are_admitted_not_silenced(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # never started: nothing listens on its port
    limiter = RedisUserLimiter(server.url, concurrency=1, rate=1, window_s=60)
    for _ in range(3):
        async with limiter.admitted(7):
            pass
    await limiter.close()
