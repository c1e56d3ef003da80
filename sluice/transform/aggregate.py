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

from collections.abc import Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any, Protocol, Self, TypeVar

import numpy as np
import numpy.typing as npt

from sluice.core.contracts import GeoInfo, IotReading, WebAccessLog
from sluice.transform.accumulators import (
    DEFAULT_HLL_LG_K,
    DEFAULT_KLL_K,
    MetricStats,
    WebTrafficStats,
)

__all__ = [
    "IotColumnsLike",
    "IotKey",
    "MetricStats",  # named here by the window tables' column docs
    "WebColumnsLike",
    "WebKey",
    "WebTrafficStats",  # likewise
    "aggregate_iot",
    "aggregate_iot_columns",
    "aggregate_web",
    "aggregate_web_columns",
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
    order, starts = _sorted_groups(key)
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


def _sorted_groups(
    codes: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The stable order that makes each code's rows contiguous (input order within a code), and
    where each code's run starts in that order (codes ascending)."""
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    return order, np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])


def _factorize(
    values: Sequence[str | None], *, none_is_missing: bool = False
) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Integer codes of ``values`` (in order of first appearance) and the distinct values; with
    ``none_is_missing``, None is coded -1 and left out of the distinct values."""
    distinct = [v for v in dict.fromkeys(values) if v is not None or not none_is_missing]
    codes: dict[str | None, int] = {value: i for i, value in enumerate(distinct)}
    if none_is_missing:
        codes[None] = -1
    return np.fromiter(map(codes.__getitem__, values), np.int64, len(values)), distinct  # type: ignore[return-value]


class WebColumnsLike(Protocol):
    """What ``aggregate_web_columns`` reads of ``sluice.parsing.weblog.columns.WebLogColumns``."""

    @property
    def client_ip(self) -> Sequence[str | None]: ...

    @property
    def event_time(self) -> Sequence[datetime]: ...

    @property
    def path(self) -> Sequence[str | None]: ...

    @property
    def status(self) -> Sequence[int]: ...

    @property
    def bytes_sent(self) -> Sequence[int | None]: ...

    @property
    def request_time(self) -> Sequence[float | None]: ...


def aggregate_web(
    records: Iterable[WebAccessLog],
    size_seconds: int = DEFAULT_WINDOW_SECONDS,
    *,
    k: int = DEFAULT_KLL_K,
    lg_k: int = DEFAULT_HLL_LG_K,
) -> dict[WebKey, WebTrafficStats]:
    """Pre-aggregate access logs into ``{(path, status_class, country, window_start): stats}``.

    ``path`` is '' when unknown; ``country`` is the GeoIP ISO code when the lookup found one,
    else ''. Unique clients count distinct ``client_ip`` values. Keys come in order of first
    appearance; each group's stats are what ``WebGroup`` gathers of its records, one by one.
    """
    _check_size(size_seconds)
    batch = records if isinstance(records, list) else list(records)
    return _aggregate_web(
        [r.client_ip for r in batch], [r.event_time for r in batch], [r.path for r in batch],
        [r.status for r in batch], [r.bytes_sent for r in batch],
        [r.request_time for r in batch], [r.geo for r in batch], size_seconds, k, lg_k,
    )  # fmt: skip


def aggregate_web_columns(
    columns: WebColumnsLike,
    geos: Sequence[GeoInfo | None],
    size_seconds: int = DEFAULT_WINDOW_SECONDS,
    *,
    k: int = DEFAULT_KLL_K,
    lg_k: int = DEFAULT_HLL_LG_K,
) -> dict[WebKey, WebTrafficStats]:
    """``aggregate_web`` over the columns of ``sluice.parsing.weblog.columns`` and each row's
    ``GeoInfo`` (``GeoIpEnricher.lookup_clients``; None: not enriched): the same map as
    ``aggregate_web`` of the records with those ``geo`` values."""
    _check_size(size_seconds)
    return _aggregate_web(
        columns.client_ip, columns.event_time, columns.path, columns.status, columns.bytes_sent,
        columns.request_time, geos, size_seconds, k, lg_k,
    )  # fmt: skip


_SUM_LIMIT = 1 << 62
"""int64 sums below this cannot wrap (``np.add.reduceat`` would silently)."""


def _country(geo: GeoInfo | None) -> str:
    return (geo.country_iso or "") if geo is not None and geo.status == "found" else ""


def _aggregate_web(
    clients: Sequence[str | None],
    times: Sequence[datetime],
    paths: Sequence[str | None],
    statuses: Sequence[int],
    sent: Sequence[int | None],
    request_times: Sequence[float | None],
    geos: Sequence[GeoInfo | None],
    size_seconds: int,
    k: int,
    lg_k: int,
) -> dict[WebKey, WebTrafficStats]:
    """The group-by, by columns: per distinct value (time, status, GeoInfo) its part of the key
    once, one key tuple per row, integer group codes, then each group's exact parts from arrays and
    one sketch update per group (``MetricStats.from_groups``), its distinct clients each once."""
    n = len(statuses)
    if not n:
        return {}
    if (
        not len(times)
        == len(paths)
        == len(clients)
        == len(sent)
        == len(request_times)
        == len(geos)
        == n
    ):
        raise ValueError("the columns of a web batch must have one value per row")
    window_of = {t: t.timestamp() // size_seconds for t in dict.fromkeys(times)}
    class_of = {code: status_class(code) for code in set(statuses)}
    country_of = {id(geo): _country(geo) for geo in {id(g): g for g in geos}.values()}
    keys = list(zip(
        [p or "" for p in paths], map(class_of.__getitem__, statuses),
        map(country_of.__getitem__, map(id, geos)), map(window_of.__getitem__, times),
        strict=True,
    ))  # fmt: skip
    groups = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    code = np.fromiter(map(groups.__getitem__, keys), np.int64, n)
    count = len(groups)
    requests = np.bincount(code, minlength=count).tolist()
    order, starts = _sorted_groups(code)
    totals = _byte_sums(sent, code, order, starts, count)
    out_stats = [WebTrafficStats(k, lg_k) for _ in range(count)]
    for stats, requested, total in zip(out_stats, requests, totals, strict=True):
        stats.requests = requested
        stats.bytes = total
    _add_request_times(out_stats, request_times, code, k)
    _add_clients(out_stats, clients, code)
    starts_at = _DatetimeCache()
    return {
        (path, klass, country, starts_at[int(index) * size_seconds]): stats
        for (path, klass, country, index), stats in zip(groups, out_stats, strict=True)
    }


def _byte_sums(
    sent: Sequence[int | None],
    code: npt.NDArray[np.int64],
    order: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
    count: int,
) -> list[int]:
    """Each group's exact sum of the bytes sent (None counts 0), in int64 when it cannot wrap."""
    filled = [0 if b is None else b for b in sent]
    largest = max(filled)
    if largest * len(filled) < _SUM_LIMIT:
        values = np.fromiter(filled, np.int64, len(filled))
        sums: list[int] = np.add.reduceat(values[order], starts).tolist()
        return sums  # groups 0..count-1, in order
    totals = [0] * count
    for group, value in zip(code.tolist(), filled, strict=True):
        totals[group] += value
    return totals


