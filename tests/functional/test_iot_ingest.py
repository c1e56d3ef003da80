"""The IoT edge handler, invoked with API Gateway HTTP API (2.0) events, publishing to moto.

Each test reads the stream back: accepted readings arrive as records keyed by device id, and every
rejection (a body or a reading) arrives as a dead-letter envelope with its reason.
"""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib
from types import ModuleType
from typing import Any

import orjson
import pytest
from faults import FaultProxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kinesis_reader import read_stream

from edge_lambdas.shared.events import LocalContext, apigw_v2_event
from sluice.core.contracts import DeadLetter, ErrorType, IotReading
from sluice.core.errors import ConfigError
from sluice.core.inputs import gunzip_bounded

JSON = {"content-type": "application/json"}
MIB = 1024 * 1024


def reading(i: int, device: str = "sensor-1") -> dict[str, Any]:
    return {"device_id": device, "ts": 1_764_158_400 + i, "temperature": 20.5 + i, "unit": "C"}


def ndjson(*items: Any) -> bytes:
    return b"\n".join(orjson.dumps(item) for item in items) + b"\n"


def invoke(
    handler: ModuleType,
    body: bytes | None,
    headers: dict[str, str] | None = None,
    *,
    base64_body: bool | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    event = apigw_v2_event(method, "/iot", body, headers or JSON, base64_body=base64_body)
    response = handler.lambda_handler(event, LocalContext(function_name="iot_ingest"))
    return response["statusCode"], orjson.loads(response["body"]), response["headers"]


def test_one_reading_is_accepted_and_published_under_its_device_id(
    iot_handler: ModuleType, kinesis: Any, stream: str
) -> None:
    # GIVEN one reading as a JSON object WHEN posted
    status, body, headers = invoke(iot_handler, orjson.dumps(reading(0)))

    # THEN it is accepted and on the stream, keyed by its device
    assert (status, body) == (202, {"accepted": 1, "rejected": 0, "errors": []})
    assert headers["content-type"] == "application/json"
    contents = read_stream(kinesis, stream)
    (envelope,) = contents.envelopes
    assert envelope.partition_key == "sensor-1" and envelope.kind == "record"
    assert IotReading.model_validate(envelope.payload).metrics == {"temperature": 20.5}


@pytest.mark.parametrize(
    ("body", "headers", "base64_body"),
    [
        (orjson.dumps([reading(i) for i in range(3)]), JSON, None),
        (ndjson(*(reading(i) for i in range(3))), {"content-type": "application/x-ndjson"}, None),
        (gzip.compress(ndjson(*(reading(i) for i in range(3)))),
         {"content-type": "application/x-ndjson", "content-encoding": "gzip"}, True),
        (orjson.dumps([reading(i) for i in range(3)]), {}, True),  # base64 without a content type
    ],
    ids=["json-array", "ndjson", "gzip-ndjson", "base64-no-content-type"],
)  # fmt: skip
def test_arrays_ndjson_gzip_and_base64_bodies_are_accepted(
    iot_handler: ModuleType,
    kinesis: Any,
    stream: str,
    body: bytes,
    headers: dict[str, str],
    base64_body: bool | None,
) -> None:
    status, response, _ = invoke(iot_handler, body, headers, base64_body=base64_body)
    assert (status, response["accepted"], response["rejected"]) == (202, 3, 0)
    assert len(read_stream(kinesis, stream).records()) == 3


def test_bad_readings_are_reported_and_dead_lettered_without_failing_the_good_ones(
    iot_handler: ModuleType, kinesis: Any, stream: str
) -> None:
    # GIVEN NDJSON with three good readings, a broken line and a reading without device id
    body = b"\n".join(
        [
            orjson.dumps(reading(0)),
            b'{"device_id": "sensor-2", "ts": ',
            orjson.dumps(reading(1)),
            orjson.dumps({"ts": 1_764_158_400, "temperature": 1}),
            orjson.dumps(reading(2)),
        ]
    )

    # WHEN posted
    status, response, _ = invoke(iot_handler, body, {"content-type": "application/x-ndjson"})

    # THEN the good ones are accepted and each bad one is described with where it was
    assert (status, response["accepted"], response["rejected"]) == (202, 3, 2)
    assert [(e["at"], e["error_type"]) for e in response["errors"]] == [
        ("line 2", "invalid_json"),
        ("line 4", "missing_field"),
    ]
    # AND the stream has the three records and the two dead letters, with matching ids
    contents = read_stream(kinesis, stream)
    letters = contents.dead_letters()
    assert len(contents.records()) == 3
    assert [letter.error_type for letter in letters] == [
        ErrorType.INVALID_JSON,
        ErrorType.MISSING_FIELD,
    ]
    assert [letter.dead_letter_id for letter in letters] == [
        e["dead_letter_id"] for e in response["errors"]
    ]
    assert letters[0].raw == '{"device_id": "sensor-2", "ts": '


def gzip_bomb(decompressed_bytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"0" * MIB
    parts = [compressor.compress(zeros) for _ in range(decompressed_bytes // MIB)]
    return b"".join(parts) + compressor.flush()


BOMB = gzip_bomb(256 * MIB)
NESTED_ARRAYS = b"[" * 100_000 + b"]" * 100_000


def nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {"a": 1}
    for _ in range(depth):
        inner = {"a": inner}
    return {"device_id": "d", "ts": 1_764_158_400, "deep": inner}


NESTED_OBJECT = orjson.dumps(nested(20))


@pytest.mark.parametrize(
    ("body", "headers", "base64_body", "status", "error_type"),
    [
        (b"[" + b"1," * (600 * 1024) + b"1]", JSON, None, 413, "too_large"),
        (b"this is not gzip", {"content-encoding": "gzip"}, True, 400, "invalid_encoding"),
        (gzip.compress(ndjson(reading(0)))[:-12], {"content-encoding": "gzip"}, True, 400,
         "invalid_encoding"),
        (BOMB, {"content-encoding": "gzip"}, True, 413, "too_large"),
        (b'{"device_id": "\xff\xfe", "ts": 1764158400}', JSON, True, 400, "invalid_encoding"),
        (NESTED_ARRAYS, JSON, None, 400, "invalid_json"),
        (NESTED_OBJECT, JSON, None, 400, "schema_violation"),
        (b'{"device_id": "d", "ts": "yesterday", "t": 1}', JSON, None, 400, "invalid_timestamp"),
        (b'{"device_id": "d", "ts": 1764158400, "location": "here"}', JSON, None, 400,
         "schema_violation"),
        (b"42", JSON, None, 400, "schema_violation"),
        (b"", JSON, None, 400, "invalid_json"),
        (b"  \n ", JSON, None, 400, "invalid_json"),
        (orjson.dumps(reading(0)), {"content-type": "image/png"}, None, 415, "schema_violation"),
        (orjson.dumps(reading(0)), {"content-encoding": "br"}, True, 415, "schema_violation"),
    ],
    ids=["oversized", "invalid-gzip", "truncated-gzip", "gzip-bomb", "non-utf8", "deep-arrays",
         "deep-object", "bad-timestamp", "wrong-type", "scalar", "empty", "blank",
         "wrong-content-type", "unsupported-encoding"],
)  # fmt: skip
def test_bad_input_gets_a_bounded_error_response_and_a_dead_letter(
    iot_handler: ModuleType,
    kinesis: Any,
    stream: str,
    body: bytes,
    headers: dict[str, str],
    base64_body: bool | None,
    status: int,
    error_type: str,
) -> None:
    # GIVEN a bad request
    event = apigw_v2_event("POST", "/iot", body, headers, base64_body=base64_body)
    # WHEN it is handled THEN it gets a short 4xx saying why, and a dead letter
    assert_rejected(iot_handler, event, kinesis, stream, status, error_type)


def test_a_body_flagged_base64_that_is_not_base64_is_rejected(
    iot_handler: ModuleType, kinesis: Any, stream: str
) -> None:
    event = apigw_v2_event("POST", "/iot", None, JSON)
    event.update(body="{not base64!", isBase64Encoded=True)
    assert_rejected(iot_handler, event, kinesis, stream, 400, "invalid_encoding")


def test_a_text_body_with_a_lone_surrogate_is_rejected(
    iot_handler: ModuleType, kinesis: Any, stream: str
) -> None:
    # A JSON-decoded event may hold "\ud800", which no UTF-8 byte sequence encodes.
    event = apigw_v2_event("POST", "/iot", None, JSON)
    event.update(body='{"device_id": "d\ud800", "ts": 1764158400}', isBase64Encoded=False)
    assert_rejected(iot_handler, event, kinesis, stream, 400, "invalid_encoding")


def assert_rejected(
    handler: ModuleType,
    event: dict[str, Any],
    kinesis: Any,
    stream: str,
    status: int,
    error_type: str,
) -> None:
    started = time.monotonic()
    response = handler.lambda_handler(event, LocalContext())
    elapsed = time.monotonic() - started
    # The answer is the expected 4xx, short, saying why
    answer = orjson.loads(response["body"])
    assert response["statusCode"] == status
    assert len(response["body"]) < 4096 and elapsed < 5
    assert answer["accepted"] == 0 and answer["rejected"] == 1
    assert answer["errors"][0]["error_type"] == error_type
    # and the rejected input is a dead letter on the stream, nothing else is
    contents = read_stream(kinesis, stream)
    (letter,) = contents.dead_letters()
    assert contents.records() == []
    assert letter.error_type.value == error_type and letter.stage == "edge.iot"
    assert letter.dead_letter_id == answer["errors"][0]["dead_letter_id"]


def test_gzip_bomb_decompression_stops_at_the_limit() -> None:
    # GIVEN a 200 KiB body that inflates to 256 MiB
    assert len(BOMB) < 300 * 1024
    tracemalloc.start()
    try:
        # WHEN decompressed with a 5 MiB limit THEN it is refused and memory stayed near the limit
        with pytest.raises(OverflowError):
            gunzip_bounded(BOMB, 5 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * MIB


def test_gzip_bomb_can_be_cut_at_the_limit_instead_of_refused() -> None:
    # GIVEN the same bomb WHEN decompressed with truncate THEN its first 5 MiB come back, in bounded
    # memory (the feed poller hands them on to the parser, which refuses the document as too large)
    tracemalloc.start()
    try:
        head = gunzip_bounded(BOMB, 5 * MIB, truncate=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert head == b"0" * (5 * MIB) and peak < 20 * MIB  # a few copies of 5 MiB, never 256
    small = gzip.compress(b"abc")
    assert gunzip_bounded(small, 3, truncate=True) == b"abc" == gunzip_bounded(small, 3)
    assert gunzip_bounded(small, 2, truncate=True) == b"ab"


def test_the_same_request_twice_yields_the_same_event_ids(
    iot_handler: ModuleType, kinesis: Any, stream: str
) -> None:
    # GIVEN a client that retries a request (a timeout on its side)
    body = orjson.dumps([reading(i) for i in range(5)])

    # WHEN it is posted twice THEN each event id is on the stream twice: duplicates are de-duplicable
    invoke(iot_handler, body)
    invoke(iot_handler, body)
    assert set(read_stream(kinesis, stream).event_ids.values()) == {2}


def test_stream_unavailable_but_dead_letters_stored_still_accepts(
    fault_proxy: FaultProxy, iot_handler: ModuleType, s3: Any, dead_letter_bucket: str
) -> None:
    # GIVEN a stream that throttles every call past the (1 s) retry budget
    fault_proxy.throttle(times=None)

    # WHEN readings are posted
    status, response, _ = invoke(iot_handler, orjson.dumps([reading(i) for i in range(4)]))

    # THEN they are accepted: they are safe in the dead-letter bucket for re-drive
    assert (status, response["accepted"]) == (202, 4)
    (obj,) = s3.list_objects_v2(Bucket=dead_letter_bucket)["Contents"]
    body = s3.get_object(Bucket=dead_letter_bucket, Key=obj["Key"])["Body"].read()
    letters = [DeadLetter.model_validate_json(line) for line in body.splitlines()]
    assert len(letters) == 4 and {letter.error_type for letter in letters} == {
        ErrorType.DELIVERY_FAILED
    }


def test_stream_and_dead_letter_destination_unavailable_answers_503(
    fault_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    load_handler: Any,
) -> None:
    # GIVEN a throttled stream and a dead-letter bucket that does not exist
    fault_proxy.throttle(times=None)
    monkeypatch.setenv("SLUICE_DEAD_LETTER_BUCKET", "sluice-no-such-bucket")
    handler = load_handler("edge_lambdas.iot_ingest.handler")

    # WHEN a reading is posted
    status, response, headers = invoke(handler, orjson.dumps(reading(0)))

    # THEN the client is told to retry later
    assert status == 503 and headers["retry-after"] == "1"
    assert response["errors"][0]["error_type"] == "delivery_failed"


def test_metrics_count_received_emitted_and_dead_letters_by_reason(
    iot_handler: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a request with two good readings and one without a timestamp
    body = ndjson(reading(0), reading(1), {"device_id": "d", "t": 1})

    # WHEN handled
    invoke(iot_handler, body)

    # THEN the EMF output (namespace Sluice) counts them under the shared names
    blobs = [
        orjson.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    values = {
        (metric["Name"], blob.get("reason")): blob[metric["Name"]]
        for blob in blobs
        for directive in blob["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
        if directive["Namespace"] == "Sluice"
    }
    assert values[("received", None)] == [3.0]
    assert values[("emitted", None)] == [2.0]
    assert values[("dead_lettered", "missing_field")] == [1.0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SLUICE_MAX_BODY_BYTES", "lots"), ("SLUICE_STREAM_NAME", "not a stream name!"),
     ("SLUICE_RETRY_BUDGET_SECONDS", "-1"), ("SLUICE_DEAD_LETTER_QUEUE_URL", "https://sqs.local/q")],
)  # fmt: skip
def test_invalid_settings_fail_the_cold_start_naming_the_variable(
    load_handler: Any, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    # GIVEN one invalid variable (a queue URL besides the bucket is one destination too many)
    monkeypatch.setenv(variable, value)
    # WHEN the handler module is loaded THEN its init fails, naming the variable
    with pytest.raises(ConfigError, match=variable):
        load_handler("edge_lambdas.iot_ingest.handler")


body_strategy = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=500).map(str.encode),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["device_id", "ts", "deviceId", "timestamp", "t", "location", "payload"]
                ),
                children,
                max_size=5,
            )
        ),
        max_leaves=20,
    ).map(orjson.dumps),
)


@given(
    body=body_strategy,
    compress=st.booleans(),
    content_type=st.sampled_from([None, "application/json", "text/plain", "application/xml"]),
    as_base64=st.booleans(),
)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_arbitrary_bodies_never_make_the_handler_raise(
    iot_handler: ModuleType, body: bytes, compress: bool, content_type: str | None, as_base64: bool
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    if compress:
        body, headers["content-encoding"] = gzip.compress(body), "gzip"
    # Forced base64, or what API Gateway would do (base64 for binary, text otherwise).
    base64_body = True if as_base64 or compress else None
    status, response, _ = invoke(iot_handler, body, headers, base64_body=base64_body)
    assert status in (202, 400, 413, 415)
    assert response["accepted"] + response["rejected"] >= 1
    assert (status == 202) == (response["accepted"] > 0)


def test_responses_report_at_most_the_configured_number_of_errors(
    iot_handler: ModuleType, kinesis: Any, stream: str
) -> None:
    # GIVEN 25 readings without a device id WHEN posted
    status, response, _ = invoke(iot_handler, orjson.dumps([{"ts": 1} for _ in range(25)]))
    # THEN all are rejected and dead-lettered, ten are described
    assert (status, response["rejected"], len(response["errors"])) == (400, 25, 10)
    assert [e["at"] for e in response["errors"]] == [f"index {i}" for i in range(10)]
    assert len(read_stream(kinesis, stream).dead_letters()) == 25


def test_a_junk_body_publishes_the_capped_letters_and_one_summary(
    load_handler: Any, kinesis: Any, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the IoT edge with a cap of 5 letters per request
    monkeypatch.setenv("SLUICE_MAX_DEAD_LETTERS", "5")
    handler = load_handler("edge_lambdas.iot_ingest.handler")
    # WHEN 200 junk lines and one good reading are posted
    body = b"1\n" * 200 + orjson.dumps(reading(0)) + b"\n"
    status, response, _ = invoke(handler, body, {"content-type": "application/x-ndjson"})
    # THEN the reading is accepted, every rejection counted, and the stream gets 5 + 1 letters
    assert (status, response["accepted"], response["rejected"]) == (202, 1, 200)
    contents = read_stream(kinesis, stream)
    letters = [
        DeadLetter.model_validate(e.payload) for e in contents.envelopes if e.kind != "record"
    ]
    assert [d.error_type for d in letters] == [ErrorType.SCHEMA_VIOLATION] * 5 + [
        ErrorType.TOO_MANY_ERRORS
    ]
    assert "schema_violation=195" in letters[-1].message


def test_the_configured_horizon_reaches_the_handler(
    load_handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an edge that allows no event time more than a minute ahead
    monkeypatch.setenv("SLUICE_MAX_FUTURE_SECONDS", "60")
    handler = load_handler("edge_lambdas.iot_ingest.handler")
    # WHEN a reading ten minutes ahead is posted THEN it is refused as invalid_timestamp
    ahead = {"device_id": "d", "ts": int(time.time()) + 600, "t": 1}
    status, response, _ = invoke(handler, orjson.dumps(ahead))
    assert (status, response["errors"][0]["error_type"]) == (400, "invalid_timestamp")
