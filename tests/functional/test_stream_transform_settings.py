"""The transform Lambda's settings: required values named at cold start, defaults declared once."""

from __future__ import annotations

import os

import pytest

from edge_lambdas.shared.settings import load_settings
from edge_lambdas.stream_transform.settings import StreamTransformSettings
from sluice.core.config import CoreSettings
from sluice.core.errors import ConfigError
from sluice.tables.catalog import WarehouseSettings
from sluice.tables.warehouse import DEFAULT_POSITIONS_COMMIT_SECONDS


@pytest.fixture(autouse=True)
def _no_sluice_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [name for name in os.environ if name.startswith("SLUICE_")]:
        monkeypatch.delenv(variable)


def test_a_missing_deployment_id_fails_the_cold_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_STREAM_NAME", "sluice-dev-events")
    with pytest.raises(ConfigError, match="SLUICE_DEPLOYMENT_ID") as refused:
        load_settings(StreamTransformSettings)
    assert "\n" not in str(refused.value)


def test_the_defaults_are_the_cores_the_warehouses_and_the_writers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_STREAM_NAME", "sluice-dev-events")
    monkeypatch.setenv("SLUICE_DEPLOYMENT_ID", "lambda-dev-20261201T120000Z")
    monkeypatch.setenv("SLUICE_CATALOG", "glue")
    settings = load_settings(StreamTransformSettings)
    core = CoreSettings()
    assert (settings.window_seconds, settings.allowed_lateness_seconds) == (
        core.window_seconds,
        core.allowed_lateness_seconds,
    )
    assert settings.positions_commit_seconds == DEFAULT_POSITIONS_COMMIT_SECONDS
    assert settings.warehouse_settings() == WarehouseSettings(catalog="glue")
