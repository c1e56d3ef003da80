"""The benchmark's measurement step writes what ``sluice cost`` reads (a tiny run: a few seconds).

Runs ``benchmarks.measure`` on 200 events per source and three real Iceberg commits, then reads its
file as ``sluice cost`` does and prices a workload from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sluice.cli.main import main
from sluice.cost import load_measurements


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLUICE_"):
            monkeypatch.delenv(name)


def test_the_measurement_file_has_what_sluice_cost_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a tiny run of the measurement step
    out = tmp_path / "measurements.json"
    argv = ["--events", "200", "--commits", "3", "--events-per-commit", "200", "--out", str(out)]
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.measure", *argv],
        cwd=repo, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # THEN the file loads as sluice cost reads it, with figures from the real code
    measured = load_measurements(out)
    assert measured.command.startswith("python -m benchmarks.measure --events 200")
    assert measured.commits.commits == 2  # the first commit creates the tables: not averaged
    assert measured.commits.files_written_per_commit > measured.commits.data_files_per_commit > 0
    for name in ("iot", "weblog", "feed"):
        source = measured.source(name)
        assert source.aggregated_bytes_per_event > 0
        assert source.parquet_bytes_per_event > 0
        # one envelope per event is at least as big as what the event adds to an aggregate + 5%
        assert source.envelope_bytes_per_event < source.aggregated_bytes_per_event * 1.05
    iot = {b.events_per_batch: b for b in measured.source("iot").batches}
    assert iot[100].kinesis_records == iot[100].batches  # 100 readings fit one aggregate
    # AND sluice cost prices a workload from it
    capsys.readouterr()
    assert main(["cost", "--measurements", str(out), "--json"]) == 0
    document = orjson.loads(capsys.readouterr().out)
    assert document["measured_at"] == measured.measured_at
    assert document["total_monthly_usd"] > 0
