"""All the stages over one batch, in the job's order, for engines that run them as one step.

The Beam job applies each stage as its own composite transform (``beam_jobs.pipeline``); a PyFlink
function or the stream-transform Lambda runs them back to back on one shard's batch instead:

``StageRunner(settings).run(shard_id, records)`` = ``decode_batch`` -> ``enrich_batch`` (when a
GeoIP database is set) -> ``filter_batch`` -> ``window_batch``

Its result is the ``JobBatch`` the table writer commits (``sluice.tables.warehouse``). Callers use the
value each stage returns, never the batch they passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

from sluice.core.config import CoreSettings
from sluice.core.contracts import Source
from sluice.stream.stages import (
    InputRecord,
    JobBatch,
    decode_batch,
    enrich_batch,
    filter_batch,
    window_batch,
)
from sluice.transform.filters import RecordFilter

__all__ = ["StageRunner"]


class StageRunner:
    """The stages configured once from ``settings`` (GeoIP readers, filters, window), run per batch.

    Holds open GeoIP databases: ``close()`` it, or use it as a context manager."""

    def __init__(self, settings: CoreSettings) -> None:
        self.settings = settings
        self.horizon = settings.time_horizon()
        self.filters = {
            source: RecordFilter(settings.filter_rules, source.value) for source in Source
        }
        self.enricher: Any = None
        if settings.geoip_city_db is not None:
            from sluice.transform.geoip import GeoIpEnricher

            self.enricher = GeoIpEnricher(
                str(settings.geoip_city_db),
                str(settings.geoip_asn_db) if settings.geoip_asn_db else None,
                settings.geoip_cache_size,
            )

    def run(
        self,
        shard_id: str,
        records: Sequence[InputRecord],
        *,
        previous_sequence: int | None = None,
    ) -> JobBatch:
        """One shard's records (in sequence order) through every stage."""
        batch = decode_batch(
            shard_id, records, previous_sequence=previous_sequence, horizon=self.horizon
        )
        if self.enricher is not None:
            batch = enrich_batch(batch, self.enricher)
        batch = filter_batch(batch, self.filters)
        return window_batch(
            batch, self.settings.window_seconds, self.settings.allowed_lateness_seconds
        )

    def close(self) -> None:
        if self.enricher is not None:
            self.enricher.close()
            self.enricher = None

    def __enter__(self) -> StageRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
