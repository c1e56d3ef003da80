"""Filters as data: rules from configuration decide which records are dropped or flagged.

In: a batch of records (any contract model) and a list of ``FilterRule``.
Out: ``FilterResult``: the kept records (flagged ones carry the rule's flag in ``flags``) and the
number of records each ``drop`` rule removed. A dropped record is an intended removal, not an
error: it is counted by rule name (and reported in metrics), not dead-lettered.

A rule tests one field, addressed by a dotted path into the record (``path``, ``user_agent``,
``status``, ``attributes.sensor``), with ``equals``, ``in``, ``prefix`` or ``regex`` (search,
case-insensitive unless ``case_sensitive``). The first ``drop`` rule that matches drops the record;
every matching ``flag`` rule adds its flag.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sluice.core.errors import ConfigError

__all__ = ["DEFAULT_RULES", "FilterRule", "RecordFilter"]

R = TypeVar("R", bound=BaseModel)


class FilterRule(BaseModel):
    """One filter rule. Unknown keys are refused so a typo is a start-up error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Name used in counters and logs.")
    source: Literal["iot", "weblog", "feed"] = Field(
        description="Which records the rule applies to."
    )
    action: Literal["drop", "flag"]
    field: str = Field(min_length=1, description="Dotted path of the tested field.")
    match: Literal["equals", "in", "prefix", "regex"] = "equals"
    value: str | int | float | list[str | int | float] = Field(
        description="Compared value; a list for 'in', a pattern for 'regex'."
    )
    case_sensitive: bool = False
    flag: str | None = Field(
        default=None, description="Label added by a 'flag' rule; default: name."
    )

    @model_validator(mode="after")
    def _check(self) -> FilterRule:
        if self.match == "in" and not isinstance(self.value, list):
            raise ValueError("match 'in' needs a list value")
        if self.match != "in" and isinstance(self.value, list):
            raise ValueError(f"match {self.match!r} needs a single value, not a list")
        if self.match == "regex":
            try:
                re.compile(str(self.value))
            except re.error as err:
                raise ValueError(f"invalid regex {self.value!r}: {err}") from err
        return self


DEFAULT_RULES: tuple[FilterRule, ...] = (
    FilterRule(
        name="health_checks",
        source="weblog",
        action="drop",
        field="path",
        match="in",
        value=["/health", "/healthz", "/ping", "/ready", "/livez", "/readyz"],
    ),
    FilterRule(
        name="bots",
        source="weblog",
        action="flag",
        field="user_agent",
        match="regex",
        value=r"bot\b|crawler|spider|slurp|bingpreview|facebookexternalhit",
        flag="bot",
    ),
)


def _getter(path: str) -> Callable[[Any], Any]:
    steps = path.split(".")

    def get(record: Any) -> Any:
        value = record
        for step in steps:
            value = value.get(step) if isinstance(value, dict) else getattr(value, step, None)
            if value is None:
                return None
        return value

    return get


def _predicate(rule: FilterRule) -> Callable[[Any], bool]:
    fold: Callable[[Any], str] = (
        (lambda v: str(v)) if rule.case_sensitive else (lambda v: str(v).lower())
    )
    if rule.match == "regex":
        regex = re.compile(str(rule.value), 0 if rule.case_sensitive else re.IGNORECASE)
        return lambda v: regex.search(str(v)) is not None
    if rule.match == "in":
        assert isinstance(rule.value, list)
        wanted = frozenset(fold(v) for v in rule.value)
        return lambda v: fold(v) in wanted
    target = fold(rule.value)
    if rule.match == "prefix":
        return lambda v: fold(v).startswith(target)
    return lambda v: fold(v) == target


@dataclass(slots=True)
class FilterResult:
    kept: list[Any] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)


class RecordFilter:
    """The rules for one source, compiled once."""

    def __init__(self, rules: Sequence[FilterRule], source: str) -> None:
        names = [r.name for r in rules]
        if len(names) != len(set(names)):
            raise ConfigError(f"filter rule names must be unique: {names}")
        selected = [r for r in rules if r.source == source]
        self._drops = [
            (r.name, _getter(r.field), _predicate(r)) for r in selected if r.action == "drop"
        ]
        self._flags = [
            (r.name, r.flag or r.name, _getter(r.field), _predicate(r))
            for r in selected
            if r.action == "flag"
        ]

    def __bool__(self) -> bool:
        return bool(self._drops or self._flags)

    def judge(self, record: Any) -> tuple[str | None, list[str]]:
        """The rule that drops ``record`` (or ``None``) and the flags the other rules give it."""
        for name, get, test in self._drops:
            value = get(record)
            if value is not None and test(value):
                return name, []
        return None, [
            flag for _, flag, get, test in self._flags if (v := get(record)) is not None and test(v)
        ]

    def apply(self, records: Iterable[R]) -> FilterResult:
        result = FilterResult()
        if not self:
            result.kept.extend(records)
            return result
        for record in records:
            dropped_by, flags = self.judge(record)
            if dropped_by is not None:
                result.dropped[dropped_by] = result.dropped.get(dropped_by, 0) + 1
                continue
            if flags:
                for flag in flags:
                    result.flagged[flag] = result.flagged.get(flag, 0) + 1
                record = record.model_copy(
                    update={"flags": [*getattr(record, "flags", ()), *flags]}
                )
            result.kept.append(record)
        return result
