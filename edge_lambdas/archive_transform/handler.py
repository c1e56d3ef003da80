"""Kinesis Data Firehose transformation Lambda: stream records in, archive lines out.

In: a Firehose transformation event from the delivery stream that reads the Kinesis stream
(``records[].kinesisRecordMetadata``: shard, sequence, KPL sub-sequence, arrival; Firehose splits
KPL aggregates before calling).
Out: one archive line per record (``sluice.stream.archive``), with the arrival hour as the
dynamic-partitioning keys ``dt`` and ``hour``: Firehose writes them under
``raw/dt=.../hour=.../`` as ``.jsonl.gz`` objects, which ``sluice replay`` reads like the job's own
archive.
Dead letters: none are made here; a record this cannot turn into a line is ``ProcessingFailed``,
which Firehose keeps unchanged under the bucket's ``raw-errors/`` prefix (counted and logged), so
nothing is dropped.

All of the logic is in ``sluice.stream.archive.firehose_records``; this module wires it to the event
and to Powertools' logging and metrics. It has no settings of its own (Powertools' variables only).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from edge_lambdas.shared.telemetry import NAMESPACE
from sluice.stream.archive import firehose_records

__all__ = ["lambda_handler"]

SERVICE = "archive_transform"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("records") if isinstance(event, dict) else None
    outcome = firehose_records(records if isinstance(records, list) else [])
    metrics.add_metric(name="archived", unit=MetricUnit.Count, value=outcome.archived)
    metrics.add_metric(name="processing_failed", unit=MetricUnit.Count, value=len(outcome.failed))
    if outcome.failed:
        first_id, first_reason = next(iter(outcome.failed.items()))
        logger.warning(
            "records kept under raw-errors/ instead of the archive",
            extra={
                "count": len(outcome.failed),
                "first_record_id": first_id,
                "reason": first_reason,
            },
        )
    return {"records": outcome.records}
