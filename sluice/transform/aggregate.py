"""Window keys and batch pre-aggregation, engine-neutral (the job's window stage and the writer call them).

In: normalized records (``IotReading``, ``WebAccessLog``) and a window size in seconds (tumbling
event-time windows aligned to the Unix epoch, UTC).
Out: window starts (``window_start``, vectorised ``window_starts_epoch``) and maps of mergeable
accumulators (``sluice.transform.accumulators``) keyed by window:

- ``aggregate_iot``: ``{(device_id, metric_name, window_start): MetricStats}``;
- ``aggregate_web``: ``{(path, status_class, country, window_start): WebTrafficStats}``;
- ``merge_maps`` folds such maps together (late data is merged the same way).

Dead letters: none; records reach here validated.
Why: a batch is pre-aggregated per key before any shuffle, so each sketch gets one update call per
batch. ``MetricStats`` and ``WebTrafficStats`` stay importable from here: the window tables'
``state`` column docs (in the Iceberg schemas and the Athena DDL) name them in this module.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any, Protocol, Self, TypeVar

import numpy as np
import numpy.typing as npt

from sluice.core.contracts import IotReading, WebAccessLog
from sluice.transform.accumulators import (
    DEFAULT_HLL_LG_K,
    DEFAULT_KLL_K,
    MetricStats,
    WebGroup,
    WebTrafficStats,
)

__all__ = [
    "IotColumnsLike",
    "IotKey",
    "MetricStats",  # named here by the window tables' column docs
    "WebKey",
    "WebTrafficStats",  # likewise
    "aggregate_iot",
    "aggregate_iot_columns",
    "aggregate_web",
    "merge_maps",
    "status_class",
    "window_start",
    "window_starts_epoch",
]

DEFAULT_WINDOW_SECONDS = 60

IotKey = tuple[str, str, datetime]
"""(device_id, metric_name, window_start)."""
WebKey = tuple[str, str, str, datetime]
"""(path or '', status_class, country_iso or '', window_start)."""


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


def _check_size(size_seconds: int) -> None:
    if size_seconds <= 0:
        raise ValueError(f"window size must be a positive number of seconds, got {size_seconds}")


def window_start(event_time: datetime, size_seconds: int = DEFAULT_WINDOW_SECONDS) -> datetime:
    """The start (UTC, aware) of the epoch-aligned window of ``size_seconds`` holding ``event_time``.

    A naive ``event_time`` is taken as UTC. An instant exactly on a boundary opens its window.
    """
    _check_size(size_seconds)
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=UTC)
    start = int(event_time.timestamp() // size_seconds) * size_seconds
    return datetime.fromtimestamp(start, UTC)


def window_starts_epoch(
    epoch_seconds: npt.NDArray[Any], size_seconds: int = DEFAULT_WINDOW_SECONDS
) -> npt.NDArray[np.int64]:
    """Vectorised ``window_start``: epoch seconds (int or float array) to window starts (int64)."""
    _check_size(size_seconds)
    arr = np.asarray(epoch_seconds)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"epoch_seconds must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("epoch_seconds must be finite")
    starts: npt.NDArray[np.int64] = np.floor_divide(arr, size_seconds).astype(np.int64)
    starts *= size_seconds
    return starts


# --------------------------------------------------------------------------------------------
# Batch pre-aggregation
# --------------------------------------------------------------------------------------------

_STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str:
    """'1xx' .. '5xx' for statuses 100-599, 'other' for anything else."""
    hundreds = status // 100
    return _STATUS_CLASSES[hundreds] if 1 <= hundreds <= 5 else "other"


class IotColumnsLike(Protocol):
    """What ``aggregate_iot_columns`` reads of ``sluice.parsing.iot_columns.IotColumns`` (a
    protocol: parsing and transforms are sibling layers and do not import each other)."""

    @property
    def device_id(self) -> Sequence[str]: ...

    @property
    def event_time_us(self) -> npt.NDArray[np.int64]: ...

    @property
    def metrics(self) -> Sequence[dict[str, float]]: ...


class _DatetimeCache(dict[int, datetime]):
    """Epoch second -> aware UTC datetime, built once per distinct window start."""

    def __missing__(self, start: int) -> datetime:
        value = self[start] = datetime.fromtimestamp(start, UTC)
        return value


def aggregate_iot(
    readings: Iterable[IotReading],
    size_seconds: int = DEFAULT_WINDOW_SECONDS,
    *,
    k: int = DEFAULT_KLL_K,
) -> dict[IotKey, MetricStats]:
    """Pre-aggregate readings into ``{(device_id, metric_name, window_start): MetricStats}``."""
    _check_size(size_seconds)
    devices: list[str] = []
    seconds: list[float] = []
    metrics: list[dict[str, float]] = []
    for reading in readings:
        devices.append(reading.device_id)
        seconds.append(reading.event_time.timestamp())
        metrics.append(reading.metrics)
    return _aggregate_metrics(devices, np.array(seconds, np.float64), metrics, size_seconds, k)


def aggregate_iot_columns(
    columns: IotColumnsLike, size_seconds: int = DEFAULT_WINDOW_SECONDS, *, k: int = DEFAULT_KLL_K
) -> dict[IotKey, MetricStats]:
    """``aggregate_iot`` over the columns of ``sluice.parsing.iot_columns`` (the same map)."""
    _check_size(size_seconds)
    seconds = columns.event_time_us.astype(np.float64) / 1e6  # ``datetime.timestamp()``
    return _aggregate_metrics(columns.device_id, seconds, columns.metrics, size_seconds, k)


def _aggregate_metrics(
    devices: Sequence[str],
    seconds: npt.NDArray[np.float64],
    metrics: Sequence[dict[str, float]],
    size_seconds: int,
    k: int,
) -> dict[IotKey, MetricStats]:
    """The group-by in numpy: each value gets an integer key (device, metric, window), a stable
    sort makes each group contiguous (values in input order, so the sketches see what the
    one-by-one path fed them), then ``MetricStats.from_groups`` builds the stats of every group."""
    counts = np.fromiter(map(len, metrics), np.int64, len(metrics))
    names = list(chain.from_iterable(metrics))
    if not names:
        return {}
    values = np.fromiter(chain.from_iterable(map(dict.values, metrics)), np.float64, len(names))
    rows = np.repeat(np.arange(len(metrics), dtype=np.int64), counts)
    device_codes, device_list = _factorize(devices)
    name_codes, name_list = _factorize(names)
    windows = np.floor_divide(seconds, size_seconds)  # float floor, as ``ts // size`` was
    window_list, window_codes = np.unique(windows[rows], return_inverse=True)
    key = (device_codes[rows] * len(name_list) + name_codes) * len(window_list) + window_codes
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    stats = MetricStats.from_groups(values[order], starts, k)
    first = order[starts]  # a value of each group, for its key
    # Keys in order of first appearance, as the one-by-one path inserted them.
    by_appearance = np.argsort(first, kind="stable")
    firsts = first[by_appearance]
    group_devices = map(device_list.__getitem__, device_codes[rows[firsts]].tolist())
    group_names = map(names.__getitem__, firsts.tolist())
    window_times = [
        datetime.fromtimestamp(int(w) * size_seconds, UTC) for w in window_list.tolist()
    ]
    group_windows = map(window_times.__getitem__, window_codes[firsts].tolist())
    group_stats = map(stats.__getitem__, by_appearance.tolist())
    keys = zip(group_devices, group_names, group_windows, strict=True)
    return dict(zip(keys, group_stats, strict=True))


def _factorize(values: Sequence[str]) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Integer codes of ``values`` (in order of first appearance) and the distinct values."""
    distinct = list(dict.fromkeys(values))
    codes = {value: i for i, value in enumerate(distinct)}
    return np.fromiter(map(codes.__getitem__, values), np.int64, len(values)), distinct


