"""The counters every stage of the Beam job reports, under one naming scheme, and a way to read them back.

In: counts from a stage while it runs: items received and emitted, dead letters by reason, items
filtered by rule, plus stage-specific counts (the source's ``read.batches``) and observed values
(``read.watermark_ms``).
Out: Beam metrics in namespace ``sluice`` named ``<stage>.<what>``: ``parse.received``,
``parse.emitted``, ``parse.dead_lettered.<reason>``, ``filter.dropped.<rule>``, ``read.records``.
``query_counters`` / ``query_distributions`` read them back from a ``PipelineResult`` as plain
dicts, summed over the steps that report the same name, for tests, benchmarks and the CLI summary.

Counters are Beam's own (``Metrics.counter``), so on Flink or Dataflow they appear in the runner's
metrics too; nothing here needs a running pipeline (outside one, updates are dropped by Beam).
"""

# Beam's Python API is only partly typed; calls into it would otherwise each need an ignore.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.runners.runner import PipelineResult

from sluice.core.contracts import Stage

__all__ = ["DistributionSummary", "StageCounters", "query_counters", "query_distributions"]

NAMESPACE: Final = "sluice"
"""Beam metrics namespace of every Sluice counter."""

_NAME_PART = re.compile(r"^[a-z0-9_]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _check_name_part(kind: str, value: str) -> str:
    # Dots separate the parts of a metric name, so a part with a dot (or a space, or upper case
    # spelled two ways) would make one counter look like another's; names chosen in code are
    # refused at construction.
    if not _NAME_PART.match(value):
        raise ValueError(f"{kind} {value!r}: use lower-case letters, digits and '_' only")
    return value


def _label(value: str) -> str:
    # Reasons and rule names can come from configuration (a filter rule's name), where refusing
    # one would fail a running pipeline; characters that could break the naming scheme become '_'.
    return _UNSAFE.sub("_", value) or "_"


class StageCounters:
    """The counters of one stage: ``StageCounters(Stage.PARSE).dead_lettered("invalid_json", 3)``.

    Cheap to create; Beam counter objects are made on first use and dropped when pickled (a DoFn
    holding one is pickled to its workers), so it can live in a DoFn's ``__init__`` or ``setup``.
    """

    __slots__ = ("_counters", "_distributions", "stage")

    def __init__(self, stage: Stage) -> None:
        self.stage = _check_name_part("stage", str(stage))
        self._counters: dict[str, Any] = {}
        self._distributions: dict[str, Any] = {}

    def __reduce__(self) -> tuple[type[StageCounters], tuple[Stage]]:
        return StageCounters, (Stage(self.stage),)

    def received(self, n: int = 1) -> None:
        """Items that entered the stage."""
        self.count("received", n)

    def emitted(self, n: int = 1) -> None:
        """Items the stage passed on as good output."""
        self.count("emitted", n)

    def dead_lettered(self, reason: str, n: int = 1) -> None:
        """Items that became dead letters, by reason (an ``ErrorType`` value, say)."""
        self.count(f"dead_lettered.{_label(reason)}", n)

    def filtered(self, rule: str, n: int = 1) -> None:
        """Items a filter rule dropped, by rule name."""
        self.count(f"filtered.{_label(rule)}", n)

    def count(self, name: str, n: int = 1) -> None:
        """A stage-specific counter ``<stage>.<name>``; ``name`` may have dotted parts."""
        counter = self._counters.get(name)
        if counter is None:
            head, *labels = name.split(".")
            _check_name_part("counter name", head)
            if any(_label(label) != label for label in labels):
                raise ValueError(f"counter name {name!r}: labels may use letters, digits, '_', '-'")
            counter = self._counters[name] = Metrics.counter(NAMESPACE, f"{self.stage}.{name}")
        counter.inc(n)

    def observe(self, name: str, value: int) -> None:
        """One value of a distribution ``<stage>.<name>`` (Beam keeps count, sum, min and max)."""
        distribution = self._distributions.get(name)
        if distribution is None:
            _check_name_part("distribution name", name)
            distribution = self._distributions[name] = Metrics.distribution(
                NAMESPACE, f"{self.stage}.{name}"
            )
        distribution.update(int(value))


@dataclass(frozen=True, slots=True)
class DistributionSummary:
    """Count, sum, min and max of the values a distribution saw."""

    count: int
    sum: int
    min: int
    max: int


def _value(result: Any) -> Any:
    # Committed values are exact once a bundle commits; runners that cannot commit report None
    # there, and attempted (which may count retried bundles twice) is all there is.
    return result.committed if result.committed is not None else result.attempted


def _query(result: PipelineResult) -> dict[str, list[Any]]:
    queried: dict[str, list[Any]] = result.metrics().query(
        MetricsFilter().with_namespace(NAMESPACE)
    )
    return queried


def query_counters(result: PipelineResult) -> dict[str, int]:
    """Every ``sluice`` counter of a run by name, summed over the steps that report it."""
    totals: dict[str, int] = {}
    for metric in _query(result)["counters"]:
        name = metric.key.metric.name
        totals[name] = totals.get(name, 0) + int(_value(metric))
    return totals


def query_distributions(result: PipelineResult) -> dict[str, DistributionSummary]:
    """Every ``sluice`` distribution of a run by name, combined over the steps that report it."""
    combined: dict[str, DistributionSummary] = {}
    for metric in _query(result)["distributions"]:
        data = _value(metric)
        if data is None or not data.count:
            continue
        name = metric.key.metric.name
        summary = DistributionSummary(int(data.count), int(data.sum), int(data.min), int(data.max))
        seen = combined.get(name)
        if seen is not None:
            summary = DistributionSummary(
                seen.count + summary.count,
                seen.sum + summary.sum,
                min(seen.min, summary.min),
                max(seen.max, summary.max),
            )
        combined[name] = summary
    return combined