def _add_request_times(
    out: list[WebTrafficStats],
    request_times: Sequence[float | None],
    code: npt.NDArray[np.int64],
    k: int,
) -> None:
    """Each group's request times, as ``add_many`` of its list of them; groups holding a
    non-finite time take that path itself (it sums the finite ones differently)."""
    rows = [i for i, t in enumerate(request_times) if t is not None]
    if not rows:
        return
    values = np.fromiter(map(request_times.__getitem__, rows), np.float64, len(rows))
    groups = code[rows]
    finite = np.isfinite(values)
    if not finite.all():
        odd = set(groups[~finite].tolist())
        for group in odd:
            out[group].request_time.add_many(values[groups == group].tolist())
        keep = ~np.isin(groups, list(odd))
        values, groups = values[keep], groups[keep]
        if not len(values):
            return
    order, starts = _sorted_groups(groups)
    stats = MetricStats.from_groups(values[order], starts, k)
    for group, group_stats in zip(groups[order[starts]].tolist(), stats, strict=True):
        out[group].request_time = group_stats


def _add_clients(
    out: list[WebTrafficStats], clients: Sequence[str | None], code: npt.NDArray[np.int64]
) -> None:
    """Each group's distinct client addresses into its HLL sketch, each once."""
    codes, distinct = _factorize(clients, none_is_missing=True)
    if not distinct:
        return
    present = codes >= 0
    pairs = np.unique(code[present] * len(distinct) + codes[present])  # sorted by group
    owners = pairs // len(distinct)
    names = list(map(distinct.__getitem__, (pairs % len(distinct)).tolist()))
    edges = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1], True]).tolist()
    for start, end, owner in zip(edges[:-1], edges[1:], owners[edges[:-1]].tolist(), strict=True):
        out[owner].unique_clients.add_many(names[start:end])


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
