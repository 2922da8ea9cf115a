"""How the booking saga calls the services it depends on, and the time budget
that follows from it.

One object holds the numbers: each downstream call's deadline, how long a run
of the saga keeps retrying a service that is away (long enough to ride
through a restart), the pauses between tries, and how long a retried request
waits for a booking still settling before it answers BOOKING_PENDING. The
saga's budget (the longest one run can take) is derived from them, and so are
the sweep's wait and Envoy's timeouts on the routes that run the saga, so the
edge never gives up on a booking the service is still finishing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from runtime.errors import Unavailable

# The longest chain of calls a run makes, each of which may start just before
# its retry window closes and then take its whole deadline: hold, charge,
# sell, hold again (the hold lapsed meanwhile), sell, release, refund.
SAGA_CALLS = 7
# The edge waits this much longer than the saga can take, so the service's own
# answer (say, BOOKING_PENDING) reaches the client, not Envoy's 504.
EDGE_MARGIN_SECONDS = 4.0

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    call_timeout_seconds: float = 5.0
    # A call refused as Unavailable is tried again until this long after the
    # run began: a service restarting (a few seconds) costs the buyer nothing.
    retry_window_seconds: float = 10.0
    first_backoff_seconds: float = 0.2  # doubled before each further try ...
    max_backoff_seconds: float = 1.0  # ... up to this
    # A retry of a booking still PENDING answers within this, settled or not.
    retry_reply_seconds: float = 1.5

    def backoff(self, attempt: int) -> float:
        """The pause after try number `attempt` (0-based) failed."""
        return min(self.first_backoff_seconds * 2**attempt, self.max_backoff_seconds)

    def deadline(self) -> float:
        """When a run starting now stops retrying (time.monotonic())."""
        return time.monotonic() + self.retry_window_seconds

    async def retrying(self, call: Callable[[], Awaitable[T]], until: float) -> T:
        """`call`'s result, tried again while it is Unavailable and the pause
        before the next try ends before `until`; then its last error. Only for
        calls that are safe to repeat (idempotent, or owner-checked)."""
        attempt = 0
        while True:
            try:
                return await call()
            except Unavailable:
                pause = self.backoff(attempt)
                if time.monotonic() + pause >= until:
                    raise
            await asyncio.sleep(pause)
            attempt += 1

    @property
    def saga_budget_seconds(self) -> float:
        """The longest a run of the saga can take: its retry window, then every
        call of its longest path once, each with its whole deadline."""
        return self.retry_window_seconds + self.call_timeout_seconds * SAGA_CALLS

    @property
    def edge_timeout_seconds(self) -> int:
        """Envoy's timeout for a route that runs the saga."""
        return math.ceil(self.saga_budget_seconds + EDGE_MARGIN_SECONDS)
