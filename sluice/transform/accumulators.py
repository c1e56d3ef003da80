"""Mergeable window accumulators and their versioned binary form (window rows keep them in their state column).

In: plain numbers and strings, or ``WebAccessLog`` records.
Out: accumulators that merge in place (``a.merge(b)`` returns ``a``), serialize to a compact,
versioned binary form (``to_bytes`` / ``from_bytes``: a 2-byte tag and version, a fixed struct
header, then the sketches' own serializations) and pickle through that form:

- ``MetricStats``: exact count, sum, min, max (and mean) plus approximate quantiles (KLL sketch).
- ``DistinctCounter``: approximate distinct count (HLL sketch).
- ``WebTrafficStats``: requests, bytes, request-time ``MetricStats`` and unique clients.

Non-finite values (NaN, +-inf) given to ``MetricStats`` are ignored: they are not counted, summed
or sketched (the KLL sketch itself silently drops NaN).
Dead letters: none; malformed bytes given to ``from_bytes`` are a ``ValueError``.
Why a module of their own: the bytes are what the window tables store (``state`` columns), so the
format and its version live in one place, apart from how a batch is keyed and pre-aggregated
(``sluice.transform.aggregate``, which also keeps ``MetricStats`` and ``WebTrafficStats``
importable under the names the tables' column docs give).
"""

from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from itertools import islice, repeat
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from datasketches import hll_sketch, hll_union, kll_doubles_sketch, tgt_hll_type

from sluice.core.contracts import WebAccessLog

__all__ = [
    "DEFAULT_HLL_LG_K",
    "DEFAULT_KLL_K",
    "FORMAT_VERSION",
    "DistinctCounter",
    "MetricStats",
    "WebGroup",
    "WebTrafficStats",
]

DEFAULT_KLL_K = 200
"""KLL accuracy parameter: about 1.3 % normalized rank error (99 % confidence) at k=200."""
DEFAULT_HLL_LG_K = 12
"""HLL accuracy parameter: 2**12 buckets, about 1.6 % relative standard error."""
DEFAULT_HLL_TYPE = tgt_hll_type.HLL_4
"""HLL_4 serializes to half the size of HLL_8 (about 2 KB vs 4 KB at lg_k=12 once dense)."""

FORMAT_VERSION = 1
"""Version of the binary format of every accumulator; bumped on any incompatible change."""

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Shared binary framing: tag, version, fixed header, blobs (all but the last length-prefixed)
# --------------------------------------------------------------------------------------------

_PREFIX = struct.Struct("<BB")
_BLOB_LEN = struct.Struct("<I")


def _encode(
    tag: int, header: struct.Struct, values: tuple[Any, ...], blobs: Sequence[bytes]
) -> bytes:
    parts = [_PREFIX.pack(tag, FORMAT_VERSION), header.pack(*values)]
    for blob in blobs[:-1]:
        parts.append(_BLOB_LEN.pack(len(blob)))
        parts.append(blob)
    if blobs:
        parts.append(blobs[-1])
    return b"".join(parts)


def _decode(
    tag: int, header: struct.Struct, n_blobs: int, data: bytes
) -> tuple[tuple[Any, ...], list[bytes]]:
    view = memoryview(data)
    if len(view) < _PREFIX.size + header.size:
        raise ValueError(f"truncated accumulator: {len(view)} bytes")
    got_tag, version = _PREFIX.unpack_from(view, 0)
    if got_tag != tag:
        raise ValueError(f"not a {chr(tag)!r} accumulator (tag {got_tag:#x})")
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported accumulator format version {version}")
    offset = _PREFIX.size
    values = header.unpack_from(view, offset)
    offset += header.size
    blobs: list[bytes] = []
    for _ in range(n_blobs - 1):
        if len(view) < offset + _BLOB_LEN.size:
            raise ValueError("truncated accumulator blob length")
        (size,) = _BLOB_LEN.unpack_from(view, offset)
        offset += _BLOB_LEN.size
        if len(view) < offset + size:
            raise ValueError("truncated accumulator blob")
        blobs.append(bytes(view[offset : offset + size]))
        offset += size
    if n_blobs:
        blobs.append(bytes(view[offset:]))
    elif offset != len(view):
        raise ValueError("trailing bytes after accumulator")
    return values, blobs


def _restore(cls: type[_Accumulator], data: bytes) -> _Accumulator:
    """Unpickling entry point (module level, so any pickler finds it)."""
    return cls.from_bytes(data)


