"""The numpy group-by of ``aggregate_iot`` / ``aggregate_iot_columns`` gives exactly what the
one-value-at-a-time pre-aggregation gave (kept here as the reference): the same keys in the same
order, the same exact parts (count, exact sum, min, max) and the same quantiles."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.contracts import IotReading
from sluice.parsing.iot_columns import parse_iot_columns
from sluice.transform.accumulators import MetricStats
from sluice.transform.aggregate import aggregate_iot, aggregate_iot_columns, window_start

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
