"""Tests of sluice.transform.aggregate (windows, batch pre-aggregation) and .accumulators (mergeable
accumulators, their bytes)."""

from __future__ import annotations

import math
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.contracts import GeoInfo, IotReading, WebAccessLog
from sluice.transform import aggregate
from sluice.transform.accumulators import (
    FORMAT_VERSION,
    DistinctCounter,
    MetricStats,
    WebTrafficStats,
)
from sluice.transform.aggregate import (
    aggregate_iot,
    aggregate_web,
    merge_maps,
    status_class,
    window_start,
    window_starts_epoch,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
"""A minute boundary."""

KLL_RANK_TOLERANCE = 0.02


def stats_of(values: Any, k: int = 200) -> MetricStats:
    stats = MetricStats(k)
    stats.add_many(values)
    return stats


def rank_of(data: np.ndarray, value: float) -> float:
    """Normalized rank of ``value`` in ``data``: the mid-point of the < and <= ranks."""
    return float((np.sum(data < value) + np.sum(data <= value)) / (2 * data.size))


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_time", "size", "expected"),
    [
        (T0, 60, T0),  # exactly on a boundary opens the window
        (T0 + timedelta(seconds=59, microseconds=999_999), 60, T0),
        (T0 + timedelta(seconds=60), 60, T0 + timedelta(minutes=1)),
        (T0 + timedelta(seconds=30), 60, T0),
        (T0 - timedelta(microseconds=1), 60, T0 - timedelta(minutes=1)),
        (T0 + timedelta(minutes=7, seconds=3), 300, T0 + timedelta(minutes=5)),
        (T0 + timedelta(seconds=1.5), 1, T0 + timedelta(seconds=1)),
        (T0 + timedelta(minutes=59), 3600, T0),
        (datetime(2024, 5, 1, 12, 0, 42), 60, T0),  # naive is taken as UTC
        (  # another zone is converted to UTC
            datetime(2024, 5, 1, 14, 0, 42, tzinfo=timezone(timedelta(hours=2))),
            60,
            T0,
        ),
        (datetime(1970, 1, 1, 0, 0, 59, tzinfo=UTC), 60, datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_window_start_alignment(event_time: datetime, size: int, expected: datetime) -> None:
    # GIVEN an event time and a window size
    # WHEN its window start is computed
    start = window_start(event_time, size)
    # THEN it is the epoch-aligned UTC boundary at or before the event
    assert start == expected
    assert start.tzinfo is UTC


@pytest.mark.parametrize("size", [0, -60])
def test_window_start_rejects_non_positive_sizes(size: int) -> None:
    # GIVEN a non-positive window size / WHEN used / THEN it is refused
    with pytest.raises(ValueError):
        window_start(T0, size)
    with pytest.raises(ValueError):
        window_starts_epoch(np.array([0]), size)


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_window_starts_epoch_matches_scalar(dtype: type) -> None:
    # GIVEN epoch seconds around boundaries, as ints or floats
    base = int(T0.timestamp())
    epochs: np.ndarray = np.array([base, base + 59, base + 60, base - 1, base + 3599], dtype=dtype)
    # WHEN vectorised
    starts = window_starts_epoch(epochs, 60)
    # THEN each equals the scalar window_start, as int64 epoch seconds
    assert starts.dtype == np.int64
    expected = [int(window_start(datetime.fromtimestamp(e, UTC)).timestamp()) for e in epochs]
    assert starts.tolist() == expected


def test_window_starts_epoch_float_fractions() -> None:
    # GIVEN fractional epoch seconds just before a boundary
    base = T0.timestamp()
    # WHEN vectorised / THEN the fraction does not leak into the next window
    assert window_starts_epoch(np.array([base - 0.000001, base + 0.5]), 60).tolist() == [
        int(base) - 60,
        int(base),
    ]


# --------------------------------------------------------------------------------------------
# MetricStats
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [1.0],
        [3.0, -1.5, 2.5, 10.0],
        [0.1] * 10,
        list(range(100)),
    ],
)
@pytest.mark.parametrize("as_array", [False, True])
def test_metric_stats_exact_parts(values: list[float], as_array: bool) -> None:
    # GIVEN a batch of values, as a list or a numpy array
    batch = np.array(values, dtype=np.float64) if as_array else values
    # WHEN added in one call
    stats = stats_of(batch)
    # THEN count, min, max are exact and sum and mean match to rounding
    assert stats.count == len(values)
    assert stats.sum == pytest.approx(math.fsum(values))
    assert stats.min == min(values)
    assert stats.max == max(values)
    assert stats.mean == pytest.approx(math.fsum(values) / len(values))


def test_metric_stats_add_one_by_one_equals_batch() -> None:
    # GIVEN the same values added one at a time and as a batch
    values = [5.0, 1.0, 3.0, 2.0]
    single = MetricStats()
    for value in values:
        single.add(value)
    # WHEN compared / THEN the scalar parts are equal
    assert single == stats_of(values)
    assert single.quantile(0.5) == stats_of(values).quantile(0.5)


@pytest.mark.parametrize(
    ("values", "count", "total"),
    [
        ([1.0, math.nan, 2.0], 2, 3.0),
        ([math.inf, 1.0, -math.inf], 1, 1.0),
        ([math.nan, math.inf], 0, 0.0),
    ],
)
@pytest.mark.parametrize("as_array", [False, True])
def test_metric_stats_ignores_non_finite(
    values: list[float], count: int, total: float, as_array: bool
) -> None:
    # GIVEN batches holding NaN or infinities
    batch = np.array(values) if as_array else values
    # WHEN added (in a batch and one by one)
    stats = stats_of(batch)
    single = MetricStats()
    for value in values:
        single.add(value)
    # THEN only the finite values count
    for result in (stats, single):
        assert result.count == count
        assert result.sum == total
        assert result.from_bytes(result.to_bytes()) == result


def test_metric_stats_quantiles_within_kll_bound() -> None:
    # GIVEN 10k random values from a skewed distribution
    data = np.random.default_rng(42).lognormal(0.0, 1.0, 10_000)
    # WHEN sketched
    stats = stats_of(data)
    # THEN each quantile's value has a rank in the data within the KLL error of the asked rank
    qs = [0.01, 0.25, 0.5, 0.9, 0.95, 0.99]
    results = stats.quantiles(qs)
    assert results is not None
    for q, value in zip(qs, results, strict=True):
        assert abs(rank_of(data, value) - q) <= KLL_RANK_TOLERANCE, q
        assert stats.quantile(q) == value
    # AND the extremes are exact
    assert stats.quantile(0.0) == data.min()
    assert stats.quantile(1.0) == data.max()


def test_metric_stats_summary() -> None:
    # GIVEN 1..1000
    data = np.arange(1, 1001, dtype=np.float64)
    # WHEN summarised
    summary = stats_of(data).summary()
    # THEN the exact parts are exact and the percentiles close
    assert summary["count"] == 1000
    assert summary["sum"] == 500_500
    assert (summary["min"], summary["max"], summary["mean"]) == (1.0, 1000.0, 500.5)
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        value = summary[key]
        assert isinstance(value, float)
        assert abs(rank_of(data, value) - q) <= KLL_RANK_TOLERANCE


def test_metric_stats_merge_equals_single_pass() -> None:
    # GIVEN 10k values split into 7 uneven parts, each sketched separately
    data = np.random.default_rng(7).normal(50.0, 10.0, 10_000)
    parts = np.split(data, [10, 500, 2000, 2001, 6000, 9000])
    merged = MetricStats()
    # WHEN the parts are merged
    for part in parts:
        assert merged.merge(stats_of(part)) is merged
    whole = stats_of(data)
    # THEN the exact parts equal a single pass and the quantiles are within the KLL bound
    assert merged.count == whole.count == 10_000
    assert merged.sum == pytest.approx(whole.sum)
    assert (merged.min, merged.max) == (whole.min, whole.max)
    for q in (0.5, 0.95, 0.99):
        value = merged.quantile(q)
        assert value is not None
        assert abs(rank_of(data, value) - q) <= KLL_RANK_TOLERANCE


def test_metric_stats_merge_with_empty_either_side() -> None:
    # GIVEN a non-empty and an empty accumulator
    full = stats_of([1.0, 2.0])
    # WHEN merged either way / THEN the result equals the non-empty one
    assert MetricStats().merge(full) == full
    assert stats_of([1.0, 2.0]).merge(MetricStats()) == full


def test_metric_stats_empty() -> None:
    # GIVEN an empty accumulator
    empty = MetricStats()
    # WHEN queried and serialized
    restored = MetricStats.from_bytes(empty.to_bytes())
    # THEN everything optional is None and it round-trips
    assert empty.quantile(0.5) is None
    assert empty.quantiles([0.5, 0.95]) is None
    assert (empty.min, empty.max, empty.mean) == (None, None, None)
    assert empty.summary() == {
        "count": 0,
        "sum": 0.0,
        "min": None,
        "max": None,
        "mean": None,
        "p50": None,
        "p95": None,
        "p99": None,
    }
    assert restored == empty
    assert pickle.loads(pickle.dumps(empty)) == empty
    # AND empty batches change nothing
    empty.add_many([])
    empty.add_many(np.array([], dtype=np.float64))
    assert empty.count == 0


@pytest.mark.parametrize("n", [1, 2, 100, 10_000])
@pytest.mark.parametrize("k", [50, 200])
def test_metric_stats_round_trip(n: int, k: int) -> None:
    # GIVEN an accumulator over n values
    stats = stats_of(np.random.default_rng(n).random(n), k)
    qs = [0.0, 0.1, 0.5, 0.95, 0.99, 1.0]
    # WHEN round-tripped through bytes and through pickle (all protocols)
    copies = [MetricStats.from_bytes(stats.to_bytes()), stats.copy()]
    copies += [
        pickle.loads(pickle.dumps(stats, protocol=p)) for p in range(pickle.HIGHEST_PROTOCOL + 1)
    ]
    # THEN scalar parts, k and quantiles are preserved exactly
    for restored in copies:
        assert restored == stats
        assert restored.k == k
        assert restored.quantiles(qs) == stats.quantiles(qs)
        assert restored.summary() == stats.summary()


def test_metric_stats_bytes_are_versioned_and_checked() -> None:
    # GIVEN valid bytes
    data = stats_of([1.0, 2.0]).to_bytes()
    assert data[:2] == bytes([ord("M"), FORMAT_VERSION])
    # WHEN corrupted in various ways / THEN decoding fails with ValueError
    for bad in (
        b"",
        data[:10],
        data[:-3],
        bytes([ord("M"), FORMAT_VERSION + 1]) + data[2:],
        DistinctCounter().to_bytes(),
        data[:2] + b"\x05" + data[3:],  # count no longer matches the sketch
    ):
        with pytest.raises(ValueError):
            MetricStats.from_bytes(bad)


def test_copy_is_independent() -> None:
    # GIVEN an accumulator and its copy
    original = stats_of([1.0])
    clone = original.copy()
    # WHEN the copy changes / THEN the original does not
    clone.add(5.0)
    assert original.count == 1
    assert clone.count == 2


def test_the_accumulators_the_tables_name_are_importable_from_aggregate() -> None:
    # The window tables' `state` column docs (Iceberg schemas, Athena DDL) name
    # sluice.transform.aggregate.MetricStats / .WebTrafficStats: stored docs outlive a refactoring.
    assert aggregate.MetricStats is MetricStats
    assert aggregate.WebTrafficStats is WebTrafficStats


# --------------------------------------------------------------------------------------------
# DistinctCounter
# --------------------------------------------------------------------------------------------


def test_distinct_counter_estimate_within_5_percent() -> None:
    # GIVEN 10k distinct strings, each seen three times
    values = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(10_000)]
    counter = DistinctCounter()
    # WHEN counted
    counter.add_many(values * 3)
    # THEN the estimate is within 5 %
    assert counter.estimate() == pytest.approx(10_000, rel=0.05)


