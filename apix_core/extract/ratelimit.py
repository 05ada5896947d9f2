"""The request budget of one extraction: a rate (token bucket), a concurrency cap, and pauses.

Every task of an extraction goes through the same :class:`RequestBudget`, so the limits hold
for the extraction as a whole, not per task.

The bucket is a GCRA ("virtual scheduling") token bucket: each request reserves the next slot
``1 / rate`` after the previous one, and at most ``burst`` requests may run ahead of that
schedule. Unlike a fixed window that resets its counter, there is no window edge at which twice
the rate can go out. Reservations are taken in arrival order (fair). A ``Retry-After`` pauses
the whole budget: requests already waiting re-check the pause before they go.
"""

from __future__ import annotations

import asyncio
import time

from apix_core.extract.config import RateLimitConfig


class TokenBucket:
    """``rate`` requests per second on average, at most ``burst`` at once."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self.burst = max(1, burst)
        self._tat = 0.0  # theoretical arrival time of the next conforming request

    def reserve(self, now: float) -> float:
        """Reserve a slot; returns how long to wait before using it (0 when it is free now)."""
        tat = max(self._tat, now)
        allowed_at = tat - (self.burst - 1) * self.interval
        self._tat = tat + self.interval
        return max(0.0, allowed_at - now)

    def hold_until(self, moment: float) -> None:
        """No slot before ``moment`` (a server asked to wait), and no burst right after it."""
        self._tat = max(self._tat, moment + (self.burst - 1) * self.interval)


class RequestBudget:
    """Rate, concurrency and pauses shared by every request of one extraction."""

    def __init__(self, config: RateLimitConfig | None = None) -> None:
        config = config or RateLimitConfig()
        self.max_concurrent = config.max_concurrent
        self._semaphore = asyncio.Semaphore(config.max_concurrent)
        rate = config.requests_per_second
        self.bucket = (
            TokenBucket(rate / config.window_size, config.burst) if rate is not None else None
        )
        self._paused_until = 0.0
        #: How many times a server's Retry-After paused this budget (observability; tests).
        self.pauses = 0

    def pause(self, seconds: float) -> None:
        """Hold every request of the extraction for ``seconds`` from now."""
        until = time.monotonic() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1
        if self.bucket is not None:
            self.bucket.hold_until(until)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - time.monotonic())

    def slot(self) -> _Slot:
        """``async with budget.slot():`` waits for a concurrency slot, the end of any pause and
        a rate token, and holds the slot for the request."""
        return _Slot(self)

    async def _wait_turn(self) -> None:
        while True:
            now = time.monotonic()
            if self._paused_until > now:
                await asyncio.sleep(self._paused_until - now)
                continue
            if self.bucket is None:
                return
            delay = self.bucket.reserve(now)
            if delay > 0:
                await asyncio.sleep(delay)
                if self._paused_until > time.monotonic():
                    continue  # a pause began while we waited: our slot is void
            return


class _Slot:
    # A plain class, not @asynccontextmanager: this runs once per request.
    __slots__ = ("_budget",)

    def __init__(self, budget: RequestBudget) -> None:
        self._budget = budget

    async def __aenter__(self) -> None:
        budget = self._budget
        await budget._semaphore.acquire()
        if budget.bucket is None and budget._paused_until == 0.0:
            return
        try:
            await budget._wait_turn()
        except BaseException:
            budget._semaphore.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._budget._semaphore.release()


__all__ = ["RequestBudget", "TokenBucket"]
