"""Typed configuration of the core, validated at start-up.

Every setting has a documented default and can be set by an environment variable ``SLUICE_<NAME>``
(complex values as JSON, e.g. ``SLUICE_FILTER_RULES='[...]'``) or by keyword. An invalid value stops
the program at start-up with a message naming the setting; nothing is discovered record by record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluice.core.contracts import (
    MAX_FUTURE_SECONDS,
    MAX_FUTURE_SECONDS_LIMIT,
    MIN_EVENT_TIME,
    TimeHorizon,
)
from sluice.core.deadletters import MAX_DEAD_LETTERS
from sluice.core.errors import ConfigError, LogFormatError
from sluice.parsing.feeds import USGS_EARTHQUAKES, FeedSpec
from sluice.parsing.feeds_file import load_feeds_file
from sluice.parsing.iot import Sentinels
from sluice.parsing.weblog import LogParser
from sluice.transform.filters import DEFAULT_RULES, FilterRule

__all__ = ["CoreSettings", "build_settings", "config_error", "load_settings"]


class CoreSettings(BaseSettings):
    """Settings shared by every deployable (edges, stream job, CLI)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="forbid", frozen=True)

    log_format: str = Field(
        default="auto",
        description="nginx access-log format: 'auto', 'combined', 'main' or a log_format string.",
    )
    geoip_city_db: Path | None = Field(
        default=None, description="MaxMind City or Country database (.mmdb); none: no GeoIP."
    )
    geoip_asn_db: Path | None = Field(default=None, description="MaxMind ASN database (.mmdb).")
    geoip_cache_size: int = Field(default=65_536, ge=0, description="GeoIP LRU cache entries.")
    window_seconds: int = Field(default=60, ge=1, le=86_400, description="Aggregation window size.")
    allowed_lateness_seconds: int = Field(
        default=600, ge=0, description="How late an event may arrive and still update its window."
    )
    filter_rules: tuple[FilterRule, ...] = Field(
        default=DEFAULT_RULES, description="Drop/flag rules (see sluice.transform.filters)."
    )
    filters_file: Path | None = Field(
        default=None, description="JSON file with a list of filter rules, replacing filter_rules."
    )
    feeds: tuple[FeedSpec, ...] = Field(
        default=(USGS_EARTHQUAKES,),
        description="Polled JSON APIs as JSON (see sluice.parsing.feeds); feeds_file replaces them.",
    )
    feeds_file: Path | None = Field(
        default=None,
        description='File of feeds, {"feeds": [spec, ...]} in JSON or YAML (.yaml/.yml), '
        "replacing feeds (see sluice.parsing.feeds_file).",
    )
    iot_sentinels: tuple[float | str, ...] = Field(
        default=(),
        description="IoT values that mean 'not measured', as a JSON list such as "
        '[-200, -999, "NaN"]: a metric equal to a number of the list, or a value equal to a '
        "string of it, is left out of its reading and counted as a missing metric "
        "(missing_metrics), never a dead letter. Default: none.",
    )
    max_future_seconds: int = Field(
        default=MAX_FUTURE_SECONDS,
        ge=0,
        le=MAX_FUTURE_SECONDS_LIMIT,
        description="Horizon: how far after the time of ingestion (the edge's clock; in the job, "
        "the record's Kinesis arrival) an event time may be; later ones are invalid_timestamp "
        "dead letters, never rows (a device clock set to 9999 would overflow window arithmetic).",
    )
    min_event_time: datetime = Field(
        default=MIN_EVENT_TIME,
        description="Earliest accepted event time (naive: UTC); earlier ones are "
        "invalid_timestamp dead letters. Absolute, not relative to now, so re-drives, replays and "
        "backfills of old data are never refused for their age.",
    )
    max_dead_letters: int = Field(
        default=MAX_DEAD_LETTERS,
        ge=1,
        le=100_000,
        description="Dead letters built one by one per IoT request body, per log file or "
        "CloudWatch Logs event at the log edge and per parsed batch; further rejections are counted by reason and summarized "
        "in one too_many_errors dead letter (digest, counts, a sample), so one hostile body cannot "
        "become hundreds of thousands of letters. The stream job is not capped: it turns one "
        "record into at most one letter, and its records stay re-drivable one by one.",
    )

    def time_horizon(self) -> TimeHorizon:
        """The event-time bounds every parse applies (``sluice.core.contracts.TimeHorizon``)."""
        return TimeHorizon(self.max_future_seconds, self.min_event_time)

    def sentinels(self) -> Sentinels:
        """``iot_sentinels`` as the IoT parser takes them (``sluice.parsing.iot.Sentinels``)."""
        return Sentinels(self.iot_sentinels)

    @field_validator("iot_sentinels", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value):
            raise ValueError("sentinels are numbers or strings, not true/false")
        return value

    @field_validator("min_event_time")
    @classmethod
    def _valid_horizon(cls, value: datetime) -> datetime:
        return TimeHorizon(min_event_time=value).min_event_time  # UTC, and not before year 1

    @field_validator("log_format")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            LogParser(value)
        except LogFormatError as err:
            raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _load_feeds_file(self) -> CoreSettings:
        if self.feeds_file is not None:
            try:
                specs = load_feeds_file(self.feeds_file)
            except ConfigError as err:
                raise ValueError(f"feeds_file: {err}") from None
            object.__setattr__(self, "feeds", specs)
        return self

    @model_validator(mode="after")
    def _load_filters_file(self) -> CoreSettings:
        if self.filters_file is None:
            return self
        try:
            rules = orjson.loads(self.filters_file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as err:
            raise ValueError(f"filters_file {self.filters_file}: {err}") from err
        if not isinstance(rules, list):
            raise ValueError(f"filters_file {self.filters_file}: expected a JSON list of rules")
        object.__setattr__(self, "filter_rules", tuple(FilterRule.model_validate(r) for r in rules))
        return self


S = TypeVar("S", bound=BaseSettings)


def setting_name(path: str) -> str:
    """A problem's location as the setting's own (dotted) name; ``settings`` for the whole object."""
    return path or "settings"


def config_error(
    err: ValidationError, *, prefix: str, name: Callable[[str], str] = setting_name
) -> ConfigError:
    """One ``ConfigError`` "``prefix``: name: problem; name: problem" for every problem in ``err``.

    ``name`` turns a problem's location (a dotted path such as ``feeds.0.url``, or ``""`` for a
    problem of the whole object, raised by a model validator) into what the user actually sets: the
    setting, its environment variable, the command-line option.
    """
    problems = "; ".join(
        f"{name('.'.join(str(part) for part in error['loc']))}: {error['msg']}"
        for error in err.errors(include_url=False)
    )
    return ConfigError(f"{prefix}: {problems}")


def build_settings(
    settings_class: type[S],
    overrides: Mapping[str, Any] | None = None,
    *,
    prefix: str,
    name: Callable[[str], str] = setting_name,
) -> S:
    """``settings_class`` from the environment and ``overrides`` (a ``None`` override is no
    override); any problem is one ``ConfigError`` (see ``config_error``)."""
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    try:
        return settings_class(**given)
    except ValidationError as err:
        raise config_error(err, prefix=prefix, name=name) from None


def load_settings(**overrides: Any) -> CoreSettings:
    """Build settings from the environment and ``overrides``; any problem is a ``ConfigError``."""
    return build_settings(CoreSettings, overrides, prefix="invalid configuration")