def test_distinct_counter_merge_unions() -> None:
    # GIVEN two overlapping sets: 0..5999 and 4000..9999
    left, right = DistinctCounter(), DistinctCounter()
    left.add_many(str(i) for i in range(6000))
    right.add_many(str(i) for i in range(4000, 10_000))
    # WHEN merged
    assert left.merge(right) is left
    # THEN the union is counted, not the sum
    assert left.estimate() == pytest.approx(10_000, rel=0.05)
    assert right.estimate() == pytest.approx(6000, rel=0.05)


@pytest.mark.parametrize("n", [0, 1, 50, 5000])
def test_distinct_counter_round_trip(n: int) -> None:
    # GIVEN a counter over n distinct values
    counter = DistinctCounter(lg_k=11)
    counter.add_many(f"client-{i}" for i in range(n))
    # WHEN round-tripped / THEN estimate and lg_k survive
    for restored in (
        DistinctCounter.from_bytes(counter.to_bytes()),
        pickle.loads(pickle.dumps(counter)),
    ):
        assert restored == counter
        assert restored.lg_k == 11
        assert restored.estimate() == counter.estimate()
    with pytest.raises(ValueError):
        DistinctCounter.from_bytes(counter.to_bytes()[:2] + b"garbage!")


# --------------------------------------------------------------------------------------------
# status_class, aggregate_iot, aggregate_web, merge_maps
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (100, "1xx"),
        (101, "1xx"),
        (200, "2xx"),
        (204, "2xx"),
        (299, "2xx"),
        (301, "3xx"),
        (404, "4xx"),
        (499, "4xx"),
        (500, "5xx"),
        (599, "5xx"),
        (0, "other"),
        (99, "other"),
        (600, "other"),
        (999, "other"),
        (-1, "other"),
    ],
)
def test_status_class(status: int, expected: str) -> None:
    # GIVEN a status / WHEN classified / THEN its class
    assert status_class(status) == expected


