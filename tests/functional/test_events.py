"""The event factories produce what AWS sends: checked against Powertools' parser models of the
real API Gateway HTTP API 2.0, S3 notification and CloudWatch Logs subscription payloads."""

from __future__ import annotations

import base64
import gzip

from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventV2Model,
    CloudWatchLogsModel,
    S3Model,
)

from edge_lambdas.shared.events import (
    apigw_v2_event,
    cloudwatch_logs_event,
    log_event_id,
    s3_object_created_event,
)


def test_api_gateway_events_match_the_payload_2_0_model() -> None:
    # GIVEN a JSON request and a gzip request
    text = apigw_v2_event("POST", "/iot", b'{"a": 1}', {"Content-Type": "application/json"})
    binary = apigw_v2_event("POST", "/iot", gzip.compress(b"{}"), {"Content-Encoding": "gzip"})

    # WHEN validated against the payload 2.0 model THEN both are well-formed
    for event in (text, binary):
        model = APIGatewayProxyEventV2Model.model_validate(event)
        assert model.requestContext.http.method == "POST" and model.routeKey == "POST /iot"
    # AND as in API Gateway, headers are lower-case and binary bodies base64-encoded
    assert text["headers"] == {"content-type": "application/json"} and not text["isBase64Encoded"]
    assert binary["isBase64Encoded"] and gzip.decompress(base64.b64decode(binary["body"])) == b"{}"


def test_s3_events_match_the_notification_model_with_url_encoded_keys() -> None:
    model = S3Model.model_validate(s3_object_created_event("logs", "web 1/accès.log", 10))
    (record,) = model.Records
    assert record.eventName == "ObjectCreated:Put" and record.s3.bucket.name == "logs"
    assert record.s3.object.key == "web+1/acc%C3%A8s.log" and record.s3.object.size == 10


def test_cloudwatch_events_match_the_subscription_model_with_stable_ids() -> None:
    event = cloudwatch_logs_event(["first", "second"], log_group="/g", log_stream="s", seed="x")
    data = CloudWatchLogsModel.model_validate(event).awslogs.decoded_data
    assert (data.logGroup, data.logStream, data.messageType) == ("/g", "s", "DATA_MESSAGE")
    assert [e.id for e in data.logEvents] == [log_event_id("x", 0), log_event_id("x", 1)]
    assert all(len(e.id) == 56 and e.id.isdigit() for e in data.logEvents)
    assert [e.message for e in data.logEvents] == ["first", "second"]
