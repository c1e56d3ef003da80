"""``sluice parse feed --feed-spec FEEDS_FILE --feed NAME``, ``SLUICE_FEEDS_FILE``, and
``missing_metrics`` in the IoT summary, run as a user runs them (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "feeds.example.yaml"
FORECAST = {
    "latitude": 52.52,
    "longitude": 13.42,
    "hourly": {"time": ["2026-11-30T00:00", "2026-11-30T01:00"], "temperature_2m": [1.5, 1.1]},
}


def sluice(*args: str, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def lines(data: bytes) -> list[dict]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def test_parse_a_feed_described_in_a_feeds_file(tmp_path: Path) -> None:
    document = tmp_path / "forecast.json"
    document.write_bytes(orjson.dumps(FORECAST))
    proc = sluice(
        "parse", "feed", str(document), "--feed-spec", str(EXAMPLES), "--feed", "open_meteo_berlin"
    )
    assert proc.returncode == 0, proc.stderr
    items = lines(proc.stdout)
    assert [i["fields"]["temperature_c"] for i in items] == [1.5, 1.1]
    assert {i["feed"] for i in items} == {"open_meteo_berlin"}
    assert orjson.loads(proc.stderr.splitlines()[-1]) == {
        "valid": 2,
        "rejected": 0,
        "skipped": 0,
        "dead_letters": 0,
    }


def test_a_document_not_matching_the_spec_is_a_dead_letter() -> None:
    proc = sluice(
        "parse", "feed", "-", "--feed-spec", str(EXAMPLES), "--feed", "open_meteo_berlin",
        stdin=b'{"latitude": 1}',
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    *letters, last = proc.stderr.splitlines()
    (letter,) = lines(b"\n".join(letters))
    assert "no object of arrays at 'hourly'" in letter["message"]
    assert letter["raw"] == '{"latitude": 1}'
    assert orjson.loads(last) == {"valid": 0, "rejected": 1, "skipped": 0, "dead_letters": 1}


def test_a_feed_configured_for_the_poller_can_be_tried_by_name() -> None:
    proc = sluice(
        "parse", "feed", "-", "--feed", "github_status",
        stdin=b'{"page": {"id": "p1", "updated_at": "2026-11-30T10:00:00Z"}, "status": {}}',
        SLUICE_FEEDS_FILE=str(EXAMPLES),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (item,) = lines(proc.stdout)
    assert item["feed"] == "github_status" and item["event_time"] == "2026-11-30T10:00:00Z"


@pytest.mark.parametrize(
    ("args", "file_text", "message"),
    [
        pytest.param(["--feed", "nope"], None, "no feed 'nope' in feeds file", id="unknown-feed"),
        pytest.param([], None, "has 3 feeds; name one with --feed", id="no-name"),
        pytest.param([], "feeds:\n  - name: a\n    time_field: t\n", "feeds.0: Value error, give exactly one of id_field and id_fields", id="malformed"),
        pytest.param([], "feeds:\n  - name: a\n    id_field: i\n    time_field: t\n    time_format: epoch_us\n", "feeds.0.time_format", id="bad-time-format"),
    ],
)  # fmt: skip
def test_bad_feed_specs_are_one_line_exit_2(
    tmp_path: Path, args: list[str], file_text: str | None, message: str
) -> None:
    spec = EXAMPLES
    if file_text is not None:
        spec = tmp_path / "feeds.yaml"
        spec.write_text(file_text)
    proc = sluice("parse", "feed", "-", "--feed-spec", str(spec), *args, stdin=b"{}")
    assert proc.returncode == 2
    err = proc.stderr.decode().strip()
    assert "\n" not in err and message in err, err


def test_feed_spec_belongs_to_parse_feed() -> None:
    proc = sluice("parse", "iot", "-", "--feed-spec", str(EXAMPLES), stdin=b"")
    assert proc.returncode == 2 and b"apply to 'sluice parse feed' only" in proc.stderr


def test_iot_summary_counts_missing_metrics() -> None:
    body = b'{"deviceId": "d", "ts": 1796126400000, "co": -200, "t": 4}\n'
    proc = sluice("parse", "iot", "-", stdin=body, SLUICE_IOT_SENTINELS="[-200]")
    assert proc.returncode == 0, proc.stderr
    (reading,) = lines(proc.stdout)
    assert reading["metrics"] == {"t": 4.0}
    assert orjson.loads(proc.stderr.splitlines()[-1]) == {
        "valid": 1, "rejected": 0, "skipped": 0, "dead_letters": 0, "missing_metrics": 1,
    }  # fmt: skip