def reading(device: str, seconds: float, **metrics: float) -> IotReading:
    return IotReading(device_id=device, event_time=T0 + timedelta(seconds=seconds), metrics=metrics)


def test_aggregate_iot_keys_and_counts() -> None:
    # GIVEN readings of two devices across two minutes, one boundary reading, one without metrics
    readings = [
        reading("a", 0, temp=20.0, hum=40.0),
        reading("a", 30, temp=22.0),
        reading("a", 59.999, temp=24.0, hum=42.0),
        reading("a", 60, temp=30.0),  # next window
        reading("b", 10, temp=5.0),
        reading("b", 20),
    ]
    # WHEN pre-aggregated per minute
    result = aggregate_iot(readings)
    # THEN one accumulator per (device, metric, window) with exact counts and sums
    minute = T0 + timedelta(minutes=1)
    assert {key: (s.count, s.sum, s.min, s.max) for key, s in result.items()} == {
        ("a", "temp", T0): (3, 66.0, 20.0, 24.0),
        ("a", "hum", T0): (2, 82.0, 40.0, 42.0),
        ("a", "temp", minute): (1, 30.0, 30.0, 30.0),
        ("b", "temp", T0): (1, 5.0, 5.0, 5.0),
    }
    for _device, _metric, start in result:
        assert start.tzinfo is UTC