class _Accumulator(ABC):
    """Serialization-backed pickling and copying, shared by every accumulator."""

    __slots__ = ()

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The compact, versioned binary form."""

    @classmethod
    @abstractmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of ``to_bytes``; raises ``ValueError`` on malformed input."""

    @abstractmethod
    def merge(self, other: Self) -> Self:
        """Fold ``other`` into this accumulator (in place) and return it."""

    def copy(self) -> Self:
        """An independent deep copy."""
        return self.from_bytes(self.to_bytes())

    def __reduce__(self) -> tuple[Any, tuple[type[_Accumulator], bytes]]:
        return (_restore, (type(self), self.to_bytes()))


def _sketch_error(kind: str, exc: Exception) -> ValueError:
    return ValueError(f"corrupt {kind} sketch: {exc}")


# --------------------------------------------------------------------------------------------
# Batch summaries: the exact parts of a batch, computed once before its single sketch update
# --------------------------------------------------------------------------------------------

_Batch = tuple[FloatArray, float, float, float]
"""The finite values of a batch as a contiguous float64 array, their sum, min and max."""


def _summarise_array(values: npt.NDArray[Any]) -> _Batch | None:
    arr = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        return None
    finite = np.isfinite(arr)
    if not finite.all():
        arr = arr[finite]
        if arr.size == 0:
            return None
    return arr, float(arr.sum()), float(arr.min()), float(arr.max())


def _summarise_list(values: Sequence[float]) -> _Batch | None:
    if not values:
        return None
    try:
        total = math.fsum(values)
    except (OverflowError, ValueError):  # intermediate overflow, or inf + -inf
        total = math.nan
    if not math.isfinite(total):  # a finite sum proves every value finite
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return None
        total = sum(values, 0.0)  # all finite: may still overflow to inf, as it should
    return np.array(values, dtype=np.float64), float(total), float(min(values)), float(max(values))


# --------------------------------------------------------------------------------------------
# MetricStats
# --------------------------------------------------------------------------------------------


_EMPTY_KLL: dict[int, bytes] = {}
"""k -> the serialized empty KLL sketch of that k (also proves k valid, once per k)."""


def _empty_kll(k: int) -> bytes:
    blob = _EMPTY_KLL.get(k)
    if blob is None:
        blob = _EMPTY_KLL[k] = kll_doubles_sketch(k).serialize()  # raises for an invalid k
    return blob


