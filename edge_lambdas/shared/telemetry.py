"""The edges' counters, published as CloudWatch EMF metrics in the ``Sluice`` namespace.

In: a stage's ``IngestCounts`` and the ``PublishReport`` of its publishes.
Out: ``received``, ``emitted``, ``skipped`` (blank lines) and ``dead_lettered`` (one metric per
``reason`` dimension; rejections summarized over the cap count under their own reasons, the summaries
under ``too_many_errors``), the same names every Sluice stage uses, plus ``put_records_attempts`` and
``kinesis_records`` for delivery.
``too_large`` and ``delivery_failed`` envelopes are counted as ``dead_lettered`` with those reasons.
"""

from __future__ import annotations

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from sluice.edges.delivery import PublishReport
from sluice.edges.ingest import IngestCounts

__all__ = ["NAMESPACE", "record_metrics"]

NAMESPACE = "Sluice"


def record_metrics(
    metrics: Metrics, service: str, counts: IngestCounts, report: PublishReport | None
) -> None:
    metrics.add_metric(name="received", unit=MetricUnit.Count, value=counts.received)
    metrics.add_metric(name="emitted", unit=MetricUnit.Count, value=counts.emitted)
    if counts.skipped:
        metrics.add_metric(name="skipped", unit=MetricUnit.Count, value=counts.skipped)
    dead_lettered = dict(counts.dead_lettered)
    if report is not None:
        metrics.add_metric(
            name="put_records_attempts", unit=MetricUnit.Count, value=report.attempts
        )
        metrics.add_metric(
            name="kinesis_records", unit=MetricUnit.Count, value=report.kinesis_records
        )
        for reason, count in (
            ("too_large", report.too_large),
            ("delivery_failed", report.failed_to_dead_letter),
        ):
            if count:
                dead_lettered[reason] = dead_lettered.get(reason, 0) + count
    for reason, count in sorted(dead_lettered.items()):
        # Each reason is its own EMF blob: a dimension on the shared metric set would apply to
        # every metric of the invocation.
        by_reason = EphemeralMetrics(namespace=NAMESPACE, service=service)
        by_reason.add_dimension(name="reason", value=reason)
        by_reason.add_metric(name="dead_lettered", unit=MetricUnit.Count, value=count)
        by_reason.flush_metrics()