def test_aggregate_iot_window_size_and_empty_input() -> None:
    # GIVEN readings over 4 minutes / WHEN aggregated in 5-minute windows / THEN one window
    result = aggregate_iot([reading("a", s, v=1.0) for s in (0, 100, 200, 239)], 300)
    assert list(result) == [("a", "v", T0)]
    assert result["a", "v", T0].count == 4
    # AND no input gives no output
    assert aggregate_iot([]) == {}


def test_aggregate_iot_batches_merge_like_one_batch() -> None:
    # GIVEN readings split into two batches (late data arriving in the second)
    readings = [reading(f"d{i % 3}", i * 7.0, x=float(i)) for i in range(40)]
    whole = aggregate_iot(readings)
    # WHEN the batches are aggregated separately and merged
    merged = merge_maps(aggregate_iot(readings[:25]), aggregate_iot(readings[25:]))
    # THEN the maps agree key by key
    assert merged == whole


def weblog(
    seconds: float,
    *,
    path: str | None = "/",
    status: int = 200,
    ip: str | None = "10.0.0.1",
    bytes_sent: int | None = 100,
    request_time: float | None = None,
    geo: GeoInfo | None = None,
) -> WebAccessLog:
    return WebAccessLog(
        client_ip=ip,
        event_time=T0 + timedelta(seconds=seconds),
        path=path,
        status=status,
        bytes_sent=bytes_sent,
        request_time=request_time,
        geo=geo,
    )


FR = GeoInfo(status="found", country_iso="FR")


def test_aggregate_web_keys_and_counts() -> None:
    # GIVEN access logs over paths, statuses, countries and two minutes
    records = [
        weblog(1, ip="1.1.1.1", request_time=0.1, geo=FR),
        weblog(2, ip="1.1.1.2", request_time=0.3, geo=FR, bytes_sent=None),
        weblog(3, ip="1.1.1.1", geo=FR),
        weblog(4, status=404, geo=GeoInfo(status="private")),
        weblog(5, status=503, path=None, ip=None),
        weblog(6, status=201, geo=GeoInfo(status="found")),  # found without a country
        weblog(61, ip="1.1.1.1", request_time=0.2, geo=FR),
    ]
    # WHEN pre-aggregated per minute
    result = aggregate_web(records)
    # THEN one accumulator per (path, status class, country, window)
    minute = T0 + timedelta(minutes=1)
    summary = {
        key: (s.requests, s.bytes, s.request_time.count, round(s.unique_clients.estimate()))
        for key, s in result.items()
    }
    assert summary == {
        ("/", "2xx", "FR", T0): (3, 200, 2, 2),
        ("/", "4xx", "", T0): (1, 100, 0, 1),
        ("", "5xx", "", T0): (1, 100, 0, 0),
        ("/", "2xx", "", T0): (1, 100, 0, 1),
        ("/", "2xx", "FR", minute): (1, 100, 1, 1),
    }
    first = result["/", "2xx", "FR", T0]
    assert first.request_time.sum == pytest.approx(0.4)
    assert (first.request_time.min, first.request_time.max) == (0.1, 0.3)


