"""The numpy group-bys (``aggregate_iot`` / ``aggregate_iot_columns``, ``aggregate_web`` /
``aggregate_web_columns``) give exactly what the one-value-at-a-time pre-aggregation gave (kept
here as the reference): the same keys in the same order, the same exact parts (count, exact sum,
min, max, requests, bytes), the same quantiles and the same distinct-client estimates."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.contracts import GeoInfo, IotReading, WebAccessLog
from sluice.parsing.iot_columns import parse_iot_columns
from sluice.parsing.weblog.columns import WebLogColumns
from sluice.transform.accumulators import MetricStats, WebGroup, WebTrafficStats
from sluice.transform.aggregate import (
    aggregate_iot,
    aggregate_iot_columns,
    aggregate_web,
    aggregate_web_columns,
    status_class,
    window_start,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def reference(
    readings: list[IotReading], size: int
) -> dict[tuple[str, str, datetime], MetricStats]:
    groups: defaultdict[tuple[str, str, float], list[float]] = defaultdict(list)
    for reading in readings:
        index = reading.event_time.timestamp() // size
        for name, value in reading.metrics.items():
            groups[reading.device_id, name, index].append(value)
    out = {}
    for (device, name, index), values in groups.items():
        stats = MetricStats()
        stats.add_many(values)
        out[device, name, datetime.fromtimestamp(int(index) * size, UTC)] = stats
    return out


readings = st.builds(
    lambda device, offset, metrics: IotReading(
        device_id=device, event_time=NOW - timedelta(microseconds=offset), metrics=metrics
    ),
    st.sampled_from(["a", "b", "device-0003"]),
    st.integers(0, 10**10),
    st.dictionaries(
        st.sampled_from(["t", "h", "co2"]),
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
        max_size=3,
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(readings, max_size=60), st.sampled_from([1, 7, 60, 3600]))
def test_bulk_group_by_equals_the_reference(batch: list[IotReading], size: int) -> None:
    expected = reference(batch, size)
    got = aggregate_iot(batch, size)
    assert list(got) == list(expected)
    for key, stats in expected.items():
        assert got[key] == stats
        assert got[key].quantiles((0.5, 0.95)) == stats.quantiles((0.5, 0.95))
        assert key[2] == window_start(key[2], size)


def test_columns_and_readings_aggregate_alike() -> None:
    lines = [
        f'{{"device_id": "d{i % 7}", "event_time": {NOW.timestamp() - i * 0.37}, '
        f'"metrics": {{"t": {i * 0.1}, "h": {i % 13}}}}}'.encode()
        for i in range(5000)
    ]
    parsed = parse_iot_columns(lines, now=NOW)
    by_columns = aggregate_iot_columns(parsed.columns)
    by_readings = aggregate_iot(parsed.columns.readings())
    assert list(by_columns) == list(by_readings) == list(reference(parsed.columns.readings(), 60))
    assert by_columns == by_readings
    assert sum(s.count for s in by_columns.values()) == 10_000
    assert aggregate_iot_columns(parse_iot_columns([], now=NOW).columns) == {}
    assert np.isclose(
        sum(s.sum for s in by_columns.values()), sum(i * 0.1 + i % 13 for i in range(5000))
    )


def web_reference(
    records: list[WebAccessLog], size: int
) -> dict[tuple[str, str, str, datetime], WebTrafficStats]:
    """The one-record-at-a-time pre-aggregation (``WebGroup`` per key, in order of appearance)."""
    groups: defaultdict[tuple[str, str, str, float], WebGroup] = defaultdict(WebGroup)
    for record in records:
        geo = record.geo
        country = (geo.country_iso or "") if geo is not None and geo.status == "found" else ""
        index = record.event_time.timestamp() // size
        groups[record.path or "", status_class(record.status), country, index].add(record)
    return {
        (path, klass, country, datetime.fromtimestamp(int(index) * size, UTC)): group.add_to(
            WebTrafficStats()
        )
        for (path, klass, country, index), group in groups.items()
    }


GEOS = [None, GeoInfo(status="found", country_iso="FR"), GeoInfo(status="found", country_iso="FR"),
        GeoInfo(status="found"), GeoInfo(status="private"), GeoInfo(status="found", country_iso="JP")]  # fmt: skip
# Built without validation: the contract refuses an infinite request time, the aggregation copes.
web_records = st.builds(
    lambda offset, path, status, sent, seconds, client, geo: WebAccessLog.model_construct(
        client_ip=client,
        event_time=NOW - timedelta(microseconds=offset),
        path=path,
        status=status,
        bytes_sent=sent,
        request_time=seconds,
        geo=geo,
    ),
    st.integers(0, 10**9),
    st.sampled_from([None, "", "/", "/a", "/b"]),
    st.sampled_from([0, 99, 100, 200, 204, 304, 404, 500, 599, 600, 999]),
    st.one_of(st.none(), st.integers(0, 10**6), st.sampled_from([2**62, 2**63 - 1])),
    st.one_of(st.none(), st.floats(min_value=0, max_value=1e6), st.just(float("inf"))),
    st.sampled_from([None, "", "1.1.1.1", "1.1.1.2", "2001:db8::1", "1.1.1.1 "]),
    st.sampled_from(GEOS),
)


def _same_web(got: dict, expected: dict) -> None:  # type: ignore[type-arg]
    assert list(got) == list(expected)
    for key, stats in expected.items():
        assert got[key] == stats, key
        assert got[key].request_time.quantiles((0.5, 0.95)) == stats.request_time.quantiles(
            (0.5, 0.95)
        )
        assert got[key].unique_clients.estimate() == stats.unique_clients.estimate()


@settings(max_examples=300, deadline=None)
@given(st.lists(web_records, max_size=60), st.sampled_from([1, 7, 60, 3600]))
def test_web_group_by_equals_the_reference(batch: list[WebAccessLog], size: int) -> None:
    """GIVEN access logs with missing paths, clients, byte counts and times, sums past int64,
    infinite request times and shared or distinct GeoInfo objects, THEN the records and their
    columns aggregate as the one-by-one reference does."""
    expected = web_reference(batch, size)
    _same_web(aggregate_web(batch, size), expected)
    columns = WebLogColumns(
        client_ip=tuple(r.client_ip for r in batch),
        forwarded_for=tuple(r.forwarded_for for r in batch),
        event_time=tuple(r.event_time for r in batch),
        path=tuple(r.path for r in batch),
        status=tuple(r.status for r in batch),
        bytes_sent=tuple(r.bytes_sent for r in batch),
        request_time=tuple(r.request_time for r in batch),
    )
    _same_web(aggregate_web_columns(columns, [r.geo for r in batch], size), expected)
