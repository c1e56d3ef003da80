"""Settings of the IoT edge Lambda (``SLUICE_*`` environment variables, validated at cold start).

In: the environment. Out: ``IotIngestSettings``: the shared edge settings plus the body limits,
whose defaults are ``BodyLimits``' own (``sluice.edges.ingest``'s ``DEFAULT_*``).
"""

from __future__ import annotations

from pydantic import Field

from edge_lambdas.shared.settings import EdgeSettings
from sluice.edges.ingest import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_MAX_ERRORS_REPORTED,
    BodyLimits,
)

__all__ = ["IotIngestSettings"]

MIB = 1024 * 1024


class IotIngestSettings(EdgeSettings):
    """``EdgeSettings`` plus the limits on one request body."""

    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1,
        le=4 * MIB,
        description="Largest request body as received (after base64, before gunzip); larger "
        "bodies get 413. At most 4 MiB: API Gateway base64-encodes binary bodies (+33 %) and a "
        "synchronous Lambda event is limited to 6 MB.",
    )
    max_decompressed_bytes: int = Field(
        default=DEFAULT_MAX_DECOMPRESSED_BYTES,
        ge=1,
        le=64 * MIB,
        description="Largest body after gunzip; decompression stops there (gzip-bomb guard) "
        "and the request gets 413.",
    )
    max_errors_reported: int = Field(
        default=DEFAULT_MAX_ERRORS_REPORTED,
        ge=0,
        le=100,
        description="Rejected readings described in a response (all are dead-lettered).",
    )

    def body_limits(self) -> BodyLimits:
        return BodyLimits(
            max_body_bytes=self.max_body_bytes,
            max_decompressed_bytes=self.max_decompressed_bytes,
            max_errors_reported=self.max_errors_reported,
        )
