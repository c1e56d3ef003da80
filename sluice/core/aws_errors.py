"""AWS error responses read once, for every adapter: which code, which status, retry or not.

In: an exception raised by an AWS SDK call (botocore's ``ClientError`` carries ``.response``, a
mapping with ``Error.Code``, ``Error.Message`` and ``ResponseMetadata.HTTPStatusCode``).
Out: an ``AwsError`` (or ``None`` for exceptions that are no service response) and the retry class
of a code: throttled, transient, or neither.

Why here: five adapters (the Kinesis publisher, the Kinesis reader, the log edge's S3 reads, the
DynamoDB checkpoint store) parsed the same response shape by hand. The core never imports botocore,
so the shape is read from the exception's ``response`` attribute; network-level failures (timeouts,
connection resets) carry no response and are classified by the adapter that knows its SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "THROTTLING_CODES",
    "TRANSIENT_CODES",
    "AwsError",
    "aws_error",
    "aws_error_code",
    "retry_class",
]

THROTTLING_CODES: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "KMSThrottlingException",
    }
)
"""Codes that mean "slow down": retry after a backoff."""

TRANSIENT_CODES: Final = frozenset(
    {
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
"""Codes of a service-side failure that a repeat of the same call may not meet again."""

RetryClass = Literal["throttled", "transient"]


@dataclass(frozen=True, slots=True)
class AwsError:
    """What an AWS service said about a failed call."""

    code: str
    """The service's error code (``ConditionalCheckFailedException``, ``NoSuchKey``...), or ``""``."""
    message: str
    """The service's message, or ``""``."""
    status: int
    """The HTTP status of the response (0 when unknown)."""

    def __str__(self) -> str:
        return f"{self.code or self.status or 'error'}: {self.message}".rstrip(": ")


def aws_error(error: BaseException) -> AwsError | None:
    """The service response an SDK exception carries, or ``None`` when it carries none."""
    response = getattr(error, "response", None)
    if not isinstance(response, Mapping):
        return None
    details = response.get("Error") or {}
    metadata = response.get("ResponseMetadata") or {}
    status = metadata.get("HTTPStatusCode") if isinstance(metadata, Mapping) else None
    if not isinstance(details, Mapping):
        details = {}
    return AwsError(
        code=str(details.get("Code") or ""),
        message=str(details.get("Message") or ""),
        status=status if isinstance(status, int) else 0,
    )


def aws_error_code(error: BaseException) -> str | None:
    """Just the error code of an SDK exception (``None`` when it carries no service response)."""
    found = aws_error(error)
    return found.code if found is not None else None


def retry_class(code: str | None, status: int | None = None) -> RetryClass | None:
    """How a call that failed with ``code`` (and HTTP ``status``) may be retried, if at all."""
    if code in THROTTLING_CODES:
        return "throttled"
    if code in TRANSIENT_CODES or (status is not None and status >= 500):
        return "transient"
    return None
