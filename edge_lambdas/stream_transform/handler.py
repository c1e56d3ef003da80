"""Transform Lambda behind a Kinesis event source mapping: the job's stages, the job's tables.

In: a Kinesis event (``Records`` of one shard, in order; KPL aggregates among them), as the mapping
delivers it with ``ReportBatchItemFailures`` on and a parallelization factor of 1 (one invocation per
shard at a time).
Out: the records decoded, validated, enriched, filtered and pre-aggregated (``sluice.stream.run``)
and committed to the six tables with their shard's position (``sluice.tables.batch_commit``); the
response ``{"batchItemFailures": [{"itemIdentifier": <sequence number>}]}`` names, per shard whose
commit did not happen, the first record to deliver again (empty list: all done).
Dead letters: every record a stage or the writer cannot take lands in ``dead_letters``; a record
never fails its batch. Only a commit that did not happen (tables unreachable, a newer owner) is a
batch item failure; records already committed are skipped when delivered again.

All of the logic is in the core; this module wires it to the event, to the stream's identity
(DescribeStreamSummary, once per execution environment) and to Powertools' logging and metrics.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.data_classes import KinesisStreamEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from edge_lambdas.shared.settings import load_settings
from edge_lambdas.shared.telemetry import NAMESPACE
from edge_lambdas.stream_transform.settings import StreamTransformSettings
from sluice.core.runtime import tune_gc
from sluice.stream.lambda_events import shard_records
from sluice.tables.batch_commit import BatchCommitter, InvocationReport
from sluice.tables.ownership import StreamIdentity

__all__ = ["lambda_handler"]

SERVICE = "stream_transform"

# Cold start: invalid settings fail the init here, with the variable named, before any batch.
settings = load_settings(StreamTransformSettings)
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tune_gc()


def _stream_identity(name: str) -> StreamIdentity:
    client = boto3.client("kinesis")
    summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    return StreamIdentity(
        name=summary["StreamName"],
        arn=summary["StreamARN"],
        created=summary["StreamCreationTimestamp"].timestamp(),
    )


committer = BatchCommitter(
    settings,
    settings.warehouse_settings(),
    settings.deployment_id,
    positions_commit_seconds=settings.positions_commit_seconds,
    on_new_stream=settings.on_new_stream,
    stream=_stream_identity(settings.stream_name),
)


def _record_metrics(report: InvocationReport) -> None:
    received = sum(s.received for s in report.shards)
    skipped = sum(s.skipped for s in report.shards)
    metrics.add_metric(name="received", unit=MetricUnit.Count, value=received)
    metrics.add_metric(name="skipped", unit=MetricUnit.Count, value=skipped)
    metrics.add_metric(name="rows", unit=MetricUnit.Count, value=sum(report.rows.values()))
    metrics.add_metric(name="duplicates", unit=MetricUnit.Count, value=report.duplicates)
    metrics.add_metric(name="commit_conflicts", unit=MetricUnit.Count, value=report.conflicts)
    metrics.add_metric(name="failed_batches", unit=MetricUnit.Count, value=len(report.retry_from))
    metrics.add_metric(name="fenced", unit=MetricUnit.Count, value=int(report.fenced))
    for name, count in sorted(report.counters.items()):
        if name.startswith("dead_lettered.") and count:
            by_reason = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            by_reason.add_dimension(name="reason", value=name.removeprefix("dead_lettered."))
            by_reason.add_metric(name="dead_lettered", unit=MetricUnit.Count, value=count)
            by_reason.flush_metrics()


@logger.inject_lambda_context
@metrics.log_metrics
@event_source(data_class=KinesisStreamEvent)
def lambda_handler(event: KinesisStreamEvent, context: LambdaContext) -> dict[str, Any]:
    report = committer.process(shard_records(event.raw_event.get("Records", [])))
    _record_metrics(report)
    failures = [{"itemIdentifier": sequence} for sequence in report.retry_from]
    log = logger.warning if failures else logger.info
    log(
        "batch processed" if not failures else "batch not committed: delivered again",
        extra={
            "shards": [
                {
                    "shard": s.shard_id,
                    "received": s.received,
                    "skipped": s.skipped,
                    "retry_from": s.retry_from,
                    "reason": s.reason,
                }
                for s in report.shards
            ],
            "rows": report.rows,
            "duplicates": report.duplicates,
            "conflicts": report.conflicts,
        },
    )
    return {"batchItemFailures": failures}
