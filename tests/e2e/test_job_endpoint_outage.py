"""The stream job against a Kinesis endpoint that goes away: it retries with backoff, then stops with
one line on stderr and exit 2 (no traceback, no hang), and what it committed before is whole.

A moto server in a process of its own (``infra.local.stack.LocalAws``) serves the stream; the job
(``python -m sluice job run``, a process) reads it and commits once; then the server is killed with
SIGKILL and not restarted. The reader's bounded retries (``max_retries`` 8, backoff 0.1 s doubling to
5 s, full jitter) end the job. The reliability suite (``tests/reliability/test_endpoint_restart.py``)
does the same at scale, with pauses, restarts and re-runs compared with an uninterrupted run.

Runtime: about 10 s (job start-up ~3 s, the retries ~5-8 s).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from job_testkit import Job, is_log_record, mixed_input, produce, read_tables, wait_until, window_of

from infra.local.stack import LocalAws, client

STREAM = "sluice-outage-test"


def test_the_job_retries_then_stops_with_one_line_when_the_endpoint_goes_away(
    local_aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN a stream with 300 readings and 100 web requests, and the job reading it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}
    env.update(local_aws.env)
    kinesis = client("kinesis", local_aws.env)
    kinesis.create_stream(StreamName=STREAM, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.2})
    start = window_of(datetime.now(UTC)) - timedelta(minutes=3)
    sent = mixed_input(random.Random(13), start, span_seconds=120, devices=5, readings=300,
                       requests=100)  # fmt: skip
    produce(local_aws.env, STREAM, [sent], 0, [])
    log = tmp_path / "job.log"
    job = Job(env, tmp_path / "state", log, stream=STREAM, stop_when_idle_seconds=60).start()
    assert job.process is not None
    wait_until(lambda: job.commits_logged() > 0, 60, "the first commit", poll=0.05)
    # WHEN the endpoint goes away for good
    assert local_aws.process is not None
    local_aws.process.send_signal(signal.SIGKILL)
    local_aws.process.wait(10)
    killed = time.monotonic()
    # THEN the job stops by itself, exit 2, within its bounded retries
    code = job.process.wait(90)
    seconds = time.monotonic() - killed
    text = log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == 2, text[-2000:]
    assert seconds < 60, f"stopped {seconds:.0f} s after the endpoint went away"
    # AND says why in one line: no traceback, every other line a log record
    assert "Traceback" not in text
    problem = [line for line in lines if not is_log_record(line)]
    assert problem == [lines[-1]], lines[-5:]
    assert lines[-1].startswith("sluice: ") and "failed" in lines[-1], lines[-1]
    assert "EndpointConnectionError" in lines[-1] or "Could not connect" in lines[-1], lines[-1]
    # AND what it committed is whole: no event twice, none that was not sent
    tables = read_tables(tmp_path / "state")
    ids = Counter(row["event_id"] for row in tables["iot_readings"])
    sent_ids = {s.event_id for s in sent if s.lands_in == "iot_readings"}
    assert ids and max(ids.values()) == 1 and set(ids) <= sent_ids
