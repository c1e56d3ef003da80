"""Fixtures for the infrastructure tests (helpers in infra_testkit.py, next to this file)."""

from __future__ import annotations

from typing import Any

import pytest
from infra_testkit import translated_core

from infra.aws.templates import ENVIRONMENTS, STACKS, load_template


@pytest.fixture(params=ENVIRONMENTS)
def env(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def core(env: str) -> dict[str, Any]:
    return translated_core(env)


@pytest.fixture(scope="session")
def flink() -> dict[str, Any]:
    return load_template(STACKS["flink"].template)