class MetricStats(_Accumulator):
    """Exact count/sum/min/max and KLL quantiles of a stream of floats. Mergeable, serializable.

    The sketch is made when the first value arrives (a window of web traffic often logs no request
    time); an empty one serializes as an empty sketch of its ``k``, so the bytes are the same."""

    __slots__ = ("_k", "_max", "_min", "_sketch", "count", "sum")

    _TAG = ord("M")
    _HEADER = struct.Struct("<Qddd")  # count, sum, min, max

    def __init__(self, k: int = DEFAULT_KLL_K) -> None:
        _empty_kll(k)
        self._k = k
        self._sketch: kll_doubles_sketch | None = None
        self.count: int = 0
        self.sum: float = 0.0
        self._min: float = math.inf
        self._max: float = -math.inf

    @property
    def k(self) -> int:
        """The KLL accuracy parameter."""
        return self._k

    def _made(self) -> kll_doubles_sketch:
        """The sketch, made now if no value came before."""
        sketch = self._sketch
        if sketch is None:
            sketch = self._sketch = kll_doubles_sketch(self._k)
        return sketch

    @property
    def min(self) -> float | None:
        return self._min if self.count else None

    @property
    def max(self) -> float | None:
        return self._max if self.count else None

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def add(self, value: float) -> None:
        """Add one value (prefer ``add_many`` for more than a few)."""
        value = float(value)
        if not math.isfinite(value):
            return
        self._made().update(value)
        self.count += 1
        self.sum += value
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value

    def add_many(self, values: FloatArray | Sequence[float]) -> None:
        """Add a batch of values with one sketch update.

        A list (or other sequence) of floats is summarised with builtins (``math.fsum``, ``min``,
        ``max``), faster than numpy for the short per-key lists of a pre-aggregation; an array is
        summarised with numpy.
        """
        if isinstance(values, np.ndarray):
            batch = _summarise_array(values)
        else:
            batch = _summarise_list(values)
        if batch is None:
            return
        arr, total, lo, hi = batch
        self._made().update(arr)
        self.count += int(arr.size)
        self.sum += total
        if lo < self._min:
            self._min = lo
        if hi > self._max:
            self._max = hi

    @classmethod
    def from_groups(
        cls, values: FloatArray, starts: npt.NDArray[np.int64], k: int = DEFAULT_KLL_K
    ) -> list[MetricStats]:
        """One ``MetricStats`` per group of ``values`` (finite floats, each group contiguous and
        starting at ``starts``, in ascending order), as ``add_many`` of each group's values as a
        list would make it (exact ``math.fsum`` sums): min, max and counts over the whole array at
        once, one sketch update per group."""
        if not len(starts):
            return []
        values = np.ascontiguousarray(values, dtype=np.float64)
        edges = np.append(starts, len(values))
        counts = np.diff(edges).tolist()
        bounds = edges.tolist()
        lows = np.minimum.reduceat(values, starts).tolist()
        highs = np.maximum.reduceat(values, starts).tolist()
        # Each group's exact sum from one shared iterator over the values (no list per group).
        sums = map(math.fsum, map(islice, repeat(iter(values.tolist())), counts))
        new, sketch = cls.__new__, kll_doubles_sketch
        out: list[MetricStats] = []
        append = out.append
        for start, end, total, lo, hi in zip(
            bounds[:-1], bounds[1:], sums, lows, highs, strict=True
        ):
            stats = new(cls)
            stats._k = k
            stats._sketch = group_sketch = sketch(k)
            group_sketch.update(values[start:end])
            stats.count = end - start
            stats.sum = 0.0 + total  # -0.0 becomes 0.0, as add_many's running sum makes it
            stats._min = lo
            stats._max = hi
            append(stats)
        return out

    def merge(self, other: MetricStats) -> Self:
        if other._sketch is not None:
            self._made().merge(other._sketch)
        self.count += other.count
        self.sum += other.sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        return self

    def quantile(self, q: float) -> float | None:
        """Approximate value at normalized rank ``q`` in [0, 1]; ``None`` when empty.

        Ranks 0 and 1 give the exact min and max (the sketch alone may not once it compacts).
        """
        values = self.quantiles((q,))
        return None if values is None else values[0]

    def quantiles(self, qs: Sequence[float]) -> list[float] | None:
        """``quantile`` for several ranks at once (one sketch call); ``None`` when empty."""
        if not self.count:
            return None
        values = [float(v) for v in self._made().get_quantiles(list(qs))]
        for i, q in enumerate(qs):
            if q == 0.0:
                values[i] = self._min
            elif q == 1.0:
                values[i] = self._max
        return values

    def summary(self) -> dict[str, float | int | None]:
        """count, sum, min, max, mean, p50, p95, p99 (the last five ``None`` when empty)."""
        p50, p95, p99 = self.quantiles((0.5, 0.95, 0.99)) or (None, None, None)
        return {
            "count": self.count,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "p50": p50,
            "p95": p95,
            "p99": p99,
        }

    def to_bytes(self) -> bytes:
        values = (self.count, self.sum, self._min, self._max)
        sketch = self._sketch
        blob = _empty_kll(self._k) if sketch is None else sketch.serialize()
        return _encode(self._TAG, self._HEADER, values, [blob])

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        (count, total, lo, hi), (blob,) = _decode(cls._TAG, cls._HEADER, 1, data)
        try:
            sketch = kll_doubles_sketch.deserialize(blob)
        except (IndexError, ValueError, RuntimeError) as exc:
            raise _sketch_error("KLL", exc) from exc
        if sketch.n != count:
            raise ValueError(f"corrupt MetricStats: count {count} but sketch has {sketch.n}")
        stats = cls.__new__(cls)
        stats._k = int(sketch.k)
        stats._sketch = sketch
        stats.count = count
        stats.sum = total
        stats._min = lo
        stats._max = hi
        return stats

    def __eq__(self, other: object) -> bool:
        """Equal scalar parts (count, sum, min, max) and k; the sketches are not compared."""
        if not isinstance(other, MetricStats):
            return NotImplemented
        return (self.count, self.sum, self._min, self._max, self.k) == (
            other.count,
            other.sum,
            other._min,
            other._max,
            other.k,
        )

    def __repr__(self) -> str:
        return (
            f"MetricStats(count={self.count}, sum={self.sum!r}, min={self.min!r}, "
            f"max={self.max!r}, k={self.k})"
        )


# --------------------------------------------------------------------------------------------
# DistinctCounter
# --------------------------------------------------------------------------------------------


