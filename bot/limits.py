"""Per-user limits: how many requests one user may have running, and how often they may ask.

The job queue (``genre_core.jobs``) bounds the work the whole bot accepts; these limits keep one
user (or one script) from taking all of it. Both refusals are ``GenreError``s with a friendly
message, answered like any other.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator

from genre_core.errors import GenreError


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
            limit = self.concurrency
            raise UserBusyError(
                f"You already have {limit} request{'s' if limit > 1 else ''} being analysed. "
                "Please wait for the answer before sending more."
            )
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep(now)
        tokens = self._tokens(user_id, now)
        if tokens < 1.0:
            wait = (1.0 - tokens) * self.window_s / self.rate
            raise CooldownError(
                f"Slow down a little: you can send another clip in {math.ceil(wait)} s "
                f"(up to {self.rate} every {self.window_s:g} s).",
                retry_after_s=wait,
            )
        self._buckets[user_id] = (tokens - 1.0, now)
        self.active[user_id] += 1
        try:
            yield
        finally:
            self.active[user_id] -= 1
            if self.active[user_id] <= 0:
                del self.active[user_id]

    def _tokens(self, user_id: int, now: float) -> float:
        tokens, since = self._buckets.get(user_id, (float(self.rate), now))
        return min(float(self.rate), tokens + (now - since) * self.rate / self.window_s)

    def _sweep(self, now: float) -> None:
        # A full bucket is the same as no bucket: drop those, so idle users cost nothing.
        for user_id in list(self._buckets):
            if self._tokens(user_id, now) >= self.rate:
                del self._buckets[user_id]
        self._next_sweep = now + self.window_s
