"""The PyFlink (MSF) application on the local Flink cluster (``make test-flink``, marker ``flink``).

GIVEN a raw archive (``sluice.tables.archive`` files of two shards: readings, requests, feed items,
KPL aggregates, invalid records, edge dead letters, too-late events), WHEN it is replayed through
the Beam job (``sluice replay``) and through the PyFlink application (``sluice flink package`` ->
``sluice flink run --zip`` on a local cluster: what is shipped is what runs), THEN both give the same
event rows and dead letters, and window rows with equal counts, sums, min and max (quantiles and
unique-client estimates within sketch error). Start-up problems are one line naming the fix.

Runtime: about 3-4 minutes on 2 cores (a Beam replay, a cluster start, one Flink job).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flink_jobs.settings import REPO_ROOT
from sluice.stream.stages import InputRecord
from sluice.tables.archive import encode_batch
from sluice.tables.warehouse import WarehouseSettings, ensure_tables, open_catalog

sys.path.append(str(REPO_ROOT / "tests" / "pipeline"))
from job_testkit import assert_same_rows, mixed_input, read_tables, window_of

from flink_jobs.app.package import JAR_IN_ZIP

pytestmark = pytest.mark.flink

START = window_of(datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
ICEBERG_JAR = Path.home() / ".cache/sluice/jars/iceberg-flink-runtime-2.0-1.10.1.jar"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> Any:
    return subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "sluice"), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def write_archive(root: Path) -> int:
    """Two shards of mixed input as archive files (every seventh record starts a KPL aggregate
    of three user records, sharing a sequence number); returns the user records written."""
    sent = mixed_input(
        random.Random(7), START, span_seconds=180, devices=4, readings=150, requests=150,
        feed_items=3, too_late=2, invalid=1, edge_dead_letters=1,
    )  # fmt: skip
    random.Random(2).shuffle(sent)
    arrival = (START + timedelta(seconds=200)).timestamp()
    for number in range(2):
        shard, part = f"shardId-{number:012d}", sent[number::2]
        records, sequence, i = [], 49_000_000_000_000_000_000 + number, 0
        while i < len(part):
            group = part[i : i + 3] if i % 7 == 0 else part[i : i + 1]
            for sub, item in enumerate(group):
                records.append(InputRecord(sequence, sub, round(arrival + i * 0.01, 3), item.data))
            i, sequence = i + len(group), sequence + 10
        half = len(records) // 2
        for chunk in (records[:half], records[half - 5 :]):  # overlapping files, as after a restart
            for relative, content in encode_batch(shard, chunk):
                path = root / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
    return len(sent)


def properties(archive: Path, state: Path, **job: str) -> list[dict[str, Any]]:
    return [
        {"PropertyGroupId": "sluice.input",
         "PropertyMap": {"source": "archive", "archive.path": str(archive)}},
        {"PropertyGroupId": "sluice.iceberg",
         "PropertyMap": {"catalog.type": "jdbc", "warehouse": (state / "warehouse").as_uri(),
                         "jdbc.uri": f"jdbc:sqlite:{state / 'catalog.db'}"}},
        {"PropertyGroupId": "sluice.job",
         "PropertyMap": {"checkpoint.interval.seconds": "2", **job}},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("cluster") / "flink"
    yield folder
    run("flink", "cluster", "stop", "--flink_dir", str(folder), timeout=120)
    for entry in Path("/proc").iterdir():  # never leave a JVM of this folder behind
        try:
            if entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MSF zip. Its jar is Iceberg's Flink runtime until the shaded jar is built (the local
    cluster has every jar on its classpath; the jar in lib/ is what MSF loads)."""
    out = tmp_path_factory.mktemp("package") / "app.zip"
    built = run("flink", "package", "--out", str(out), "--jar", str(ICEBERG_JAR), timeout=1800)
    assert built.returncode == 0, built.stderr
    return out


def test_the_zip_has_msf_layout(package: Path) -> None:
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
    assert "main.py" in names and JAR_IN_ZIP in names
    assert [n for n in names if n.endswith(".jar")] == [JAR_IN_ZIP]  # MSF takes one jar
    for module in ("dep/flink_jobs/app/job.py", "dep/sluice/stream/run.py"):
        assert module in names
    assert any(n.startswith("dep/pydantic_core/") and "cpython-312-x86_64" in n for n in names)
    assert any(n.startswith("dep/orjson/") for n in names)
    assert not any(n.startswith("dep/pyflink/") or n.startswith("dep/apache_beam/") for n in names)
    msf = json.loads((REPO_ROOT / "flink_conf" / "application_properties.msf.json").read_text())
    options = next(g for g in msf if g["PropertyGroupId"] == "kinesis.analytics.flink.run.options")
    assert options["PropertyMap"] == {"python": "main.py", "jarfile": JAR_IN_ZIP, "pyFiles": "dep/"}