class DistinctCounter(_Accumulator):
    """Approximate count of distinct strings (HyperLogLog). Mergeable, serializable."""

    __slots__ = ("_sketch",)

    _TAG = ord("D")
    _HEADER = struct.Struct("<")

    def __init__(
        self, lg_k: int = DEFAULT_HLL_LG_K, hll_type: tgt_hll_type = DEFAULT_HLL_TYPE
    ) -> None:
        self._sketch = hll_sketch(lg_k, hll_type)

    @property
    def lg_k(self) -> int:
        return int(self._sketch.lg_config_k)

    def add(self, value: str) -> None:
        self._sketch.update(value)

    def add_many(self, values: Iterable[str]) -> None:
        """Add strings (the HLL binding has no batch update: one cheap C++ call per value)."""
        update = self._sketch.update
        for value in values:
            update(value)

    def estimate(self) -> float:
        return float(self._sketch.get_estimate())

    def merge(self, other: DistinctCounter) -> Self:
        if other._sketch.is_empty():
            return self
        union = hll_union(self.lg_k)
        union.update(self._sketch)
        union.update(other._sketch)
        self._sketch = union.get_result(self._sketch.tgt_type)
        return self

    def to_bytes(self) -> bytes:
        return _encode(self._TAG, self._HEADER, (), [self._sketch.serialize_compact()])

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        _, (blob,) = _decode(cls._TAG, cls._HEADER, 1, data)
        try:
            sketch = hll_sketch.deserialize(blob)
        except (IndexError, ValueError, RuntimeError) as exc:
            raise _sketch_error("HLL", exc) from exc
        counter = cls.__new__(cls)
        counter._sketch = sketch
        return counter

    def __eq__(self, other: object) -> bool:
        """Same lg_k and the same estimate."""
        if not isinstance(other, DistinctCounter):
            return NotImplemented
        return (self.lg_k, self.estimate()) == (other.lg_k, other.estimate())

    def __repr__(self) -> str:
        return f"DistinctCounter(estimate={self.estimate():.1f}, lg_k={self.lg_k})"


# --------------------------------------------------------------------------------------------
# WebTrafficStats
# --------------------------------------------------------------------------------------------


class WebTrafficStats(_Accumulator):
    """Per-window web traffic: requests, bytes, request times and unique clients."""

    __slots__ = ("bytes", "request_time", "requests", "unique_clients")

    _TAG = ord("W")
    _HEADER = struct.Struct("<QQ")  # requests, bytes

    def __init__(self, k: int = DEFAULT_KLL_K, lg_k: int = DEFAULT_HLL_LG_K) -> None:
        self.requests: int = 0
        self.bytes: int = 0
        self.request_time = MetricStats(k)
        """Seconds, over the requests that logged a request time."""
        self.unique_clients = DistinctCounter(lg_k)
        """Distinct ``client_ip`` values."""

    def add(self, record: WebAccessLog) -> None:
        """Add one record (for batches, ``aggregate_web`` is the fast path)."""
        group = WebGroup()
        group.add(record)
        group.add_to(self)

    def merge(self, other: WebTrafficStats) -> Self:
        self.requests += other.requests
        self.bytes += other.bytes
        self.request_time.merge(other.request_time)
        self.unique_clients.merge(other.unique_clients)
        return self

    def summary(self) -> dict[str, float | int | None]:
        """requests, bytes, unique_clients and the request time summary prefixed ``request_time_``."""
        out: dict[str, float | int | None] = {
            "requests": self.requests,
            "bytes": self.bytes,
            "unique_clients": self.unique_clients.estimate(),
        }
        for name, value in self.request_time.summary().items():
            out[f"request_time_{name}"] = value
        return out

    def to_bytes(self) -> bytes:
        blobs = [self.request_time.to_bytes(), self.unique_clients.to_bytes()]
        return _encode(self._TAG, self._HEADER, (self.requests, self.bytes), blobs)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        (requests, sent), (times, clients) = _decode(cls._TAG, cls._HEADER, 2, data)
        stats = cls.__new__(cls)
        stats.requests = requests
        stats.bytes = sent
        stats.request_time = MetricStats.from_bytes(times)
        stats.unique_clients = DistinctCounter.from_bytes(clients)
        return stats

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WebTrafficStats):
            return NotImplemented
        return (
            self.requests == other.requests
            and self.bytes == other.bytes
            and self.request_time == other.request_time
            and self.unique_clients == other.unique_clients
        )

    def __repr__(self) -> str:
        return (
            f"WebTrafficStats(requests={self.requests}, bytes={self.bytes}, "
            f"request_time={self.request_time!r}, unique_clients={self.unique_clients!r})"
        )


class WebGroup:
    """What records add to a ``WebTrafficStats``, gathered so the sketches get one batch update.

    The one place that says what an access-log record contributes (``WebTrafficStats.add`` and
    ``aggregate_web`` both go through it).
    """

    __slots__ = ("bytes", "clients", "requests", "times")

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.times: list[float] = []
        self.clients: set[str] = set()

    def add(self, record: WebAccessLog) -> None:
        self.requests += 1
        if record.bytes_sent is not None:
            self.bytes += record.bytes_sent
        if record.request_time is not None:
            self.times.append(record.request_time)
        if record.client_ip is not None:
            self.clients.add(record.client_ip)

    def add_to(self, stats: WebTrafficStats) -> WebTrafficStats:
        stats.requests += self.requests
        stats.bytes += self.bytes
        if self.times:
            stats.request_time.add_many(self.times)
        stats.unique_clients.add_many(self.clients)
        return stats
