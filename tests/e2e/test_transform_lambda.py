"""The transform Lambda against the Beam job: the same pre-filled stream, the same six tables.

The stream lives on the session's moto server (``aws_env``). The reference is the Beam job
(``sluice job run``, FnApiRunner) over the stream; the Lambda path is the real handler
(``edge_lambdas.stream_transform.handler``) called with Kinesis events built from the records
GetRecords returns (``lambda_testkit``), batch after batch per shard as a mapping delivers them,
including a timeout in the middle of a commit (then the batch again, in halves, as
BisectBatchOnFunctionError does) and a response lost after a commit (the same batch again).
Then every table is compared with the job's, row by row and window by window.

Runtime: about 25 s (two job runs, the handler's invocations, two handler processes).
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from job_testkit import (
    TABLE_NAMES,
    committed_positions,
    difference_from_reference,
    mixed_input,
    read_tables,
    window_of,
)
from kinesis_testkit import create_stream, put_aggregated, put_records
from lambda_testkit import SimulatedTimeout, deliver, shard_events
from pyiceberg.table import Table

from edge_lambdas.shared.events import LocalContext
from sluice.core.contracts import ErrorType

JobRunner = Callable[[list[str]], dict[str, int]]
BATCH_SIZE = 9
"""Kinesis records per event (the mapping's BatchSize): several invocations per shard."""
_PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"


def _fill(kinesis: Any) -> str:
    """A 2-shard stream holding every kind of input, half of it KPL-aggregated (10 per record)."""
    stream = create_stream(kinesis, shard_count=2)
    start = window_of(datetime.now(UTC)) - timedelta(minutes=3)
    sent = mixed_input(
        random.Random(20261201),
        start,
        span_seconds=180,
        devices=4,
        readings=120,
        requests=90,
        feed_items=4,
        too_late=2,
        invalid=1,
        edge_dead_letters=2,
    )
    late = [s for s in sent if s.error_type == ErrorType.TOO_LATE]
    others = [s for s in sent if s.error_type != ErrorType.TOO_LATE]
    random.Random(2).shuffle(others)
    aggregated, plain = others[: len(others) // 2], others[len(others) // 2 :] + late
    put_aggregated(kinesis, stream, [s.user_record() for s in aggregated], 10)
    put_records(kinesis, stream, [(s.partition_key, s.data) for s in plain])
    return stream


def _reference(run_job: JobRunner, stream: str, state: Path, geoip: tuple[Path, Path]) -> None:
    run_job([
        "--stream_name", stream,
        "--stop_when_idle_seconds", "2",
        "--commit_interval_seconds", "1",
        "--state_dir", str(state),
        "--geoip_city_db", str(geoip[0]),
        "--geoip_asn_db", str(geoip[1]),
    ])  # fmt: skip


def _lambda_env(stream: str, state: Path, geoip: tuple[Path, Path]) -> dict[str, str]:
    return {
        "SLUICE_STREAM_NAME": stream,
        "SLUICE_STATE_DIR": str(state),
        "SLUICE_DEPLOYMENT_ID": "lambda-test-1",
        "SLUICE_GEOIP_CITY_DB": str(geoip[0]),
        "SLUICE_GEOIP_ASN_DB": str(geoip[1]),
        "POWERTOOLS_METRICS_NAMESPACE": "Sluice",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


@pytest.fixture
def load_transform(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[dict[str, str]], ModuleType]]:
    """Import the handler afresh (a cold start) with ``env``; the process's GC is put back after."""
    thresholds = gc.get_threshold()

    def load(env: dict[str, str]) -> ModuleType:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        sys.modules.pop("edge_lambdas.stream_transform.handler", None)
        import edge_lambdas.stream_transform.handler as handler

        return handler

    yield load
    module = sys.modules.pop("edge_lambdas.stream_transform.handler", None)
    if module is not None:
        module.committer.close()
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def _differences(state: Path, reference: Path) -> dict[str, str]:
    mine, theirs = read_tables(state), read_tables(reference)
    out = {}
    for name in TABLE_NAMES:
        problem = difference_from_reference(name, mine[name], theirs[name], 0, 0)
        if problem:
            out[name] = problem
    return out


def test_the_lambda_path_writes_what_the_job_writes_through_timeouts_and_redelivery(
    aws_env: str,
    tmp_path: Path,
    geoip_dbs: tuple[Path, Path],
    run_job: JobRunner,
    load_transform: Callable[[dict[str, str]], ModuleType],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a pre-filled 2-shard stream, and the tables the Beam job makes of it
    kinesis = boto3.client("kinesis", endpoint_url=aws_env)
    stream = _fill(kinesis)
    _reference(run_job, stream, tmp_path / "job", geoip_dbs)
    events = shard_events(kinesis, stream, BATCH_SIZE)
    assert all(len(records) > 3 * BATCH_SIZE for records in events.values())
    handler = load_transform(_lambda_env(stream, tmp_path / "lambda", geoip_dbs))
    # AND the function is stopped once in the middle of a commit, at its third commit of IoT
    # readings: after the window tables committed, before the event tables
    appends = {"iot_readings": 0}
    original_append = Table.append

    def append_then_time_out(self: Table, rows: Any, *args: Any, **kwargs: Any) -> None:
        if self.name()[-1] == "iot_readings" and rows.num_rows:
            appends["iot_readings"] += 1
            if appends["iot_readings"] == 3:
                raise SimulatedTimeout("the function timed out mid-commit")
        original_append(self, rows, *args, **kwargs)

    monkeypatch.setattr(Table, "append", append_then_time_out)
    context = LocalContext("sluice-transform")

    # WHEN the mapping delivers each shard's records, BATCH_SIZE per invocation, one shard after
    # the other, a response lost after the second batch of each shard (the batch again)
    deliveries = {
        shard: deliver(handler.lambda_handler, context, records, BATCH_SIZE, redeliver_after=[1])
        for shard, records in events.items()
    }

    # THEN the timeout happened, and the batch was delivered again in halves
    assert sum(d.timeouts for d in deliveries.values()) == 1, appends
    assert any(size < BATCH_SIZE for d in deliveries.values() for size in d.batches[2:])
    # AND every table holds exactly what the job's does, and the same positions
    assert _differences(tmp_path / "lambda", tmp_path / "job") == {}
    positions = committed_positions(tmp_path / "lambda")
    assert positions["iot_readings"] == committed_positions(tmp_path / "job")["iot_readings"]
    # AND delivering everything once more (a mapping started again at the trim horizon) adds
    # nothing: every record is at or before its shard's committed position
    monkeypatch.setattr(Table, "append", original_append)
    for records in events.values():
        again = deliver(handler.lambda_handler, context, records, BATCH_SIZE)
        assert again.item_failures == again.timeouts == 0
    assert _differences(tmp_path / "lambda", tmp_path / "job") == {}


def test_two_shards_in_concurrent_invocations_lose_and_duplicate_nothing(
    aws_env: str, tmp_path: Path, geoip_dbs: tuple[Path, Path], run_job: JobRunner
) -> None:
    # GIVEN a pre-filled 2-shard stream, and the tables the Beam job makes of it
    kinesis = boto3.client("kinesis", endpoint_url=aws_env)
    stream = _fill(kinesis)
    _reference(run_job, stream, tmp_path / "job", geoip_dbs)
    events = shard_events(kinesis, stream, BATCH_SIZE)

    # WHEN each shard is delivered to an execution environment of its own (a process), both at once
    env = {**os.environ, **_lambda_env(stream, tmp_path / "lambda", geoip_dbs)}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, str(_PIPELINE)])
    processes = []
    for shard, records in events.items():
        path = tmp_path / f"{shard}.json"
        path.write_text(json.dumps(records))
        out = tmp_path / f"{shard}.out.json"
        command = [sys.executable, str(_PIPELINE / "lambda_testkit.py"), str(path), "4", str(out)]
        log = (tmp_path / f"{shard}.log").open("wb")
        processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=log), out, shard))
    for process, _, shard in processes:
        assert process.wait(timeout=120) == 0, (tmp_path / f"{shard}.log").read_text()[-3000:]
    reports = [json.loads(out.read_text()) for _, out, _ in processes]

    # THEN the tables hold exactly what the job's do. The two commit to the same tables at once:
    # the writer retries a lost race, and a batch whose retries all lose (CommitFailedException)
    # is a batch item failure the mapping delivers again, which is how that case is meant to end.
    assert all(r["timeouts"] == 0 for r in reports), reports
    assert sum(r["invocations"] for r in reports) >= sum(len(v) for v in events.values()) / 4
    assert _differences(tmp_path / "lambda", tmp_path / "job") == {}
