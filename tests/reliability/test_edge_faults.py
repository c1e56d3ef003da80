"""Faults between the edge and Kinesis: throttling, partial PutRecords failures, 5xx, delays past the
read timeout, and clients retrying on 503. Nothing accepted is lost; retried copies land once.

``sluice edge serve`` (a process of its own) talks to moto only through ``faults.FaultProxy``
(``AWS_ENDPOINT_URL`` is the proxy), which fails PutRecords calls as Kinesis does: whole calls
throttled (``ProvisionedThroughputExceededException``) or answered 500, chosen entries failed with
``FailedRecordCount`` set, answers held back past the edge's 1 s read timeout (the records land,
the edge retries them: copies on the stream), and S3 answering 503 ``SlowDown`` (the dead-letter
destination down too, so the edge answers 503 with ``Retry-After`` and the client sends the body
again: the half already published lands twice on the stream). Each case runs against an edge with
KPL aggregation (the default) and one without (one Kinesis record per reading, so per-entry failures
are partial). Each case posts its own readings
(NDJSON bodies, one device id per reading) with a client that retries on 5xx and connection errors.

Then the stream is read directly (copies per reading) and so is the S3 dead-letter bucket
(``delivery_failed`` letters, whose raw is the envelope: re-drivable, not lost), and the stream job
runs over the stream: every reading the edge accepted must be one row of ``iot_readings`` or, for
the case that throttles past the retry budget, in S3; none twice in the table, however many copies
the stream holds (the job drops events whose id its tables hold).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from edges import SHORT_RETRIES, EdgeServer, aws_env, create_stack, post, run_job
from faults import FaultProxy
from kinesis_reader import read_stream
from report import FAIL, PASS, Result, measure

from infra.local.stack import client
from sluice.core.contracts import DeadLetter, Envelope

SCALES = {
    "smoke": {"requests": 1, "readings": 10},
    "short": {"requests": 3, "readings": 20},
    "full": {"requests": 25, "readings": 200},
}
READ_TIMEOUT = 1.0
MODES = (("aggregated", "true"), ("one record per reading", "false"))
"""The edge's default (KPL aggregation: a body's readings in one or a few Kinesis records, so a
failed entry is many readings) and without aggregation (one entry per reading: truly partial)."""
NDJSON = {"Content-Type": "application/x-ndjson"}

Arm = Callable[[FaultProxy], None]
CASES: list[tuple[str, str, Arm, bool]] = [
    # (case, what is injected, how, whether the outage ends after the client's first 5xx)
    ("throttled calls", "4 PutRecords calls throttled whole (HTTP 400 "
     "ProvisionedThroughputExceededException)", lambda p: p.throttle(times=4), False),
    ("partial failures", "every 3rd entry of 5 calls failed (FailedRecordCount, per-entry "
     "ProvisionedThroughputExceededException)",
     lambda p: p.fail_entries(lambda i, _: i % 3 == 0, times=5), False),
    ("server errors", "3 calls answered HTTP 500 InternalFailure",
     lambda p: p.server_error(times=3), False),
    ("delay past the read timeout", f"2 calls forwarded, answered after 2.5 s (read timeout "
     f"{READ_TIMEOUT:.0f} s): landed, then retried", lambda p: p.delay(2.5, times=2), False),
    ("503, client retries", "half the entries of every call failed and S3 down (503 SlowDown): "
     "the edge answers 503 + Retry-After; the outage ends; the client sends the body again",
     lambda p: (p.fail_entries(lambda i, _: i % 2 == 0, times=None), p.fail_s3(None)), True),
    ("past the retry budget", "every call throttled for the whole request (budget "
     f"{SHORT_RETRIES['SLUICE_RETRY_BUDGET_SECONDS']} s): delivery_failed letters to S3",
     lambda p: p.throttle(times=None), False),
]  # fmt: skip


def _body(tag: str, request: int, readings: int, stamp: str) -> tuple[bytes, list[str]]:
    devices = [f"{tag}-{request}-{n}" for n in range(readings)]
    lines = [json.dumps({"deviceId": d, "ts": stamp, "t": float(n), "messageId": f"m{n}"})
             for n, d in enumerate(devices)]  # fmt: skip
    return "\n".join(lines).encode(), devices


def _send(
    url: str, body: bytes, proxy: FaultProxy, outage_ends: bool, attempts: int = 6
) -> tuple[int, int, dict[str, int]]:
    """POST with retries on 5xx and connection errors (waiting Retry-After, 1 s); (last status,
    posts made, statuses seen)."""
    seen: Counter[str] = Counter()
    status = 0
    for attempt in range(1, attempts + 1):
        status, _ = post(url, "/iot", body, NDJSON, timeout=30)
        seen[str(status)] += 1
        if 0 < status < 500:
            return status, attempt, dict(seen)
        if outage_ends:
            proxy.clear()
        time.sleep(1.0)
    return status, attempts, dict(seen)


def _s3_devices(env: dict[str, str], bucket: str) -> Counter[str]:
    """Device ids of the readings in ``delivery_failed`` letters in the dead-letter bucket."""
    s3 = client("s3", env)
    found: Counter[str] = Counter()
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        text = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for line in text.splitlines():
            letter = DeadLetter.model_validate_json(line)
            envelope = Envelope.model_validate_json(letter.raw)
            if envelope.kind == "record":
                found[envelope.payload["device_id"]] += 1
    return found


def test_faults_between_the_edge_and_kinesis_lose_nothing(
    moto_endpoint: str, tmp_path: Path, scale: str
) -> None:
    size = SCALES[scale]
    # smoke (make test): per-entry failures are partial only without aggregation; the aggregated
    # default is what the poison and load scenarios' edge servers run
    modes = MODES[1:] if scale == "smoke" else MODES
    result = Result("edge_faults", "Edge faults: throttling and partial PutRecords failures")
    with measure(result):
        direct = aws_env(moto_endpoint)
        stream, bucket = create_stack(direct)
        proxy = FaultProxy(moto_endpoint)
        stamp = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        run = uuid.uuid4().hex[:6]
        outcomes: dict[str, tuple[list[str], list[str], dict[str, int], int, int]] = {}
        try:
            for mode, aggregation in modes:
                edge_env = {**aws_env(proxy.url), **SHORT_RETRIES,
                            "SLUICE_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
                            "SLUICE_CONNECT_TIMEOUT_SECONDS": "1",
                            "SLUICE_AGGREGATION": aggregation}  # fmt: skip
                log = tmp_path / f"edge-{aggregation}.log"
                edge = EdgeServer(edge_env, stream, bucket, log).start()
                try:
                    for number, (case, _, arm, outage_ends) in enumerate(CASES):
                        accepted: list[str] = []
                        refused: list[str] = []
                        statuses: Counter[str] = Counter()
                        posts, calls_before = 0, len(proxy.calls)
                        tag = f"{aggregation}{number}-{run}"
                        for request in range(size["requests"]):
                            body, devices = _body(tag, request, size["readings"], stamp)
                            arm(proxy)
                            status, made, seen = _send(edge.url, body, proxy, outage_ends)
                            proxy.clear()
                            posts += made
                            statuses.update(seen)
                            (accepted if status == 202 else refused).extend(devices)
                        outcomes[f"{mode}: {case}"] = (accepted, refused, dict(statuses), posts,
                                                      len(proxy.calls) - calls_before)  # fmt: skip
                finally:
                    proxy.clear()
                    edge.stop()
        finally:
            proxy.close()
        on_stream = Counter(
            e.payload.get("device_id")
            for e in read_stream(client("kinesis", direct), stream).records()
        )
        in_s3 = _s3_devices(direct, bucket)
        job = run_job(direct, stream, tmp_path, timeout=900)
        rows = job.ids("iot_readings", "device_id")
        for (mode, aggregation), (case, injected, _, _) in itertools.product(modes, CASES):
            name = f"{mode}: {case}"
            accepted, refused, statuses, posts, calls = outcomes[name]
            landed = sum(1 for d in accepted if rows[d] or in_s3[d])
            lost = len(accepted) - landed
            twice = sum(rows[d] - 1 for d in accepted if rows[d] > 1)
            copies = sum(max(0, on_stream[d] - 1) for d in accepted)
            parked = sum(1 for d in accepted if in_s3[d] and not rows[d])
            problem = []
            if refused:
                problem.append(f"{len(refused)} readings never accepted (last answers {statuses})")
            if lost or twice:
                problem.append(f"{lost} lost, {twice} twice in the table")
            if case == "past the retry budget" and not parked:
                problem.append("nothing went to the dead-letter bucket")
            bites = case == "delay past the read timeout" or (
                case == "503, client retries" and aggregation == "false"
            )
            if bites and not copies:
                problem.append("no copies on the stream: the fault did not bite")
            result.check(
                name, injected, events_in=len(accepted), events_out=landed, lost=lost,
                duplicated=twice, verdict=FAIL if problem else PASS,
                detail="; ".join(problem) or (
                    f"{posts} POSTs (answers {statuses}), {calls} PutRecords calls; "
                    f"{copies} extra copies on the stream, each reading one row"
                    + (f"; {parked} parked in S3 as delivery_failed (re-drivable)" if parked else "")
                ),
            )  # fmt: skip
        result.check(
            "the job", "the stream of all the cases above", verdict=PASS if job.code == 0 and not
            job.tracebacks else FAIL, detail=f"exit {job.code} after {job.seconds:.0f} s, "
            f"{job.tracebacks} tracebacks",
        )  # fmt: skip
        result.metrics["readings posted"] = sum(len(o[0]) + len(o[1]) for o in outcomes.values())
        result.metrics["copies on the stream beyond the first"] = sum(
            max(0, n - 1) for n in on_stream.values()
        )
    assert result.overall() == PASS, [c for c in result.checks if c.verdict != PASS]
