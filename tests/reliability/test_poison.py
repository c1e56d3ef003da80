"""Poison records in every source: each is answered (never 5xx), dead-lettered with a reason, and the
pipeline keeps going (the job ends normally and every good record sent after the poison lands).

IoT and web-log poison go through ``sluice edge serve`` (a process of its own) over HTTP; each IoT
poison body also carries one good reading, which must land. Poison the edges cannot produce (an
envelope of each source whose event time is at the end of year 9999) is put on the stream directly,
as a buggy or hostile producer would. Then good readings and log lines follow, and the job runs.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from edges import EdgeServer, aws_env, create_stack, post, run_job
from report import FAIL, PASS, Result, measure

from infra.local.stack import client

NOW = datetime.now(UTC).replace(microsecond=0)
STAMP = NOW.isoformat().replace("+00:00", "Z")
CLF = NOW.strftime("%d/%b/%Y:%H:%M:%S +0000")


def _set_the_clock() -> None:
    """Event times of the good records: now, when the test runs. (Set at import they were stale by
    the time a long session reached this test: readings arriving more than the allowed lateness after
    their window are too_late, so the good ones went missing in a full run.)"""
    global NOW, STAMP, CLF
    NOW = datetime.now(UTC).replace(microsecond=0)
    STAMP = NOW.isoformat().replace("+00:00", "Z")
    CLF = NOW.strftime("%d/%b/%Y:%H:%M:%S +0000")


JSON = {"Content-Type": "application/json"}


def _good(tag: str) -> bytes:
    return json.dumps({"deviceId": f"good-{tag}", "ts": STAMP, "t": 1.5}).encode()


def _line(when: str, ip: str = "10.1.2.3", path: str = "/x") -> bytes:
    return f'{ip} - - [{when}] "GET {path} HTTP/1.1" 200 512 "-" "curl/8"'.encode()


def iot_cases() -> list[tuple[str, bytes, dict[str, str], bool]]:
    """(name, body, headers, whether the body also carries a good reading)."""
    nl = b"\n"
    return [
        ("far-future time (9999-12-31)", b'{"deviceId":"x","ts":"9999-12-31T23:59:59Z","t":1}' + nl + _good("9999"), JSON, True),
        ("offset before year 1", b'{"deviceId":"x","ts":"0001-01-01T00:00:00+14:00","t":1}' + nl + _good("y1"), JSON, True),
        ("offset past year 9999", b'{"deviceId":"x","ts":"9999-12-31T23:59:59-14:00","t":1}' + nl + _good("y9"), JSON, True),
        ("epoch seconds of 9999", b'{"deviceId":"x","ts":253402300799,"t":1}' + nl + _good("ep"), JSON, True),
        ("deep nesting (300)", b'{"deviceId":"x","ts":"' + STAMP.encode() + b'","t":' + b"[" * 300 + b"1" + b"]" * 300 + b"}" + nl + _good("deep"), JSON, True),
        ("deep array body (1023)", b"[" * 1023 + b"]" * 1023, JSON, False),
        ("NUL in device id", b'{"deviceId":"x\\u0000y","ts":"' + STAMP.encode() + b'","t":1}' + nl + _good("nul"), JSON, True),
        ("huge number (4000 digits)", b'{"deviceId":"x","ts":"' + STAMP.encode() + b'","t":' + b"9" * 4000 + b"}" + nl + _good("huge"), JSON, True),
        ("1e999", b'{"deviceId":"x","ts":"' + STAMP.encode() + b'","t":1e999}' + nl + _good("inf"), JSON, True),
        ("invalid UTF-8", b'{"deviceId":"\xff\xfe","ts":"' + STAMP.encode() + b'","t":1}' + nl + _good("utf"), JSON, True),
        ("blank lines around a reading", nl * 1000 + _good("blank") + nl * 1000, JSON, True),
        ("1 MiB of '1\\n'", b"1\n" * (1 << 19), JSON, False),
        ("gzip bomb (1 GiB of zeros)", _bomb(), {**JSON, "Content-Encoding": "gzip"}, False),
    ]  # fmt: skip


def log_cases() -> list[tuple[str, bytes, dict[str, str]]]:
    nl = b"\n"
    good = _line(CLF, path="/good-log")
    return [
        ("log line dated 31/Dec/9999", _line("31/Dec/9999:23:59:59 +0000") + nl + good, {}),
        ("log line: year 1 with +1400", _line("01/Jan/0001:00:00:00 +1400") + nl + good, {}),
        ("NUL in client IP", _line(CLF, ip="10.1.2.3\x00") + nl + good, {}),
        ("invalid UTF-8 line", _line(CLF, path="/\xff".encode("latin-1").decode("latin-1")) .replace(b"/\xc3\xbf", b"/\xff") + nl + good, {}),
        ("blank lines", nl * 5000 + good + nl * 5000, {}),
        ("1 MiB of '1\\n'", b"1\n" * (1 << 19), {}),
        ("gzip bomb on /logs", _bomb(), {"Content-Encoding": "gzip"}),
    ]  # fmt: skip


_BOMB: list[bytes] = []


def _bomb() -> bytes:
    if not _BOMB:
        zeros = gzip.compress(b"\0" * (64 << 20), 9)
        _BOMB.append(zeros * 16)  # 16 gzip members: 1 GiB decompressed, about 1 MiB sent
    return _BOMB[0]


def raw_stream_poison() -> list[tuple[str, str, bytes]]:
    """(name, partition key, record): envelopes a producer could put, with event time at 9999."""
    end = "9999-12-31T23:59:59Z"
    envelope = {"event_id": "", "ingest_time": STAMP, "partition_key": "poison"}
    payloads = {
        "iot": {"device_id": "poison-iot", "event_time": end, "metrics": {"t": 1.0}},
        "weblog": {"client_ip": "10.0.0.1", "event_time": end, "request": "GET / HTTP/1.1",
                   "method": "GET", "path": "/poison", "protocol": "HTTP/1.1", "status": 200,
                   "bytes_sent": 1, "user_agent": "x"},
        "feed": {"feed": "usgs-earthquakes", "item_id": "poison", "event_time": end,
                 "updated_time": end, "fields": {}},
    }  # fmt: skip
    records = []
    for source, payload in payloads.items():
        body = {**envelope, "source": source, "event_id": f"poison-{source}", "payload": payload}
        records.append((f"stream envelope, {source}, event time 9999", f"poison-{source}",
                        json.dumps(body).encode()))  # fmt: skip
    records.append(("stream record nested 5000 deep", "poison-deep", b"[" * 5000 + b"]" * 5000))
    records.append(("stream record with NUL and invalid UTF-8", "poison-nul", b'{"\x00\xff":1}'))
    return records


def test_poison_records_are_dead_lettered_and_the_pipeline_keeps_going(
    moto_endpoint: str, tmp_path: Path, scale: str
) -> None:
    _set_the_clock()
    result = Result("poison", "Poison records in every source")
    good_after = {"smoke": 10, "short": 50, "full": 2_000}[scale]
    with measure(result):
        env = aws_env(moto_endpoint)
        stream, bucket = create_stack(env)
        edge = EdgeServer(env, stream, bucket, tmp_path / "edge.log").start()
        expected_good: set[str] = set()
        answers: dict[str, tuple[int, bytes]] = {}
        try:
            for name, body, headers, carries_good in iot_cases():
                answers[f"IoT: {name}"] = post(edge.url, "/iot", body, headers)
                if carries_good:
                    expected_good.add(f"good-{_good_tag(body)}")
            for name, body, headers in log_cases():
                answers[f"logs: {name}"] = post(edge.url, "/logs", body, headers)
            kinesis = client("kinesis", env)
            for name, key, data in raw_stream_poison():
                kinesis.put_record(StreamName=stream, PartitionKey=key, Data=data)
                answers[name] = (0, b"put on the stream")
            # good records after the poison: the pipeline must still take them
            run = uuid.uuid4().hex[:6]
            for n in range(good_after):
                reading = {"deviceId": f"after-{run}-{n}", "ts": STAMP, "t": float(n)}
                post(edge.url, "/iot", json.dumps(reading).encode(), JSON)
            lines = b"\n".join(_line(CLF, path=f"/after-{n}") for n in range(good_after))
            answers["logs: good lines after the poison"] = post(edge.url, "/logs", lines)
        finally:
            edge.stop()
        job = run_job(env, stream, tmp_path, timeout=600)
        devices = Counter(row["device_id"] for row in job.tables.get("iot_readings", []))
        paths = Counter(row["path"] for row in job.tables.get("web_requests", []))
        letters = Counter(row["error_type"] for row in job.tables.get("dead_letters", []))
        for case, (status, body) in answers.items():
            text = body.decode(errors="replace")[:120]
            verdict, detail = PASS, f"HTTP {status}: {text}" if status else text
            if status >= 500 or (status == 0 and not case.startswith("stream")):
                verdict, detail = FAIL, f"the edge answered {status or 'nothing'}: {text}"
            result.check(case, "one poison body" if status else "one record", verdict=verdict,
                         detail=detail)  # fmt: skip
        found = {d for d in expected_good if devices[d]}
        lost_good = sorted(expected_good - found)
        result.check(
            "good readings sent with the poison", f"{len(expected_good)} bodies mixing poison and one good reading",
            events_in=len(expected_good), events_out=len(found), lost=len(lost_good),
            verdict=FAIL if lost_good else PASS,
            detail=f"missing: {', '.join(lost_good)}" if lost_good else "all landed",
        )  # fmt: skip
        after_iot = sum(1 for d in devices if d.startswith(f"after-{run}-"))
        after_web = sum(1 for p in paths if p and p.startswith("/after-"))
        ok = job.code == 0 and not job.tracebacks
        result.check(
            "the job keeps going", "all of the above on one stream",
            events_in=2 * good_after, events_out=after_iot + after_web,
            lost=2 * good_after - after_iot - after_web,
            verdict=PASS if ok and after_iot + after_web == 2 * good_after else FAIL,
            detail=f"job exit {job.code} after {job.seconds:.0f} s, {job.tracebacks} tracebacks, "
            f"last line: {job.last_line[:200]}",
        )  # fmt: skip
        result.metrics["dead letters by reason"] = dict(sorted(letters.items()))
        result.metrics["dead letters in total"] = sum(letters.values())
    assert result.overall() == PASS, [c for c in result.checks if c.verdict != PASS]


def _good_tag(body: bytes) -> str:
    marker = b'"deviceId": "good-'
    start = body.index(marker) + len(marker)
    return body[start : body.index(b'"', start)].decode()
