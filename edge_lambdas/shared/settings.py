"""Settings shared by every edge Lambda, read from ``SLUICE_*`` environment variables at cold start.

In: the environment (``SLUICE_<FIELD>``, e.g. ``SLUICE_STREAM_NAME``), read once per execution
environment.
Out: a frozen, validated settings object. A missing or invalid value fails the Lambda's init with a
``ConfigError`` naming the variable, so a misconfigured function never takes traffic.

Each Lambda has its own class in ``edge_lambdas/<name>/settings.py`` built on ``EdgeSettings``, which
itself extends the core's ``CoreSettings`` (log format, ...).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import Field, model_validator

from sluice.core.config import CoreSettings, build_settings
from sluice.core.retry import BackoffPolicy
from sluice.edges.delivery import MAX_BYTES_PER_REQUEST, MAX_RECORDS_PER_REQUEST, PutLimits
from sluice.stream.kpl import MAX_KINESIS_RECORD_BYTES

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_READ_TIMEOUT_SECONDS",
    "EdgeSettings",
    "load_settings",
]

ENV_PREFIX = "SLUICE_"

DEFAULT_CONNECT_TIMEOUT_SECONDS = 2.0
DEFAULT_READ_TIMEOUT_SECONDS = 5.0
"""Kinesis client timeouts of one call: the settings' defaults and ``KinesisPublisher``'s."""


class EdgeSettings(CoreSettings):
    """What every edge needs to publish to Kinesis and to dead-letter what it cannot publish."""

    stream_name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[a-zA-Z0-9_.-]+$",
        description="Kinesis data stream the edge writes to (a name, not an ARN). Required.",
    )
    aggregation: bool = Field(
        default=True,
        description="Pack envelopes into KPL-aggregated Kinesis records (fewer, fuller records: "
        "cheaper and far below the 1,000 records/s per-shard limit). Consumers de-aggregate.",
    )
    max_batch_records: int = Field(
        default=MAX_RECORDS_PER_REQUEST,
        ge=1,
        le=MAX_RECORDS_PER_REQUEST,
        description="Kinesis records per PutRecords call (the API allows 500).",
    )
    max_batch_bytes: int = Field(
        default=MAX_BYTES_PER_REQUEST,
        ge=MAX_KINESIS_RECORD_BYTES,
        le=MAX_BYTES_PER_REQUEST,
        description="Bytes (data + partition keys) per PutRecords call (the API allows 5 MiB).",
    )
    retry_base_seconds: float = Field(
        default=0.1, gt=0, le=60, description="First backoff ceiling; doubles per retry."
    )
    retry_cap_seconds: float = Field(
        default=2.0, gt=0, le=300, description="Largest backoff ceiling (delays are jittered)."
    )
    retry_max_attempts: int = Field(
        default=8, ge=1, le=100, description="PutRecords attempts per batch, the first included."
    )
    retry_budget_seconds: float = Field(
        default=10.0,
        ge=0,
        le=840,
        description="Time one publish may spend retrying before the rest goes to the dead-letter "
        "destination. Keep it well below the function timeout (and API Gateway's 30 s).",
    )
    connect_timeout_seconds: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT_SECONDS,
        gt=0,
        le=60,
        description="Kinesis connect timeout of one call.",
    )
    read_timeout_seconds: float = Field(
        default=DEFAULT_READ_TIMEOUT_SECONDS,
        gt=0,
        le=300,
        description="Kinesis read timeout of one call.",
    )
    dead_letter_bucket: str | None = Field(
        default=None,
        min_length=3,
        max_length=63,
        description="S3 bucket for envelopes the stream did not take (NDJSON of DeadLetter "
        "records, error_type delivery_failed). Set this or dead_letter_queue_url.",
    )
    dead_letter_prefix: str = Field(
        default="dead-letters/edge/",
        max_length=512,
        description="Key prefix in dead_letter_bucket; objects land under "
        "<prefix>delivery_failed/dt=YYYY-MM-DD/.",
    )
    dead_letter_queue_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="SQS queue URL for undeliverable envelopes (one DeadLetter per message), "
        "instead of dead_letter_bucket.",
    )
    dead_letter_queue_max_message_bytes: int = Field(
        default=256 * 1024,
        ge=16 * 1024,
        le=1024 * 1024,
        description="The queue's MaximumMessageSize; a larger dead letter is sent with a "
        "shortened raw marked raw_truncated (use the S3 destination to keep every byte).",
    )

    @model_validator(mode="after")
    def _one_destination_and_sane_backoff(self) -> EdgeSettings:
        if (self.dead_letter_bucket is None) == (self.dead_letter_queue_url is None):
            raise ValueError(
                f"set exactly one of {env_name('dead_letter_bucket')} and "
                f"{env_name('dead_letter_queue_url')}: undeliverable events need one destination"
            )
        if self.retry_cap_seconds < self.retry_base_seconds:
            raise ValueError(
                f"{env_name('retry_cap_seconds')} must be >= {env_name('retry_base_seconds')}"
            )
        return self

    def put_limits(self) -> PutLimits:
        return PutLimits(max_records=self.max_batch_records, max_request_bytes=self.max_batch_bytes)

    def retry_policy(self) -> BackoffPolicy:
        return BackoffPolicy(
            base_seconds=self.retry_base_seconds,
            cap_seconds=self.retry_cap_seconds,
            max_attempts=self.retry_max_attempts,
            max_elapsed_seconds=self.retry_budget_seconds,
        )


def env_name(field_name: str) -> str:
    return f"{ENV_PREFIX}{field_name.upper()}"


def _variable(path: str) -> str:
    # A nested problem (one feed's url) is fixed in its top-level variable (SLUICE_FEEDS).
    return env_name(path.partition(".")[0]) if path else "settings"


S = TypeVar("S", bound=CoreSettings)


def load_settings(settings_class: type[S]) -> S:
    """Read and validate settings from the environment; any problem is a ``ConfigError`` naming
    the variables at fault."""
    return build_settings(
        settings_class, prefix=f"invalid {settings_class.__name__}", name=_variable
    )
