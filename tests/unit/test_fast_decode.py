"""``decode_batch``'s fast path gives exactly what decoding each record by the contracts gives.

The reference below is the decoder as it was before the fast path (one record at a time:
``Envelope.model_validate``, then the source's contract under the record's horizon), written with
the public building blocks. Hypothesis generates batches mixing valid envelopes of every source,
re-drives, edges' dead letters, invalid JSON and UTF-8, envelopes with a field broken in one of
many ways, payloads that break their contract and event times outside the horizon, and requires
the same events and the same dead letters (ids, types, messages), in the same order.

Runtime: about 10 s (200 generated batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sluice.core.contracts import (
    DEFAULT_HORIZON,
    DeadLetter,
    Envelope,
    ErrorType,
    FeedItem,
    IotReading,
    Source,
    Stage,
    TimeHorizon,
    WebAccessLog,
)
from sluice.core.deadletters import dead_letter, describe_validation_error
from sluice.core.errors import RecordRejected
from sluice.core.inputs import decode_json
from sluice.stream.envelopes import (
    claimed_source,
    encode,
    wrap_access_log,
    wrap_dead_letter,
    wrap_feed_item,
    wrap_reading,
)
from sluice.stream.stages import Event, InputRecord, decode_batch, describe_exception

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONTRACTS = {Source.IOT: IotReading, Source.WEBLOG: WebAccessLog, Source.FEED: FeedItem}


def reference(
    shard: str, records: Sequence[InputRecord], horizon: TimeHorizon
) -> tuple[dict[Source, list[Event]], list[Event]]:
    """Each record by the contracts, as ``decode_batch`` did before its fast path."""
    events: dict[Source, list[Event]] = {s: [] for s in Source}
    letters: list[Event] = []
    for record in records:
        seen = datetime.fromtimestamp(record.arrival, UTC)
        try:
            envelope = Envelope.model_validate(decode_json(record.data))
            if envelope.kind == "dead_letter":
                letter = DeadLetter.model_validate(envelope.payload)
                letters.append(Event(record.sequence, record.sub_sequence, record.arrival,
                                     letter.dead_letter_id, letter.first_seen, letter))  # fmt: skip
                continue
            payload = CONTRACTS[envelope.source].model_validate(
                envelope.payload, context=horizon.context(seen)
            )
        except Exception as err:  # noqa: BLE001 - as the decoder: any failure is a dead letter
            if isinstance(err, RecordRejected):
                error_type, message = err.error_type, err.message
            elif isinstance(err, ValidationError):
                error_type, message = describe_validation_error(err)
            else:
                error_type, message = ErrorType.SCHEMA_VIOLATION, describe_exception(err)
            letter = dead_letter(claimed_source(record.data), Stage.PARSE, error_type, message,
                                 record.data, identity=(shard, record.sequence, record.sub_sequence),
                                 first_seen=seen)  # fmt: skip
            letters.append(Event(record.sequence, record.sub_sequence, record.arrival,
                                 letter.dead_letter_id, letter.first_seen, letter))  # fmt: skip
            continue
        events[envelope.source].append(
            Event(record.sequence, record.sub_sequence, record.arrival, envelope.event_id,
                  envelope.ingest_time, payload, envelope.redrive_of)
        )  # fmt: skip
    return events, letters


# --- generated inputs ------------------------------------------------------------------------------

offsets = st.one_of(
    st.integers(-3 * 86_400, 240),  # the usual: up to days old, a little ahead
    st.integers(240, 400),  # around the default 300 s limit ahead of arrival
    st.sampled_from([-86_400 * 365 * 57, -10, 86_400 * 365 * 50]),  # before 1970, far ahead
)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
ids = st.one_of(st.text("abcdefgh0123456789-", min_size=1, max_size=10), text)


@st.composite
def reading(draw: st.DrawFn, arrival: datetime) -> dict[str, Any]:
    at = arrival + timedelta(seconds=draw(offsets))
    body = IotReading.model_construct(
        device_id=draw(ids), event_time=at, location=None, flags=[],
        metrics=draw(st.dictionaries(st.sampled_from(["t", "h", "p"]),
                                     st.floats(-1e6, 1e6, allow_nan=False), max_size=3)),
        attributes=draw(st.dictionaries(st.sampled_from(["fw", "site"]), text, max_size=2)),
        message_id=draw(st.none() | ids),
    )  # fmt: skip
    envelope = Envelope.model_construct(
        source=Source.IOT, kind="record", schema_version=1, event_id=draw(ids),
        ingest_time=arrival, partition_key=draw(ids), payload=body.model_dump(mode="json"),
        redrive_of=None,
    )  # fmt: skip
    body = envelope.model_dump(mode="json")
    if draw(st.booleans()):  # the wire also carries epoch numbers (unit by magnitude)
        body["payload"]["event_time"] = draw(st.sampled_from([int(at.timestamp() * 1000),
                                                              at.timestamp(), str(at.timestamp())]))  # fmt: skip
    return body


@st.composite
def request(draw: st.DrawFn, arrival: datetime) -> dict[str, Any]:
    at = arrival + timedelta(seconds=draw(offsets))
    record = WebAccessLog.model_construct(
        **{**WebAccessLog.model_construct(client_ip="1.2.3.4", event_time=at, status=200).__dict__,
           "status": draw(st.sampled_from([200, 404, 503, 1000, -1])),
           "path": draw(st.none() | text), "bytes_sent": draw(st.none() | st.integers(-1, 10**6))}
    )  # fmt: skip
    payload = {k: v for k, v in record.model_dump(mode="json").items() if v not in (None, [], {})}
    payload.update(client_ip=draw(st.sampled_from(["81.2.69.1", "10.0.0.1", "a\nb"])))
    envelope = wrap_access_log(
        WebAccessLog.model_construct(), "f", draw(st.integers(0, 99)), arrival
    )
    return {**envelope.model_dump(mode="json"), "payload": payload}


@st.composite
def feed_item(draw: st.DrawFn, arrival: datetime) -> dict[str, Any]:
    at = arrival + timedelta(seconds=draw(offsets))
    item = FeedItem.model_construct(
        feed="usgs", item_id=draw(st.text("xyz0123", min_size=1, max_size=5)),
        event_time=min(at, arrival), updated_time=draw(st.none() | st.just(at)),
        fields={"mag": draw(st.floats(0, 9))}, location=None, flags=[],
    )  # fmt: skip
    envelope = wrap_feed_item(FeedItem(feed="usgs", item_id="i", event_time=arrival), arrival)
    return {**envelope.model_dump(mode="json"), "payload": item.model_dump(mode="json")}


def edge_letter(arrival: datetime) -> dict[str, Any]:
    letter = dead_letter(Source.IOT, Stage.EDGE_IOT, ErrorType.INVALID_JSON, "bad body", b"{x",
                         first_seen=arrival)  # fmt: skip
    return wrap_dead_letter(letter, arrival).model_dump(mode="json")


BREAKS: dict[str, Any] = {
    "source": ["nope", 1, None, "IOT"],
    "kind": ["dead_letter", "other", 3],
    "schema_version": ["1", True, 1.0, 2, "one", 1.5],
    "event_id": ["", "x" * 129, 5, None],
    "ingest_time": ["2026-05-01T12:00:00+00:00", "2026-05-01T14:00:00+02:00", "2026-05-01T12:00:00",
                    "2026-13-01T12:00:00Z", 1777636800, "2026-05-01T12:00:00.5Z", "yesterday"],
    "partition_key": ["", "k" * 257, 7],
    "payload": [[], "x", None, {}],
    "redrive_of": ["dl-1", "", "d" * 129, 9],
    "extra": ["not allowed"],
}  # fmt: skip


@st.composite
def record_bytes(draw: st.DrawFn, arrival: datetime) -> bytes:
    kind = draw(st.sampled_from(["iot", "iot", "iot", "web", "feed", "letter", "raw", "broken"]))
    if kind == "raw":
        return draw(st.sampled_from([b"{not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"", b"null",
                                     b'{"source": "weblog"}']))  # fmt: skip
    if kind == "letter":
        body = edge_letter(arrival)
    elif kind == "web":
        body = draw(request(arrival))
    elif kind == "feed":
        body = draw(feed_item(arrival))
    else:
        body = draw(reading(arrival))
    if draw(st.booleans()) and kind != "letter":
        body["redrive_of"] = draw(ids)
    if kind == "broken":
        body = draw(reading(arrival))
        field = draw(st.sampled_from(sorted(BREAKS)))
        if draw(st.integers(0, 4)) == 0 and field in body:
            del body[field]
        else:
            body[field] = draw(st.sampled_from(BREAKS[field]))
    return orjson.dumps(body)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[InputRecord], TimeHorizon]:
    horizon = draw(st.sampled_from([DEFAULT_HORIZON, TimeHorizon(max_future_seconds=30),
                                    TimeHorizon(min_event_time=T0 - timedelta(days=1))]))  # fmt: skip
    out: list[InputRecord] = []
    for sequence in range(draw(st.integers(0, 12))):
        arrival = T0 + timedelta(seconds=draw(st.integers(0, 3600)))
        for sub in range(draw(st.integers(1, 3))):  # KPL: records of one aggregate share arrival
            out.append(InputRecord(100 + sequence, sub, arrival.timestamp(),
                                   draw(record_bytes(arrival))))  # fmt: skip
    return out, horizon


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_the_fast_path_decodes_exactly_as_the_contracts_do(
    batch: tuple[list[InputRecord], TimeHorizon],
) -> None:
    records, horizon = batch
    decoded = decode_batch("shard-1", records, previous_sequence=99, horizon=horizon)
    events, letters = reference("shard-1", records, horizon)
    assert {s: list(e) for s, e in decoded.events.items()} == events
    assert list(decoded.dead_letters) == letters
    assert decoded.redriven == sum(e.redrive_of is not None for es in events.values() for e in es)
    assert decoded.counters.get("parse.received", 0) == len(records)


def test_the_common_case_takes_the_fast_path_and_edge_cases_do_not() -> None:
    # The generated batches above must exercise both paths: a plain envelope is read by plain
    # checks, one with its time in another zone is left to the contract (and then agrees).
    plain = encode(wrap_reading(IotReading(device_id="d", event_time=T0, metrics={}), T0))
    from sluice.stream.envelopes import decoded_envelope

    assert decoded_envelope(plain) is not None
    shifted = orjson.loads(plain)
    shifted["ingest_time"] = "2026-05-01T14:00:00+02:00"
    assert decoded_envelope(orjson.dumps(shifted)) is None
    record = InputRecord(1, 0, T0.timestamp(), orjson.dumps(shifted))
    assert decode_batch("s", [record]).events[Source.IOT][0].ingest_time == T0
