"""How ``wait()`` looks at a token: long polls, guided by the server between them.

Each look asks the server to hold its answer until the token ends (``?wait=``, see
:func:`long_poll_seconds`), so an ending is seen as soon as the store records it. The
next look is at the server's Retry-After when it sends one (0 after a long poll); else at
half the token's ``eta_seconds`` within ``[interval, max_interval]``; else ``interval``
growing 1.5 times a look up to ``max_interval``. Each delay gets +-10% jitter, and none
passes the deadline.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from producer.api.schemas import MAX_WAIT_SECONDS
from producer.client.calls import Poll


def long_poll_seconds(remaining: float, read_timeout: float | None) -> float:
    """How long the server may hold the next look: the time left, within the API's limit
    and half the client's read timeout (so the request never times out while held)."""
    limit = float(MAX_WAIT_SECONDS)
    if read_timeout is not None:
        limit = min(limit, read_timeout / 2)
    return round(max(0.0, min(remaining, limit)), 3)


@dataclass(frozen=True)
class PollSchedule:
    interval: float = 0.2
    max_interval: float = 2.0
    rand: Callable[[], float] = field(default=random.random, repr=False)

    def delay(self, looks: int, poll: Poll, remaining: float) -> float:
        """Seconds before the next look, after ``looks`` looks so far."""
        if poll.retry_after is not None:
            base = poll.retry_after
        elif poll.status.eta_seconds is not None:
            base = min(max(poll.status.eta_seconds / 2, self.interval), self.max_interval)
        else:
            base = min(self.interval * 1.5**looks, self.max_interval)
        jittered = base * (0.9 + 0.2 * self.rand())
        return max(0.0, min(jittered, remaining))
