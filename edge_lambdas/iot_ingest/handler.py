"""IoT edge Lambda behind an API Gateway HTTP API (payload format 2.0): readings in, Kinesis out.

In: ``POST`` with one reading, a JSON array of readings or NDJSON; optionally ``Content-Encoding:
gzip``; API Gateway's ``isBase64Encoded`` bodies.
Out: the readings as envelopes on the stream (partition key = device id), and the response
``{"accepted": N, "rejected": M, "errors": [...]}``: 202 when at least one reading was accepted,
400 when nothing was usable, 413 for a body over the limit (compressed or decompressed), 415 for an
unsupported content type or encoding, 503 when the stream stayed unavailable past the retry budget
and the dead-letter destination failed too (the client retries; event ids make that de-duplicable).
Dead letters: every rejected body or reading travels the stream as a dead-letter envelope (see
``sluice.edges.ingest`` for the reasons); envelopes the stream would not take go to the configured S3/SQS
dead-letter destination (``delivery_failed``).

All of the logic is in ``sluice.edges.ingest`` (body handling, response) and the shared publisher; this
module wires them to the event and to Powertools' logging, metrics and tracing.
"""

from __future__ import annotations

from typing import Any

import orjson
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from edge_lambdas.iot_ingest.settings import IotIngestSettings
from edge_lambdas.shared.publisher import DeadLetterDeliveryError, KinesisPublisher
from edge_lambdas.shared.settings import load_settings
from edge_lambdas.shared.telemetry import NAMESPACE, record_metrics
from sluice.core.contracts import correlation_id
from sluice.edges.ingest import (
    IngestCounts,
    IotRequest,
    ingest_iot_request,
    service_unavailable_body,
)

__all__ = ["lambda_handler"]

SERVICE = "iot_ingest"

# Cold start: invalid settings fail the init here, with the variable named, before any traffic.
settings = load_settings(IotIngestSettings)
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
publisher = KinesisPublisher.from_settings(settings, logger=logger)
body_limits = settings.body_limits()
horizon = settings.time_horizon()
sentinels = settings.sentinels()


def _response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", **(headers or {})},
        "body": orjson.dumps(body).decode(),
        "isBase64Encoded": False,
    }


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
@event_source(data_class=APIGatewayProxyEventV2)
def lambda_handler(event: APIGatewayProxyEventV2, context: LambdaContext) -> dict[str, Any]:
    headers = event.headers
    # The request's correlation id: the client's own, if it sent a usable one, else the HTTP
    # API's request id. It goes into every envelope, hence every row, and into the logs.
    request_id = (
        correlation_id(headers.get("x-correlation-id"))
        or correlation_id(event.request_context.request_id)
        or correlation_id(context.aws_request_id)
    )
    logger.set_correlation_id(request_id)
    outcome = ingest_iot_request(
        IotRequest(
            body=event.body,
            is_base64_encoded=bool(event.is_base64_encoded),
            content_type=headers.get("content-type"),
            content_encoding=headers.get("content-encoding"),
            method=event.http_method,
        ),
        body_limits,
        horizon=horizon,
        max_dead_letters=settings.max_dead_letters,
        sentinels=sentinels,
    )
    counts = IngestCounts()
    counts.add(
        outcome.accepted,
        outcome.dead_letters,
        suppressed=outcome.suppressed,
        skipped=outcome.skipped,
    )
    try:
        report = publisher.publish(outcome.envelopes, request_id) if outcome.envelopes else None
    except DeadLetterDeliveryError:
        logger.exception("stream unavailable and dead-letter destination failed: answering 503")
        metrics.add_metric(name="unavailable", unit=MetricUnit.Count, value=1)
        return _response(
            503,
            service_unavailable_body(),
            {"retry-after": "1", **({"x-correlation-id": request_id} if request_id else {})},
        )
    record_metrics(metrics, SERVICE, counts, report)
    logger.info(
        "request ingested",
        extra={
            "status": outcome.status,
            "accepted": outcome.accepted,
            "rejected": outcome.rejected,
            "missing_metrics": outcome.missing_metrics,
            "publish": report.as_dict() if report else None,
        },
    )
    return _response(
        outcome.status,
        outcome.response_body(),
        {"x-correlation-id": request_id} if request_id else None,
    )
