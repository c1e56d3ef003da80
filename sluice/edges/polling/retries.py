"""HTTP retries of one feed request: which failures retry, how long to wait, when to give up.

In: a ``Fetch``, one ``HttpRequest``, a ``RetryPolicy``, the clocks and the poll's deadline.
Out: the first 2xx or 304 response; or ``FeedFetchError`` once the failure is for good (retry budget
spent, a 4xx other than 429, a ``Retry-After`` longer than allowed, no time left before the deadline).
Dead letters: none; a request that fails for good has no input to keep.
Why: the delays are the project's shared backoff (``sluice.core.retry``: exponential, full jitter);
this module adds only the HTTP rules on top (429 and 5xx retry, other 4xx do not; ``Retry-After``
is a floor), and the deadline, so a poll never outlives its lease or the Lambda.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sluice.core.errors import SluiceError
from sluice.core.retry import BackoffPolicy
from sluice.edges.polling.transport import Fetch, HttpRequest, HttpResponse, TransportError

__all__ = [
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_RETRY_BASE_DELAY",
    "DEFAULT_RETRY_MAX_DELAY",
    "FeedFetchError",
    "RetryDecision",
    "RetryPolicy",
    "decide_retry",
    "fetch_with_retries",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

DEFAULT_RETRY_BASE_DELAY = 0.5
DEFAULT_RETRY_MAX_DELAY = 20.0
DEFAULT_MAX_RETRY_AFTER = 60.0
"""The defaults of ``RetryPolicy``, which the feed poller Lambda's ``http_retry_*`` settings share."""


class FeedFetchError(SluiceError):
    """A request failed for good: retry budget spent, a non-retryable status, no time left."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """HTTP retries of one request (a page): the project's backoff plus the ``Retry-After`` cap.

    ``max_retries`` counts retries after the first try. ``max_delay`` is the backoff's cap; a
    ``max_delay`` below ``base_delay`` caps every delay. The delays are ``backoff``'s (full jitter,
    see ``sluice.core.retry``); the poll's deadline, not elapsed time, bounds them in time.
    """

    max_retries: int = 3
    base_delay: float = DEFAULT_RETRY_BASE_DELAY
    max_delay: float = DEFAULT_RETRY_MAX_DELAY
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    """A ``Retry-After`` longer than this is not waited for: the poll fails and the next one retries."""
    backoff: BackoffPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        backoff = BackoffPolicy.capped(
            self.base_delay,
            self.max_delay,
            max_attempts=self.max_retries + 1,
            max_elapsed_seconds=math.inf,  # fetch_with_retries stops at the poll's deadline
        )
        object.__setattr__(self, "backoff", backoff)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay: float
    reason: str


def is_retryable_status(status: int) -> bool:
    """429 and 5xx are worth another try; any other 4xx will fail the same way again."""
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date); ``None`` if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def decide_retry(
    policy: RetryPolicy,
    attempt: int,
    *,
    status: int | None,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Whether to retry after failed ``attempt`` (0 = the first try) and how long to wait first.

    ``status`` is ``None`` for a transport error (connection, timeout), which is always retryable.
    The delay is the shared backoff's (``sluice.core.retry``: full jitter, uniform in
    ``[0, min(max_delay, base_delay * 2**attempt)]``); a ``Retry-After`` is a floor on it, so a
    server that says how long to wait is never retried sooner.
    """
    if status is not None and not is_retryable_status(status):
        return RetryDecision(False, 0.0, f"HTTP {status} is not retryable")
    delay = policy.backoff.next_delay(attempt + 1, 0.0, rng or random.Random())
    if delay is None:
        return RetryDecision(False, 0.0, f"gave up after {attempt + 1} attempts")
    if retry_after is not None and retry_after > policy.max_retry_after:
        return RetryDecision(
            False,
            0.0,
            f"server asks to retry after {retry_after:.0f} s, more than the {policy.max_retry_after:.0f} s allowed",
        )
    if retry_after is not None:
        delay = max(delay, retry_after)
    return RetryDecision(True, delay, "transport error" if status is None else f"HTTP {status}")


def fetch_with_retries(
    fetch: Fetch,
    request: HttpRequest,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    deadline: float | None = None,
    rng: random.Random | None = None,
    on_retry: Callable[[RetryDecision], None] | None = None,
) -> HttpResponse:
    """Fetch with the retry policy. Returns a 2xx or 304 response; raises ``FeedFetchError``.

    ``deadline`` (a ``monotonic`` value) bounds waiting and each request's timeout, so a poll never
    outlives its lease or the Lambda. ``on_retry`` is told of each retry before its wait.
    """
    attempt = 0
    while True:
        timeout = request.timeout
        if deadline is not None:
            timeout = min(timeout, deadline - monotonic())
            if timeout <= 0:
                raise FeedFetchError("no time left for the request", attempts=attempt)
        status: int | None = None
        retry_after: float | None = None
        try:
            response = fetch(replace(request, timeout=timeout))
        except TransportError as err:
            problem = str(err)
        else:
            if 200 <= response.status < 300 or response.status == 304:
                return response
            status = response.status
            problem = f"HTTP {status}"
            if status in (429, 503):  # RFC 9110 defines Retry-After for these
                now = datetime.fromtimestamp(wall_clock(), UTC)
                retry_after = parse_retry_after(response.header("retry-after"), now)
        decision = decide_retry(policy, attempt, status=status, retry_after=retry_after, rng=rng)
        if decision.retry and deadline is not None and monotonic() + decision.delay >= deadline:
            decision = RetryDecision(False, 0.0, "no time left to retry")
        if not decision.retry:
            raise FeedFetchError(
                f"GET {request.url}: {problem}; {decision.reason}",
                status=status,
                attempts=attempt + 1,
            )
        log.warning(
            "retrying feed request",
            extra={
                "url": request.url,
                "problem": problem,
                "delay_seconds": round(decision.delay, 3),
            },
        )
        if on_retry is not None:
            on_retry(decision)
        sleep(decision.delay)
        attempt += 1
