"""Typed configuration of the core, validated at start-up.

Every setting has a documented default and can be set by an environment variable ``SLUICE_<NAME>``
(complex values as JSON, e.g. ``SLUICE_FILTER_RULES='[...]'``) or by keyword. An invalid value stops
the program at start-up with a message naming the setting; nothing is discovered record by record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluice.errors import ConfigError, LogFormatError
from sluice.filters import DEFAULT_RULES, FilterRule
from sluice.parsers.feeds import USGS_EARTHQUAKES, FeedSpec
from sluice.parsers.weblog import LogParser


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
        default=DEFAULT_RULES, description="Drop/flag rules (see sluice.filters)."
    )
    filters_file: Path | None = Field(
        default=None, description="JSON file with a list of filter rules, replacing filter_rules."
    )
    feeds: tuple[FeedSpec, ...] = Field(
        default=(USGS_EARTHQUAKES,), description="Polled JSON APIs (see sluice.parsers.feeds)."
    )

    @field_validator("log_format")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            LogParser(value)
        except LogFormatError as err:
            raise ValueError(str(err)) from None
        return value

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


def load_settings(**overrides: Any) -> CoreSettings:
    """Build settings from the environment and ``overrides``; any problem is a ``ConfigError``."""
    try:
        return CoreSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in err.errors(include_url=False)
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
