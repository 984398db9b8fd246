"""Per-user limits: how many requests one user may have running, and how often they may ask.

The job queue (``genre_core.jobs``) bounds the work the whole bot accepts; these limits keep one
user (or one script) from taking all of it. Both refusals are ``GenreError``s with a friendly
message, answered like any other.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator

from genre_core.errors import GenreError

log = logging.getLogger(__name__)


class UserBusyError(GenreError):
    """The user already has the allowed number of requests running."""

    code = "user_busy"


class CooldownError(GenreError):
    """The user sent more requests than their rate allows; ``retry_after_s`` says when to retry."""

    code = "cooldown"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UserLimiter:
    """At most ``concurrency`` requests running per user, and ``rate`` requests per ``window_s``.

    The rate is a token bucket: a user may send ``rate`` requests at once, then one more every
    ``window_s / rate`` seconds. Only admitted requests spend a token, so a request refused for
    concurrency costs nothing. A bucket is full again one window after its last use, and full
    buckets are forgotten once per window, so memory follows the users active in the last two
    windows, not every user ever seen.

    Parameters
    ----------
    concurrency : int
        Requests one user may have running at once.
    rate : int
        Requests per window (the burst size).
    window_s : float
        The window, in seconds.
    clock : callable
        Monotonic seconds (tests pass a fake clock).

    Examples
    --------
    >>> limiter = UserLimiter(concurrency=1, rate=2, window_s=60)
    >>> with limiter.admit(42):
    ...     pass  # the request runs here
    """

    def __init__(
        self,
        concurrency: int,
        rate: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if concurrency < 1 or rate < 1 or window_s <= 0:
            raise ValueError("concurrency and rate must be at least 1, window_s positive")
        self.concurrency = concurrency
        self.rate = rate
        self.window_s = window_s
        self.clock = clock
        self.active: Counter[int] = Counter()
        self._buckets: dict[int, tuple[float, float]] = {}  # user -> (tokens, as of when)
        self._next_sweep = clock() + window_s

    @property
    def tracked(self) -> int:
        """Users currently remembered (running something, or with a bucket not yet full)."""
        return len(self._buckets.keys() | self.active.keys())

    @contextlib.contextmanager
    def admit(self, user_id: int) -> Iterator[None]:
        """Hold one of the user's request slots for the ``with`` block.

        Raises
        ------
        UserBusyError
            The user already has ``concurrency`` requests running.
        CooldownError
            The user has used up their rate.
        """
        if self.active[user_id] >= self.concurrency:
            raise busy(self.concurrency)
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep(now)
        tokens = self._tokens(user_id, now)
        if tokens < 1.0:
            raise cooldown((1.0 - tokens) * self.window_s / self.rate, self.rate, self.window_s)
        self._buckets[user_id] = (tokens - 1.0, now)
        self.active[user_id] += 1
        try:
            yield
        finally:
            self.active[user_id] -= 1
            if self.active[user_id] <= 0:
                del self.active[user_id]

    @contextlib.asynccontextmanager
    async def admitted(self, user_id: int) -> AsyncIterator[None]:
        """:meth:`admit` for ``async with``, the form :class:`RedisUserLimiter` needs too."""
        with self.admit(user_id):
            yield

    def _tokens(self, user_id: int, now: float) -> float:
        tokens, since = self._buckets.get(user_id, (float(self.rate), now))
        return min(float(self.rate), tokens + (now - since) * self.rate / self.window_s)

    def _sweep(self, now: float) -> None:
        # A full bucket is the same as no bucket: drop those, so idle users cost nothing.
        for user_id in list(self._buckets):
            if self._tokens(user_id, now) >= self.rate:
                del self._buckets[user_id]
        self._next_sweep = now + self.window_s


def busy(limit: int) -> UserBusyError:
    return UserBusyError(
        f"You already have {limit} request{'s' if limit > 1 else ''} being analysed. "
        "Please wait for the answer before sending more."
    )


def cooldown(wait_s: float, rate: int, window_s: float) -> CooldownError:
    return CooldownError(
        f"Slow down a little: you can send another clip in {math.ceil(wait_s)} s "
        f"(up to {rate} every {window_s:g} s).",
        retry_after_s=wait_s,
    )


#: One atomic step in Redis: refuse (1) when the user has ``concurrency`` requests running, or
#: (2, seconds to wait) when ``rate`` were admitted in the last window; else admit (0). Redis'
#: own clock, so bots on machines whose clocks differ count alike.
_ADMIT = """
local active = tonumber(redis.call('GET', KEYS[1]) or '0')
if active >= tonumber(ARGV[1]) then return {1, '0'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {2, tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000))
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return {0, '0'}
"""


class RedisUserLimiter:
    """The same per-user limits held across a fleet: every bot process counts in one Redis.

    Concurrency is a counter per user; the rate is a sliding window (at most ``rate`` requests
    in any ``window_s``), which one atomic script checks and records. A bot that dies while
    answering cannot hold a user's slot for ever: the counter expires ``hold_s`` after the last
    admission. When Redis cannot be reached the request is admitted (logged): the limits protect
    the fleet, they must not silence it.
    """

    def __init__(self, url: str, concurrency: int, rate: int, window_s: float,
                 hold_s: float = 600.0) -> None:
        import redis.asyncio as aioredis

        self.concurrency, self.rate, self.window_s = concurrency, rate, window_s
        self.hold_ms = int(hold_s * 1000)
        self.redis = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._admit = self.redis.register_script(_ADMIT)

    @contextlib.asynccontextmanager
    async def admitted(self, user_id: int) -> AsyncIterator[None]:
        """Hold one of the user's request slots, fleet-wide, for the ``async with`` block."""
        import redis

        active, sent = f"genre:user:{user_id}:active", f"genre:user:{user_id}:sent"
        try:
            verdict, wait = await self._admit(
                keys=[active, sent],
                args=[self.concurrency, self.rate, self.window_s, uuid.uuid4().hex,
                      self.hold_ms],
            )
        except redis.RedisError:
            log.warning("Redis unreachable: user %s admitted without fleet-wide limits", user_id)
            yield
            return
        if int(verdict) == 1:
            raise busy(self.concurrency)
        if int(verdict) == 2:
            raise cooldown(float(wait), self.rate, self.window_s)
        try:
            yield
        finally:
            with contextlib.suppress(redis.RedisError):
                await self.redis.decr(active)

    async def close(self) -> None:
        await self.redis.aclose()
