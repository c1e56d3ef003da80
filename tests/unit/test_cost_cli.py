"""``sluice cost``: one-line refusals with exit 2, the table, and a --json round trip."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.cli.main import main

REPORT = Path(__file__).resolve().parents[2] / "reports" / "measurements.json"
pytestmark = pytest.mark.skipif(not REPORT.exists(), reason="no reports/measurements.json")


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLUICE_"):
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["cost", "--measurements", str(REPORT), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--iot_events_per_second", "-5"], "--iot_events_per_second"),
        (["--iot_events_per_second", "lots"], "--iot_events_per_second"),
        (["--commit_interval_seconds", "0"], "--commit_interval_seconds"),
        (["--athena_partitioning", "week"], "--athena_partitioning"),
        (["--iot_events_per_secnd", "5"], "did you mean --iot_events_per_second"),
        (["--measurements", "/nonexistent/m.json"], "make bench"),
    ],
)
def test_refusals_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert says in err


def test_an_unusable_measurement_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "m.json"
    document = orjson.loads(REPORT.read_bytes())
    del document["sources"]["iot"]["parquet_bytes_per_event"]
    broken.write_bytes(orjson.dumps(document))
    code, _, err = run(capsys, "--measurements", str(broken))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "parquet_bytes_per_event" in err


def test_the_table_lists_every_component_and_the_savings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys, "--iot_events_per_second", "2000", "--weblog_lines_per_second", "500"
    )
    assert code == 0
    for component in ("API Gateway HTTP API", "Lambda (edges)", "Kinesis on-demand",
                      "Kinesis provisioned (not counted)", "Firehose (raw archive)",
                      "Managed Flink (MSF)", "S3 storage", "S3 requests", "Glue Data Catalog",
                      "Athena", "total", "KPL aggregation", "Commit interval", "Partitioning",
                      "Kinesis capacity mode"):  # fmt: skip
        assert component in out


def _as_flags(inputs: dict[str, Any]) -> list[str]:
    flags = []
    for name, value in inputs.items():
        if value is None:
            continue
        text = ("on" if value else "off") if isinstance(value, bool) else str(value)
        flags += [f"--{name}", text]
    return flags


def test_json_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN an estimate as JSON
    code, out, _ = run(capsys, "--json", "--iot_events_per_second", "1234", "--aggregation", "off",
                       "--kinesis_mode", "provisioned")  # fmt: skip
    assert code == 0
    first = orjson.loads(out)
    counted = [c["monthly_usd"] for c in first["components"] if c["counted"]]
    assert first["total_monthly_usd"] == pytest.approx(sum(counted))
    assert first["inputs"]["iot_events_per_second"] == 1234
    # WHEN its inputs are given back as flags THEN the same estimate comes out
    code, again, _ = run(capsys, "--json", *_as_flags(first["inputs"]))
    assert code == 0
    assert orjson.loads(again) == first


def test_help_lists_every_setting_with_its_variable_and_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["cost", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: sluice cost")
    for option, default in [("iot_events_per_second", "2000"), ("commit_interval_seconds", "60"),
                            ("kinesis_mode", "on-demand"), ("aggregation", "on")]:  # fmt: skip
        assert f"--{option}" in text
        assert f"SLUICE_{option.upper()}; default: {default})" in text
