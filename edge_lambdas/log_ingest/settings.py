"""Settings of the web-log edge Lambda (``SLUICE_*`` environment variables, validated at cold start).

In: the environment. Out: ``LogIngestSettings``: the shared edge settings (including the core's
``log_format``, ``SLUICE_LOG_FORMAT``) plus how log files are streamed.
"""

from __future__ import annotations

from pydantic import Field

from edge_lambdas.shared.settings import EdgeSettings
from sluice.parsing.weblog import MAX_LINE_BYTES

__all__ = ["LogIngestSettings"]


class LogIngestSettings(EdgeSettings):
    """``EdgeSettings`` plus streaming bounds for log files."""

    batch_lines: int = Field(
        default=5000,
        ge=1,
        le=100_000,
        description="Lines parsed and published per batch while a file streams; memory holds one "
        "batch (about batch_lines x 1 KiB of envelopes), whatever the file size.",
    )
    max_line_bytes: int = Field(
        default=MAX_LINE_BYTES,
        ge=256,
        le=MAX_LINE_BYTES,
        description="Longest accepted log line; longer lines are dead-lettered as too_large "
        "(first bytes kept) without being read into memory whole.",
    )
    s3_read_timeout_seconds: float = Field(
        default=30.0, gt=0, le=300, description="Read timeout of the S3 GetObject stream."
    )
