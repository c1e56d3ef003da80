"""Flags made from a settings class: names, help, JSON values, on/off, unknown options (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from sluice.core.errors import ConfigError
from sluice.core.flags import FlagParser, closest_option


class Rule(BaseModel):
    name: str


class Example(BaseModel):
    window_seconds: int = Field(default=60, description="Window size.")
    archive: bool = Field(default=True, description="Keep raw records.")
    state_dir: Path = Field(default=Path(".x"), description="Where state lives (100% local).")
    rules: tuple[Rule, ...] = Field(default=(), description="Rules.")
    stop_when_idle_seconds: float | None = Field(default=None, description="Stop when idle.")


def flags() -> FlagParser:
    return FlagParser("demo", Example, aliases={"--stop-when-idle": "stop_when_idle_seconds"})


def test_given_flags_become_overrides_and_absent_ones_do_not():
    _, overrides = flags().parse(["--window_seconds", "30", "--state-dir=/tmp/s"])
    assert overrides == {"window_seconds": "30", "state_dir": "/tmp/s"}
    assert Example.model_validate(overrides).window_seconds == 30


@pytest.mark.parametrize(("given", "expected"), [("off", False), ("on", True), ("false", False)])
def test_a_boolean_is_on_or_off(given: str, expected: bool):
    _, overrides = flags().parse(["--archive", given])
    assert Example.model_validate(overrides).archive is expected


def test_structured_fields_take_json():
    _, overrides = flags().parse(["--rules", '[{"name": "a"}]'])
    assert Example.model_validate(overrides).rules == (Rule(name="a"),)
    with pytest.raises(ConfigError, match="--rules: not valid JSON"):
        flags().parse(["--rules", "[oops"])


def test_aliases_reach_their_field():
    _, overrides = flags().parse(["--stop-when-idle", "4"])
    assert overrides == {"stop_when_idle_seconds": "4"}


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["--windw_seconds", "5"], "did you mean --window_seconds?"),
        (["--archiv=off"], "did you mean --archive?"),
        (["--zzz"], "see demo --help"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_unknown_options_are_refused_with_the_closest_name(argv: list[str], hint: str):
    with pytest.raises(ConfigError, match=r"unknown option|unexpected argument") as refused:
        flags().parse(argv)
    assert hint in str(refused.value) and "\n" not in str(refused.value)


def test_help_lists_every_field_with_its_variable_and_default(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as done:
        flags().parse(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, default in [("window_seconds", "60"), ("archive", "on"), ("state_dir", ".x")]:
        assert f"--{name}" in text and f"SLUICE_{name.upper()}; default: {default})" in text
    assert "100% local" in text


def test_closest_option_prefers_the_underscore_spelling():
    assert closest_option("--window-secs", ["--window_seconds", "--window-seconds"]) == (
        "--window_seconds"
    )
