"""What a failed Kinesis call means for a read: retry it (throttled, transient) or fail the read.

In: an exception raised by a Kinesis client call, and the read's settings.
Out: ``failure_kind`` ("throttled", "transient" or None: not retryable), the backoff of the retries
(``retry_policy``) and ``KinesisReadError`` for what retries cannot fix (stream missing, access
denied, throttled beyond the retry budget).

Dead letters: none; a failed call is no bad record.

Why no SDK here: service errors are read from the response the exception carries
(``sluice.core.aws_errors``), whatever its type. Network-level failures (connection refused or
reset, timeouts) carry no response, so only the SDK can name them: the runtime that makes the client
passes their exception types in a ``ClientErrors`` (the Beam job: ``beam_jobs.kinesis_client``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final, Literal

from sluice.core.aws_errors import aws_error, retry_class
from sluice.core.errors import SluiceError
from sluice.core.retry import BackoffPolicy
from sluice.stream.kinesis.settings import KinesisReadSettings

__all__ = [
    "EXPIRED_ITERATOR",
    "Backoff",
    "ClientErrors",
    "KinesisReadError",
    "failure_kind",
    "retry_policy",
]

EXPIRED_ITERATOR: Final = "ExpiredIteratorException"
"""The error code of GetRecords with a shard iterator older than five minutes."""


class KinesisReadError(SluiceError):
    """Reading the stream failed in a way retries cannot fix (or retries ran out); the message says where."""


@dataclass(frozen=True, slots=True)
class ClientErrors:
    """The exceptions of a Kinesis client's SDK that the reader must tell apart.

    ``failed_call``: every exception meaning that a call failed (botocore: ``ClientError`` and
    ``BotoCoreError``). The reader retries these or turns them into ``KinesisReadError``; any other
    exception propagates unchanged (a bug, not a failed call).
    ``network``: failed calls that are network-level and transient, retried like a 5xx (botocore:
    ``ConnectionError`` and ``HTTPClientError``, timeouts included), whether or not
    ``failed_call`` already covers them.
    """

    failed_call: tuple[type[Exception], ...]
    network: tuple[type[Exception], ...] = ()


def failure_kind(
    error: Exception, network: tuple[type[Exception], ...] = ()
) -> Literal["throttled", "transient"] | None:
    """How a failed AWS call may be retried: throttled, transient (5xx, connection), or not at all.

    ``network``: the SDK's exception types of network-level failures (``ClientErrors.network``).
    """
    found = aws_error(error)
    if found is not None:
        # An expired iterator is refreshed at once on the first expiry; a fresh one expiring again
        # is retried later.
        if found.code == EXPIRED_ITERATOR:
            return "transient"
        return retry_class(found.code, found.status)
    if isinstance(error, network):
        return "transient"
    return None


def retry_policy(settings: KinesisReadSettings) -> BackoffPolicy:
    """The reader's retries of one shard or call: the project's backoff (``sluice.core.retry``), bounded
    by ``max_retries`` retries in a row; no time bound (a failing read fails the bundle soon enough)."""
    return BackoffPolicy.capped(
        settings.backoff_base_seconds,
        settings.backoff_cap_seconds,
        max_attempts=settings.max_retries + 1,
        max_elapsed_seconds=math.inf,
    )


@dataclass(frozen=True, slots=True)
class Backoff:
    """The wait after ``attempt`` failures in a row (1: the first), uniformly up to
    ``min(cap, base * 2**(attempt-1))``: ``sluice.core.retry.BackoffPolicy``, under its former name here."""

    base_seconds: float
    cap_seconds: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        return BackoffPolicy.capped(self.base_seconds, self.cap_seconds).backoff(attempt - 1, rng)
