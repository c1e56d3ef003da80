"""The `sluice` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from devkit import samples


def sluice(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args], input=stdin, capture_output=True, timeout=120
    )


def summary(proc: subprocess.CompletedProcess[bytes]) -> dict:
    return orjson.loads(proc.stderr.strip().splitlines()[-1])


def test_parse_iot_from_stdin_splits_valid_and_dead_letters():
    # GIVEN two good readings and one bad line on stdin
    stdin = b'{"deviceId": "a", "ts": 1700000000, "t": 1}\n{broken\n{"device_id": "b", "event_time": 1700000000}\n'
    # WHEN parsed
    proc = sluice("parse", "iot", stdin=stdin)
    # THEN exit 0, two JSON lines on stdout, one dead letter then the summary on stderr
    assert proc.returncode == 0
    out = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert [r["device_id"] for r in out] == ["a", "b"]
    err = proc.stderr.strip().splitlines()
    assert orjson.loads(err[0])["error_type"] == "invalid_json"
    assert summary(proc) == {"valid": 2, "rejected": 1, "skipped": 0, "dead_letters": 1}


def test_parse_weblog_gzip_file_with_dead_letter_file(tmp_path: Path):
    lines = list(samples.access_log_lines(300, bad_ratio=0.05))
    log = tmp_path / "access.log.gz"
    log.write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
    dead = tmp_path / "dead.ndjson"
    proc = sluice("parse", "weblog", str(log), "--dead-letters", str(dead), "--no-filters")
    assert proc.returncode == 0, proc.stderr
    valid = proc.stdout.splitlines()
    letters = dead.read_bytes().splitlines()
    blank = sum(1 for line in lines if not line.strip())
    assert len(valid) + len(letters) + blank == len(lines)
    assert summary(proc) == {
        "valid": len(valid), "rejected": len(letters), "skipped": blank, "dead_letters": len(letters)
    }  # fmt: skip
    assert letters and all(orjson.loads(d)["source"] == "weblog" for d in letters)


def test_parse_weblog_applies_default_filters_and_reports_them(tmp_path: Path):
    log = tmp_path / "a.log"
    log.write_text(
        '1.2.3.4 - - [26/Nov/2026:12:00:00 +0000] "GET /healthz HTTP/1.1" 200 2 "-" "kube-probe/1.29"\n'
        '1.2.3.4 - - [26/Nov/2026:12:00:01 +0000] "GET / HTTP/1.1" 200 2 "-" "Googlebot/2.1"\n'
    )
    proc = sluice("parse", "weblog", str(log))
    [kept] = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert kept["flags"] == ["bot"]
    assert summary(proc) == {
        "valid": 1, "rejected": 0, "skipped": 0, "dead_letters": 0,
        "filtered": {"health_checks": 1},
    }  # fmt: skip


def test_parse_weblog_custom_format():
    line = b'2026-11-26T12:00:00+00:00 10.0.0.1 "GET /x?y=1 HTTP/1.1" 204 0.012\n'
    proc = sluice(
        "parse",
        "weblog",
        "--log-format",
        '$time_iso8601 $remote_addr "$request" $status $request_time',
        stdin=line,
    )
    [record] = [orjson.loads(x) for x in proc.stdout.splitlines()]
    assert (record["path"], record["query"], record["status"], record["request_time"]) == (
        "/x",
        "y=1",
        204,
        0.012,
    )


def test_parse_feed_usgs(tmp_path: Path):
    doc = tmp_path / "usgs.geojson"
    doc.write_bytes(samples.usgs_document(20))
    proc = sluice("parse", "feed", str(doc), "--feed", "usgs")
    assert proc.returncode == 0
    assert summary(proc) == {"valid": 20, "rejected": 1, "skipped": 0, "dead_letters": 1}


def test_parse_iot_json_array_document(tmp_path: Path):
    doc = tmp_path / "capture.json"
    doc.write_bytes(
        orjson.dumps(
            [{"device_id": "a", "ts": 1}, [{"device_id": "b", "ts": 2}], {"ts": 3}],
            option=orjson.OPT_INDENT_2,
        )
    )
    proc = sluice("parse", "iot", str(doc))
    assert summary(proc) == {"valid": 2, "rejected": 1, "skipped": 0, "dead_letters": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("parse", "iot", "/nonexistent/file"), b"cannot read /nonexistent/file"),
        pytest.param(("parse", "weblog", "--log-format", "plain text"), b"log_format"),
        pytest.param(
            ("parse", "iot", "--geoip-db", "x.mmdb"), b"apply to 'sluice parse weblog' only"
        ),
        pytest.param(
            ("parse", "weblog", "--geoip-db", "/nonexistent/city.mmdb"), b"/nonexistent/city.mmdb"
        ),
        pytest.param(("parse", "feed", "--feed", "nope"), b"unknown feed 'nope'"),
        pytest.param(("parse", "parquet"), b"invalid choice"),
    ],
)
def test_unusable_arguments_exit_2_with_a_clear_message(args, message):
    proc = sluice(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(
            gzip.compress("\n".join(samples.access_log_lines(5000)).encode())[:20_000],
            id="truncated",
        ),
        pytest.param(b"\x1f\x8b" + b"not deflate data at all" * 10, id="garbage-after-magic"),
    ],
)
def test_corrupt_gzip_is_a_clear_error(tmp_path: Path, content: bytes):
    bad = tmp_path / "bad.log.gz"
    bad.write_bytes(content)
    proc = sluice("parse", "weblog", str(bad))
    assert (
        proc.returncode == 2 and b"cannot read" in proc.stderr and b"Traceback" not in proc.stderr
    )


def test_samples_are_deterministic():
    assert (
        sluice("samples", "iot", "--count", "50").stdout
        == sluice("samples", "iot", "--count", "50").stdout
    )
