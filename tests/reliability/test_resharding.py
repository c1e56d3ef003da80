"""Resharding while data flows: split and merge under a producer of keyed sequences; nothing lost,
per-partition-key order kept.

A producer thread puts rounds of IoT reading envelopes, one per device (the partition key) per
round, each reading numbered in its device's sequence, as plain Kinesis records (one reading each,
so per-key order is visible on the stream). While it puts, the stream is resharded four times: shard
0 split, the upper child merged with shard 1, that child split, the lower half merged with the first
split's lower child. moto's own SplitShard/MergeShards re-put records into the wrong shards (see
``kinesis_testkit``), so ``split_shard_like_kinesis`` / ``merge_shards_like_kinesis`` reshard as
Kinesis does in the moto backend that the session's ``ThreadedMotoServer`` serves; every read still
goes over HTTP.

Two readers run meanwhile, from the stream's start:
- the stream job (``python -m sluice job run``, a process): every reading must be one row of
  ``iot_readings`` (nothing lost, nothing twice) and every window of ``iot_metrics_1m`` must count
  exactly what was put;
- the job's Kinesis source (``ReadFromKinesis``) in this process, into a collecting sink: every
  record once, and each device's readings in the order they were put (parents read before children).
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from job_testkit import Job, Sent, expect, iot_window_values, read_tables, reading, window_of
from kinesis_testkit import (
    background,
    merge_shards_like_kinesis,
    put_records,
    run_read,
    split_shard_like_kinesis,
)
from report import FAIL, PASS, Result, measure

from infra.local.stack import client
from sluice.stream.kinesis.positions import StartPosition

SCALES = {
    "smoke": {"devices": 10, "rounds": 25},
    "short": {"devices": 30, "rounds": 60},
    "full": {"devices": 100, "rounds": 500},
}
SEED = 20260313


def test_split_and_merge_while_a_producer_puts(aws_env: str, tmp_path: Path, scale: str) -> None:
    size = SCALES[scale]
    result = Result("resharding", "Resharding while data flows")
    rng = random.Random(SEED)
    env = {
        "AWS_ENDPOINT_URL": aws_env, "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }  # fmt: skip
    with measure(result):
        stream = f"sluice-reshard-{uuid.uuid4().hex[:8]}"
        kinesis = client("kinesis", env)
        kinesis.create_stream(StreamName=stream, ShardCount=2)
        kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
        start = window_of(datetime.now(UTC)) - timedelta(minutes=4)
        devices = [f"reshard-{d:03d}" for d in range(size["devices"])]
        rounds = [
            [reading(device, start + timedelta(seconds=rng.uniform(0, 240)), n, seq=float(n))
             for device in devices]
            for n in range(size["rounds"])
        ]  # fmt: skip
        sent: list[Sent] = [s for r in rounds for s in r]
        reshards: list[str] = []

        def produce() -> None:
            fifth = len(rounds) // 5
            for number, entries in enumerate(rounds):
                put_records(kinesis, stream, [(s.partition_key, s.data) for s in entries])
                if number == fifth:
                    low, high = split_shard_like_kinesis(stream, "shardId-000000000000")
                    reshards.append(f"split shard 0 into {low[-1]}, {high[-1]}")
                elif number == 2 * fifth:
                    merged = merge_shards_like_kinesis(stream, high, "shardId-000000000001")
                    reshards.append(f"merged {high[-1]} + 1 into {merged[-1]}")
                elif number == 3 * fifth:
                    left, right = split_shard_like_kinesis(stream, merged)
                    reshards.append(f"split {merged[-1]} into {left[-1]}, {right[-1]}")
                elif number == 4 * fifth:
                    last = merge_shards_like_kinesis(stream, low, left)
                    reshards.append(f"merged {low[-1]} + {left[-1]} into {last[-1]}")
                time.sleep(0.05)

        job_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}
        job_env.update(env)
        job = Job(job_env, tmp_path / "state", tmp_path / "job.log", ["--max_records_per_call",
                  "50"], stream=stream, stop_when_idle_seconds=12).start()  # fmt: skip
        join = background(produce)
        run = run_read(
            stream_name=stream, start=StartPosition(), stop_when_idle_seconds=4.0,
            discovery_interval_seconds=1.0, max_records_per_call=100, timeout_seconds=900,
        )  # fmt: skip
        join()
        job.wait(900)
        injected = f"{len(reshards)} reshards while putting: {'; '.join(reshards)}"

        # the job's tables: every reading once, every window exact
        tables = read_tables(tmp_path / "state")
        ids = Counter(row["event_id"] for row in tables["iot_readings"])
        expected = expect(sent)
        lost = sum(1 for i in expected.event_ids["iot_readings"] if i not in ids)
        twice = sum(n - 1 for n in ids.values() if n > 1)
        result.check(
            "job: iot_readings", injected, events_in=len(sent), events_out=sum(ids.values()),
            lost=lost, duplicated=twice, verdict=FAIL if lost or twice else PASS,
            detail="every reading once" if not (lost or twice) else f"{lost} lost, {twice} twice",
        )  # fmt: skip
        windows = iot_window_values(tables["iot_metrics_1m"])
        wanted = {k: v[0] for k, v in expected.iot_windows.items()}
        wrong = [k for k in wanted.keys() | windows.keys()
                 if wanted.get(k) != (windows[k][0] if k in windows else None)]  # fmt: skip
        result.check(
            "job: iot_metrics_1m", "(same run)", events_in=sum(wanted.values()),
            events_out=sum(v[0] for v in windows.values()),
            verdict=FAIL if wrong else PASS,
            detail=f"{len(windows)} windows, counts exact" if not wrong
            else f"{len(wrong)} windows differ, e.g. {sorted(wrong)[0]}",
        )  # fmt: skip

        # the Kinesis source: each record once, per key in put order, parents before children
        numbers: dict[str, list[int]] = {}
        for record in run.records():
            payload: dict[str, Any] = json.loads(record.data)["payload"]
            numbers.setdefault(payload["device_id"], []).append(int(payload["metrics"]["seq"]))
        out_of_order = [d for d, ns in numbers.items() if ns != sorted(ns)]
        read = sum(len(ns) for ns in numbers.values())
        distinct = sum(len(set(ns)) for ns in numbers.values())
        result.check(
            "source: per-key order", "(same stream, read meanwhile by ReadFromKinesis)",
            events_in=len(sent), events_out=read, lost=len(sent) - distinct,
            duplicated=read - distinct,
            verdict=FAIL if out_of_order or read != len(sent) or distinct != read else PASS,
            detail=(f"{len(numbers)} keys, each in put order, over {len(run.by_shard())} shards"
                    if not out_of_order else f"{len(out_of_order)} keys out of order, e.g. "
                    f"{out_of_order[0]}: {numbers[out_of_order[0]][:20]}"),
        )  # fmt: skip
        result.metrics.update(
            {
                "readings put (one Kinesis record each)": len(sent),
                "partition keys": len(devices),
                "shards read by the source": len(run.by_shard()),
                "source read time (s)": round(run.seconds, 1),
            }
        )
    assert result.overall() == PASS, [c for c in result.checks if c.verdict != PASS]