def aggregate_web(
    records: Iterable[WebAccessLog],
    size_seconds: int = DEFAULT_WINDOW_SECONDS,
    *,
    k: int = DEFAULT_KLL_K,
    lg_k: int = DEFAULT_HLL_LG_K,
) -> dict[WebKey, WebTrafficStats]:
    """Pre-aggregate access logs into ``{(path, status_class, country, window_start): stats}``.

    ``path`` is '' when unknown; ``country`` is the GeoIP ISO code when the lookup found one,
    else ''. Unique clients count distinct ``client_ip`` values.
    """
    _check_size(size_seconds)
    groups: defaultdict[tuple[str, str, str, float], WebGroup] = defaultdict(WebGroup)
    for record in records:
        index = record.event_time.timestamp() // size_seconds
        geo = record.geo
        country = (geo.country_iso or "") if geo is not None and geo.status == "found" else ""
        groups[record.path or "", status_class(record.status), country, index].add(record)

    starts = _DatetimeCache()
    out: dict[WebKey, WebTrafficStats] = {}
    for (path, klass, country, index), group in groups.items():
        stats = group.add_to(WebTrafficStats(k, lg_k))
        out[path, klass, country, starts[int(index) * size_seconds]] = stats
    return out


class Mergeable(Protocol):
    def merge(self, other: Self) -> Self: ...

    def copy(self) -> Self: ...


K = TypeVar("K", bound=Hashable)
M = TypeVar("M", bound=Mergeable)


def merge_maps(into: dict[K, M], other: Mapping[K, M], *, copy: bool = True) -> dict[K, M]:
    """Merge ``other``'s accumulators into ``into`` key by key, in place; returns ``into``.

    ``other`` is never modified. Its accumulators for keys new to ``into`` are copied, unless
    ``copy=False``: then they are shared, which is faster but only safe when ``other`` is
    discarded afterwards.
    """
    for key, value in other.items():
        mine = into.get(key)
        if mine is None:
            into[key] = value.copy() if copy else value
        else:
            mine.merge(value)
    return into
