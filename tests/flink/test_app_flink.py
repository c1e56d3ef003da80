"""The PyFlink (MSF) application on the local Flink cluster (``make test-flink``, marker ``flink``).

GIVEN a raw archive (``sluice.tables.archive`` files of two shards: readings, requests, feed items,
KPL aggregates, invalid records, edge dead letters, too-late events), WHEN it is replayed through
the Beam job (``sluice replay``) and through the PyFlink application (``sluice flink package`` ->
``sluice flink run-local --zip`` on a local cluster: what is shipped is what runs), THEN both give the same
event rows and dead letters, and window rows with equal counts, sums, min and max (quantiles and
unique-client estimates within sketch error). Start-up problems are one line naming the fix.

Runtime: about 3-4 minutes on 2 cores (a Beam replay, a cluster start, one Flink job).
"""

from __future__ import annotations

import json
import random
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from app_testkit import app_properties, assert_same_tables, one_line, read_tables, sluice
from job_testkit import mixed_input, window_of

from flink_jobs.app.package import JAR_IN_ZIP
from flink_jobs.cluster import free_port
from flink_jobs.settings import REPO_ROOT
from sluice.stream.stages import InputRecord
from sluice.tables.archive import encode_batch
from sluice.tables.warehouse import WarehouseSettings, ensure_tables, open_catalog

pytestmark = pytest.mark.flink

START = window_of(datetime(2026, 12, 1, 10, 0, tzinfo=UTC))


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


def test_the_zip_has_msf_layout(app_zip: Path) -> None:
    with zipfile.ZipFile(app_zip) as archive:
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


def test_the_archive_through_beam_and_pyflink_gives_the_same_tables(
    tmp_path: Path, app_zip: Path, session_flink_dir: Path
) -> None:
    # GIVEN an archive, replayed by the Beam job into one warehouse
    archive = tmp_path / "archive"
    sent = write_archive(archive)
    beam = sluice(
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
    source = {"source": "archive", "archive.path": str(archive)}
    props.write_text(json.dumps(app_properties(source, state, **{"batch.max.records": "50"})))
    flink = sluice(
        "flink", "run-local", "--properties", str(props), "--zip", str(app_zip),
        "--flink_dir", str(session_flink_dir), "--wait", "--timeout_seconds", "600",
    )  # fmt: skip
    assert flink.returncode == 0, (flink.stdout, flink.stderr[-2000:])
    assert flink.stdout.strip().splitlines()[-1] == "FINISHED"

    # THEN event tables and dead letters hold the very same rows, and window rows agree: counts,
    # sums, min and max exactly, sketches within their error
    mine = read_tables(state)
    assert_same_tables(mine, read_tables(tmp_path / "beam"))
    assert {r["error_type"] for r in mine["dead_letters"]} >= {"too_late", "invalid_json"}


def test_a_missing_catalog_or_cluster_and_bad_properties_are_one_line_at_start(
    tmp_path: Path,
) -> None:
    props = tmp_path / "application_properties.json"
    source = {"source": "archive", "archive.path": str(tmp_path)}
    props.write_text(json.dumps(app_properties(source, tmp_path / "nowhere")))
    line = one_line(sluice("flink", "run-local", "--properties", str(props)))
    assert f"the catalog database {tmp_path / 'nowhere' / 'catalog.db'} does not exist" in line
    assert "create the tables first" in line
    state = tmp_path / "state"
    settings = WarehouseSettings(state_dir=state)
    ensure_tables(open_catalog(settings), settings)
    props.write_text(json.dumps(app_properties(source, state)))
    nobody = f"127.0.0.1:{free_port()}"
    line = one_line(sluice("flink", "run-local", "--properties", str(props),
                           "--flink_master", nobody, "--flink_dir", str(tmp_path / "c"),
                           "--zip", str(tmp_path / "unused.zip")))  # fmt: skip
    assert f"no Flink cluster answers at {nobody} (--flink_master)" in line
    line = one_line(sluice("flink", "run", "--properties", str(props),  # the first name
                           "--flink_master", "nowhere", "--zip", str(tmp_path / "unused.zip")))  # fmt: skip
    assert "--flink_master 'nowhere': expected HOST:PORT" in line
    props.write_text(json.dumps([{"PropertyGroupId": "sluice.input", "PropertyMap": {}}]))
    line = one_line(sluice("flink", "run-local", "--properties", str(props)))
    assert "sluice.input: source: Field required" in line
