"""How often ``wait()`` looks at a token: guided by the server, backing off otherwise.

The next look is at the server's Retry-After when it sends one; else at half the
token's ``eta_seconds`` (so that the answer is seen soon after it is ready) within
``[interval, max_interval]``; else ``interval`` growing 1.5 times a look up to
``max_interval``. Each delay gets +-10% jitter, and none passes the deadline.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from producer.client.calls import Poll


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
