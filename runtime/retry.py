"""How the booking saga calls the services it depends on, and the time budget
that follows from it.

One object holds the numbers: each downstream call's deadline, how many times
a charge whose outcome is unknown is tried, and the pause before each retry.
The saga's budget (the longest a CreateBooking can run) is derived from them,
and so are Envoy's timeouts on the routes that run the saga, so the edge
never gives up on a booking the service is still finishing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A booking's calls besides the charge attempts: hold, sell, and (when the
# hold lapsed while the charge's outcome was unknown) hold again and sell.
OTHER_SAGA_CALLS = 4
# The edge waits this much longer than the saga can take, so the service's own
# answer (say, BOOKING_PENDING) reaches the client, not Envoy's 504.
EDGE_MARGIN_SECONDS = 4.0


@dataclass(frozen=True)
class RetryPolicy:
    call_timeout_seconds: float = 5.0
    charge_attempts: int = 3
    first_backoff_seconds: float = 0.2  # doubled before each further attempt

    def backoff(self, attempt: int) -> float:
        """The pause after attempt number `attempt` (0-based) failed."""
        return self.first_backoff_seconds * 2**attempt

    @property
    def saga_budget_seconds(self) -> float:
        """The longest a CreateBooking can run: every call's deadline and pause."""
        calls = self.charge_attempts + OTHER_SAGA_CALLS
        pauses = sum(self.backoff(a) for a in range(self.charge_attempts - 1))
        return self.call_timeout_seconds * calls + pauses

    @property
    def edge_timeout_seconds(self) -> int:
        """Envoy's timeout for a route that runs the saga."""
        return math.ceil(self.saga_budget_seconds + EDGE_MARGIN_SECONDS)
