"""The Lambdas' settings default to the core's own defaults: each value is declared once.

An unset ``SLUICE_*`` variable must give what the core gives when it is not configured at all, so
the documented setting and the code behind it cannot drift apart.
"""

from __future__ import annotations

import inspect
import os

import pytest

from edge_lambdas.feed_poller.settings import load_poller_settings
from edge_lambdas.iot_ingest.settings import IotIngestSettings
from edge_lambdas.shared.publisher import KinesisPublisher
from edge_lambdas.shared.settings import EdgeSettings
from sluice.edges.ingest import BodyLimits
from sluice.edges.polling import PollerConfig


@pytest.fixture
def no_sluice_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [name for name in os.environ if name.startswith("SLUICE_")]:
        monkeypatch.delenv(variable)


@pytest.mark.usefixtures("no_sluice_environment")
def test_the_feed_poller_settings_default_to_the_pollers_defaults() -> None:
    # GIVEN no SLUICE_* variable THEN the Lambda's poller is configured like a bare PollerConfig:
    # lease and margin, user agent, HTTP retries, seen-state bounds
    assert load_poller_settings().poller_config() == PollerConfig()


@pytest.mark.usefixtures("no_sluice_environment")
def test_the_iot_settings_default_to_the_body_limits_defaults() -> None:
    # GIVEN only the required settings THEN the body limits are BodyLimits' own
    settings = IotIngestSettings(stream_name="events", dead_letter_bucket="dead-letters")
    assert settings.body_limits() == BodyLimits()


def test_the_edge_settings_timeouts_are_the_publishers_defaults() -> None:
    # GIVEN a publisher built without settings THEN its Kinesis timeouts are the settings' defaults
    parameters = inspect.signature(KinesisPublisher).parameters
    fields = EdgeSettings.model_fields
    assert parameters["connect_timeout"].default == fields["connect_timeout_seconds"].default
    assert parameters["read_timeout"].default == fields["read_timeout_seconds"].default