def test_aggregate_web_matches_record_by_record_and_round_trips() -> None:
    # GIVEN a batch of logs with repeated clients
    records = [
        weblog(i, ip=f"10.0.0.{i % 7}", request_time=i / 100, status=200 + (i % 2) * 100)
        for i in range(30)
    ]
    # WHEN aggregated as a batch and record by record with WebTrafficStats.add
    batch = aggregate_web(records)
    single: dict[tuple[str, str, str, datetime], WebTrafficStats] = {}
    for record in records:
        key = (record.path or "", status_class(record.status), "", window_start(record.event_time))
        single.setdefault(key, WebTrafficStats()).add(record)
    # THEN both agree, and each accumulator survives bytes, pickle and merge
    assert batch == single
    for stats in batch.values():
        assert WebTrafficStats.from_bytes(stats.to_bytes()) == stats
        assert pickle.loads(pickle.dumps(stats)) == stats
        doubled = stats.copy().merge(stats)
        assert (doubled.requests, doubled.bytes) == (2 * stats.requests, 2 * stats.bytes)
        assert doubled.unique_clients.estimate() == stats.unique_clients.estimate()
    summary = batch["/", "2xx", "", T0].summary()
    assert summary["requests"] == 15
    assert summary["unique_clients"] == pytest.approx(7)
    assert summary["request_time_count"] == 15


def test_merge_maps_copies_new_keys_and_merges_existing() -> None:
    # GIVEN two maps sharing one key
    a = {"x": stats_of([1.0]), "y": stats_of([2.0])}
    b = {"y": stats_of([3.0]), "z": stats_of([4.0])}
    # WHEN b is merged into a
    result = merge_maps(a, b)
    # THEN a holds the union, merged where shared, and b's accumulators are not shared or changed
    assert result is a
    assert {key: s.count for key, s in a.items()} == {"x": 1, "y": 2, "z": 1}
    assert a["z"] is not b["z"]
    a["z"].add(10.0)
    assert b["z"].count == 1
    assert b["y"].count == 1
    # AND copy=False shares them
    assert merge_maps({}, b, copy=False)["z"] is b["z"]


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

finite_floats = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(finite_floats, max_size=300), data=st.data())
def test_property_merge_of_split_equals_whole(values: list[float], data: st.DataObject) -> None:
    # GIVEN any list of finite floats split at any point
    cut = data.draw(st.integers(min_value=0, max_value=len(values)))
    # WHEN both sides are aggregated and merged
    merged = stats_of(values[:cut]).merge(stats_of(values[cut:]))
    whole = stats_of(values)
    # THEN count, min and max are equal and the sum equal to rounding
    assert merged.count == whole.count == len(values)
    assert (merged.min, merged.max) == (whole.min, whole.max)
    assert merged.sum == pytest.approx(whole.sum, rel=1e-9, abs=1e-3)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=300),
    k=st.sampled_from([8, 50, 200]),
)
def test_property_bytes_round_trip(values: list[float], k: int) -> None:
    # GIVEN an accumulator over any floats (non-finite ones are ignored)
    stats = stats_of(values, k)
    # WHEN round-tripped through bytes
    restored = MetricStats.from_bytes(stats.to_bytes())
    # THEN it is equal, quantiles included, and re-serializes to the same bytes
    assert restored == stats
    assert restored.quantiles([0.1, 0.5, 0.9]) == stats.quantiles([0.1, 0.5, 0.9])
    assert restored.to_bytes() == stats.to_bytes()


@settings(max_examples=100, deadline=None)
@given(ips=st.lists(st.text(max_size=20), max_size=200), times=st.lists(finite_floats, max_size=50))
def test_property_web_stats_round_trip(ips: list[str], times: list[float]) -> None:
    # GIVEN web traffic stats over any clients and request times
    stats = WebTrafficStats()
    stats.requests = len(ips)
    stats.bytes = 7 * len(ips)
    stats.request_time.add_many(times)
    stats.unique_clients.add_many(ips)
    # WHEN round-tripped through bytes / THEN it is equal (the HLL bytes themselves may differ:
    # a sketch in hash-set mode can serialize its coupons in another order after a round trip)
    restored = WebTrafficStats.from_bytes(stats.to_bytes())
    assert restored == stats
    assert restored.request_time.to_bytes() == stats.request_time.to_bytes()
