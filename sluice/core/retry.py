"""The one retry backoff of the project: exponential, full jitter, bounded by attempts and by time.

In: how many attempts were made in a row, how long they took, and a ``random.Random`` (seed it and
every delay is reproducible).
Out: the delay before the next attempt, or ``None`` to give up.

Every retry loop uses it: the edges' PutRecords retries (``sluice.edges.delivery``), the feed poller's
HTTP retries (``sluice.edges.polling.retries``, which adds its HTTP rules on top: which statuses
retry, and ``Retry-After`` as a floor) and the Kinesis reader's GetRecords retries
(``sluice.stream.kinesis.reader``). What makes an error worth retrying stays with each caller.

Why full jitter: the delay before retry ``n`` is drawn uniformly from ``[0, min(cap, base * 2**n)]``.
The clients that retry against one throttled resource (many Lambdas on one shard, many readers of
one stream, one poller per feed on a shared API) usually failed together; a fixed schedule, or
"equal jitter" (half of each step fixed), keeps them retrying in near-lockstep, while full jitter
spreads them over the whole window. With many competing clients it needs the fewest calls and
finishes soonest of the usual schemes (see "Exponential Backoff And Jitter", AWS Architecture Blog,
2015). A server that knows how long to wait says so (``Retry-After``); callers honour that as a
floor on top of this delay, not by changing the schedule.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["BackoffPolicy"]

_MAX_DOUBLINGS = 64
"""Beyond this the ceiling is the cap for any sane base; also keeps ``2**n`` finite."""


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by elapsed time.

    ``max_attempts`` counts every attempt, the first included; ``max_elapsed_seconds`` may be
    ``math.inf`` where the caller has its own deadline or none.
    """

    base_seconds: float = 0.1
    """Ceiling of the first retry's delay; it doubles with each further retry."""
    cap_seconds: float = 5.0
    """Largest ceiling: no delay is ever longer."""
    max_attempts: int = 10
    max_elapsed_seconds: float = 20.0

    def __post_init__(self) -> None:
        if not (self.base_seconds > 0 and self.cap_seconds >= self.base_seconds):
            raise ValueError("need 0 < base_seconds <= cap_seconds")
        if self.max_attempts < 1 or self.max_elapsed_seconds < 0:
            raise ValueError("need max_attempts >= 1 and max_elapsed_seconds >= 0")

    @classmethod
    def capped(
        cls,
        base_seconds: float,
        cap_seconds: float,
        *,
        max_attempts: int = 10,
        max_elapsed_seconds: float = 20.0,
    ) -> BackoffPolicy:
        """A policy from settings that allow a cap below the base: then every ceiling is the cap
        (exactly the delays ``min(cap, base * 2**n)`` gives), instead of a ``ValueError``."""
        return cls(min(base_seconds, cap_seconds), cap_seconds, max_attempts, max_elapsed_seconds)

    def ceiling(self, retry: int) -> float:
        """The longest delay before retry number ``retry`` (0 for the first retry)."""
        return min(
            self.cap_seconds, self.base_seconds * math.ldexp(1.0, min(retry, _MAX_DOUBLINGS))
        )

    def backoff(self, retry: int, rng: random.Random) -> float:
        """The delay before retry number ``retry`` (0 for the first retry): uniform in
        ``[0, ceiling(retry)]``."""
        return rng.uniform(0.0, self.ceiling(retry))

    def next_delay(self, attempts_made: int, elapsed: float, rng: random.Random) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up.

        ``attempts_made`` failed in a row, taking ``elapsed`` seconds so far (pass 0 when only the
        attempt count bounds the retries). The delay is cut to the time left, so the last attempt
        still happens inside the budget.
        """
        remaining = self.max_elapsed_seconds - elapsed
        if attempts_made >= self.max_attempts or remaining <= 0:
            return None
        return min(self.backoff(attempts_made - 1, rng), remaining)