def window_values(rows: list[dict[str, Any]], keys: tuple[str, ...], exact: tuple[str, ...]) -> Any:
    return {tuple(r[k] for k in keys): tuple(r[c] for c in exact) for r in rows}


def test_the_archive_through_beam_and_pyflink_gives_the_same_tables(
    tmp_path: Path, package: Path, cluster_dir: Path
) -> None:
    # GIVEN an archive, replayed by the Beam job into one warehouse
    archive = tmp_path / "archive"
    sent = write_archive(archive)
    beam = run(
        "replay", "--from", (START - timedelta(hours=1)).isoformat(),
        "--to", (START + timedelta(hours=2)).isoformat(), "--archive_root", str(archive),
        "--state_dir", str(tmp_path / "beam"),
    )  # fmt: skip
    assert beam.returncode == 0, beam.stderr[-2000:]
    assert json.loads(beam.stdout.strip().splitlines()[-1])["parse.received"] == sent

    # WHEN the PyFlink application replays it from its zip on the local cluster
    state = tmp_path / "flink"
    settings = WarehouseSettings(state_dir=state)
    ensure_tables(open_catalog(settings), settings)
    props = tmp_path / "application_properties.json"
    props.write_text(json.dumps(properties(archive, state, **{"batch.max.records": "50"})))
    flink = run(
        "flink", "run", "--properties", str(props), "--zip", str(package),
        "--flink_dir", str(cluster_dir), "--wait", "--timeout_seconds", "600",
    )  # fmt: skip
    assert flink.returncode == 0, (flink.stdout, flink.stderr[-2000:])
    assert flink.stdout.strip().splitlines()[-1] == "FINISHED"

    # THEN event tables and dead letters hold the very same rows
    mine, reference = read_tables(state), read_tables(tmp_path / "beam")
    for name in ("iot_readings", "web_requests", "feed_items", "dead_letters"):
        assert_same_rows(name, mine[name], reference[name])
    assert {r["error_type"] for r in mine["dead_letters"]} >= {"too_late", "invalid_json"}
    # AND window rows agree: counts, sums, min and max exactly, sketches within their error
    iot_keys, web_keys = ("window_start", "device_id", "metric"), ("window_start", "path",
                                                                   "status_class", "country_iso")  # fmt: skip
    exact = {"iot_metrics_1m": (iot_keys, ("count", "sum", "min", "max", "mean")),
             "web_traffic_1m": (web_keys, ("requests", "bytes"))}  # fmt: skip
    for name, (keys, columns) in exact.items():
        assert mine[name], name
        assert window_values(mine[name], keys, columns) == window_values(
            reference[name], keys, columns
        ), name
    approx = {"iot_metrics_1m": ("p50", "p95", "p99"),
              "web_traffic_1m": ("request_time_p50", "request_time_p95", "unique_clients")}  # fmt: skip
    for name, columns in approx.items():
        keys = exact[name][0]
        theirs = window_values(reference[name], keys, columns)
        for key, values in window_values(mine[name], keys, columns).items():
            for value, expected in zip(values, theirs[key], strict=True):
                assert value == pytest.approx(expected, rel=0.05, abs=1e-9), (name, key)


def one_line(proc: Any) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return str(lines[0])


def test_a_missing_jar_and_a_missing_catalog_are_one_line_at_start(tmp_path: Path) -> None:
    props = tmp_path / "application_properties.json"
    props.write_text(json.dumps(properties(tmp_path, tmp_path / "nowhere")))
    empty = {"SLUICE_JAR_CACHE": str(tmp_path / "no-jars")}
    line = one_line(run("flink", "run", "--properties", str(props), env=empty))
    assert "is not in" in line and "run 'make flink-jars'" in line
    line = one_line(run("flink", "run", "--properties", str(props)))
    assert f"the catalog database {tmp_path / 'nowhere' / 'catalog.db'} does not exist" in line
    assert "create the tables first" in line
    props.write_text(json.dumps([{"PropertyGroupId": "sluice.input", "PropertyMap": {}}]))
    line = one_line(run("flink", "run", "--properties", str(props)))
    assert "sluice.input: source: Field required" in line
