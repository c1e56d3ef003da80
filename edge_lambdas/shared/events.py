"""Lambda events and contexts built the way AWS builds them, for the local server and the tests.

In: the parts of a request or a delivery (method, path, headers, body; log messages; an S3 object).
Out: dicts in the exact shapes Lambda receives: API Gateway HTTP API payload format 2.0, CloudWatch
Logs subscription (base64 gzip ``awslogs.data``), S3 ``ObjectCreated`` notification; and a
``LocalContext`` with the attributes Powertools reads from a Lambda context.
Nothing here validates input: malformed values are passed on as AWS would pass them.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import orjson

__all__ = [
    "LocalContext",
    "apigw_v2_event",
    "cloudwatch_logs_event",
    "log_event_id",
    "s3_object_created_event",
]

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
_TEXT_TYPES = ("text/", "application/json", "application/x-ndjson", "application/x-www-form")


def apigw_v2_event(
    method: str,
    path: str,
    body: bytes | None,
    headers: Mapping[str, str] | None = None,
    *,
    source_ip: str = "192.0.2.10",
    base64_body: bool | None = None,
    query: str = "",
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) proxy event for a ``{method} {path}`` route.

    Header names are lower-cased as API Gateway does. The body is base64-encoded when it is binary
    (compressed, not UTF-8, or of a non-text type), as API Gateway does, unless ``base64_body`` says.
    """
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": lowered,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": "local.execute-api.localhost",
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if body is None:
        return event
    if base64_body is None:
        base64_body = _is_binary(body, lowered)
    if base64_body:
        event["body"] = base64.b64encode(body).decode("ascii")
        event["isBase64Encoded"] = True
    else:
        event["body"] = body.decode("utf-8")
    return event


def _is_binary(body: bytes, headers: Mapping[str, str]) -> bool:
    if headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return True
    content_type = headers.get("content-type", "").lower()
    if content_type and not content_type.startswith(_TEXT_TYPES) and "json" not in content_type:
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def log_event_id(seed: str, index: int) -> str:
    """A 56-digit id shaped like CloudWatch Logs' own, stable for the same seed and index."""
    digest = hashlib.blake2b(f"{seed}\x1f{index}".encode(), digest_size=24).digest()
    return str(int.from_bytes(digest, "big")).zfill(56)[:56]


def cloudwatch_logs_event(
    messages: Iterable[str],
    *,
    log_group: str = "/sluice/nginx/access",
    log_stream: str = "web-1",
    seed: str | None = None,
    timestamp_ms: int | None = None,
    message_type: str = "DATA_MESSAGE",
) -> dict[str, Any]:
    """A CloudWatch Logs subscription event: ``{"awslogs": {"data": base64(gzip(json))}}``.

    Log event ids come from ``seed`` (default: the current time) and the message's index.
    """
    timestamp = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    seed = seed if seed is not None else f"{log_group}:{log_stream}:{time.time_ns()}"
    document = {
        "messageType": message_type,
        "owner": ACCOUNT_ID,
        "logGroup": log_group,
        "logStream": log_stream,
        "subscriptionFilters": ["sluice-access-logs"],
        "logEvents": [
            {"id": log_event_id(seed, index), "timestamp": timestamp, "message": message}
            for index, message in enumerate(messages)
        ],
    }
    data = base64.b64encode(gzip.compress(orjson.dumps(document))).decode("ascii")
    return {"awslogs": {"data": data}}


def s3_object_created_event(
    bucket: str,
    key: str,
    size: int,
    *,
    etag: str = "0123456789abcdef",
    version_id: str | None = None,
) -> dict[str, Any]:
    """An S3 ``ObjectCreated:Put`` notification for one object (the key URL-encoded, as S3 sends it)."""
    obj: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),
        "size": size,
        "eTag": etag,
        "sequencer": "0055AED6DCD90281E5",
    }
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:EXAMPLE"},
                "requestParameters": {"sourceIPAddress": "192.0.2.20"},
                "responseElements": {
                    "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                    "x-amz-id-2": base64.b64encode(uuid.uuid4().bytes).decode(),
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "sluice-access-logs",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "EXAMPLE"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": obj,
                },
            }
        ]
    }


@dataclass
class LocalContext:
    """The Lambda context attributes Powertools and the handlers read."""

    function_name: str = "sluice-edge-local"
    memory_limit_in_mb: int = 512
    timeout_seconds: float = 30.0
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/sluice-edge-local"
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic, repr=False)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        left = self.timeout_seconds - (time.monotonic() - self._started)
        return max(0, int(left * 1000))
