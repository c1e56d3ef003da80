"""Filters are data; configuration is typed and refuses bad values at start-up."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from sluice.core.config import CoreSettings, load_settings
from sluice.core.contracts import IotReading, WebAccessLog
from sluice.core.errors import ConfigError
from sluice.transform.filters import DEFAULT_RULES, FilterRule, RecordFilter

T0 = datetime(2026, 11, 26, tzinfo=UTC)


def request(path="/", agent="Mozilla/5.0", status=200):
    return WebAccessLog(
        client_ip="1.2.3.4", event_time=T0, path=path, user_agent=agent, status=status
    )


def test_default_rules_drop_health_checks_and_flag_bots():
    # GIVEN the default rules  WHEN a mixed batch is filtered
    result = RecordFilter(DEFAULT_RULES, "weblog").apply(
        [
            request("/healthz"),
            request("/shop", "Googlebot/2.1 (+http://www.google.com/bot.html)"),
            request("/a"),
        ]
    )
    # THEN the health check is counted as dropped, the bot kept with a flag
    assert result.dropped == {"health_checks": 1}
    assert [r.path for r in result.kept] == ["/shop", "/a"]
    assert result.kept[0].flags == ["bot"] and result.kept[1].flags == []
    assert result.flagged == {"bot": 1}


@pytest.mark.parametrize(
    ("rule", "record", "dropped"),
    [
        pytest.param(dict(field="status", match="equals", value=404), request(status=404), True, id="equals-int"),
        pytest.param(dict(field="path", match="prefix", value="/ADMIN"), request("/admin/x"), True, id="prefix-case-insensitive"),
        pytest.param(dict(field="path", match="prefix", value="/ADMIN", case_sensitive=True), request("/admin/x"), False, id="prefix-case-sensitive"),
        pytest.param(dict(field="path", match="regex", value=r"\.php$"), request("/x.php"), True, id="regex"),
        pytest.param(dict(field="referer", match="equals", value="x"), request(), False, id="missing-field-never-matches"),
    ],
)  # fmt: skip
def test_rule_matching(rule, record, dropped):
    rules = [FilterRule(name="r", source="weblog", action="drop", **rule)]
    assert bool(RecordFilter(rules, "weblog").apply([record]).dropped) is dropped


def test_rules_reach_into_iot_attributes_and_other_sources_are_untouched():
    reading = IotReading(device_id="d", event_time=T0, attributes={"sensor": "test-rig"})
    rules = [
        FilterRule(
            name="rig", source="iot", action="flag", field="attributes.sensor", value="test-rig"
        )
    ]
    [kept] = RecordFilter(rules, "iot").apply([reading]).kept
    assert kept.flags == ["rig"]
    assert RecordFilter(rules, "weblog").apply([request()]).kept[0].flags == []


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(dict(match="in", value="x"), id="in-needs-list"),
        pytest.param(dict(match="equals", value=["x"]), id="equals-needs-scalar"),
        pytest.param(dict(match="regex", value="("), id="bad-regex"),
        pytest.param(dict(match="equals", value="x", colour="red"), id="unknown-key"),
    ],
)
def test_invalid_rules_are_refused(rule):
    with pytest.raises(ValueError):
        FilterRule(name="r", source="weblog", action="drop", field="path", **rule)


def test_settings_defaults_are_documented_and_valid(monkeypatch):
    for name in CoreSettings.model_fields:
        monkeypatch.delenv(f"SLUICE_{name.upper()}", raising=False)
    settings = load_settings()
    assert settings.log_format == "auto" and settings.window_seconds == 60
    assert settings.allowed_lateness_seconds == 600
    assert all(field.description for field in CoreSettings.model_fields.values())


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("SLUICE_WINDOW_SECONDS", "300")
    monkeypatch.setenv("SLUICE_LOG_FORMAT", "combined")
    monkeypatch.setenv("SLUICE_FILTER_RULES", "[]")
    settings = load_settings()
    assert (settings.window_seconds, settings.log_format, settings.filter_rules) == (
        300,
        "combined",
        (),
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"window_seconds": 0}, "window_seconds", id="window-zero"),
        pytest.param({"log_format": "no variables here"}, "log_format", id="log-format"),
        pytest.param({"geoip_cache_size": -1}, "geoip_cache_size", id="cache-negative"),
        pytest.param(
            {"filters_file": "/nonexistent/rules.json"}, "rules.json", id="filters-file-missing"
        ),
    ],
)
def test_invalid_settings_are_config_errors_naming_the_setting(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)


def test_filters_file_replaces_rules(tmp_path):
    path = tmp_path / "rules.json"
    path.write_bytes(
        orjson.dumps(
            [{"name": "x", "source": "weblog", "action": "drop", "field": "path", "value": "/x"}]
        )
    )
    assert [r.name for r in load_settings(filters_file=path).filter_rules] == ["x"]
    path.write_bytes(b'[{"name": "x"}]')
    with pytest.raises(ConfigError, match=r"filters_file|source"):
        load_settings(filters_file=path)
