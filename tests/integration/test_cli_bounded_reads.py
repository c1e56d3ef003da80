"""`sluice parse` on hostile inputs, run as a user runs it: every read is bounded while it happens.

Memory is the peak resident size of the CLI process, measured by a small parent process that runs
only it (``resource.getrusage(RUSAGE_CHILDREN)``), so no other test's children count.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
import zlib
from pathlib import Path

import orjson
import pytest

from sluice.cli import parse as parse_command
from sluice.cli.main import main as sluice_main

MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code, file=sys.stderr)
"""
MIB = 1024 * 1024


def run_measured(*args: str, cwd: Path) -> tuple[int, dict[str, object], list[dict[str, object]]]:
    """Run ``sluice *args --dead-letters``; returns the peak RSS (MiB), summary and dead letters."""
    dead = cwd / "dead.ndjson"
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", "sluice", *args,
         "--dead-letters", str(dead)],
        capture_output=True, timeout=300, cwd=cwd,
    )  # fmt: skip
    *lines, measured = proc.stderr.decode().strip().splitlines()
    peak_kib, code = (int(x) for x in measured.split())
    assert code == 0, proc.stderr.decode()[-2000:]
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    return peak_kib // 1024, orjson.loads(lines[-1]), letters


def gzip_of(path: Path, pieces: list[tuple[bytes, int]]) -> Path:
    """Write the gzip of each piece repeated so many times, streamed (never built in memory)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with path.open("wb") as out:
        for piece, times in pieces:
            for _ in range(times):
                out.write(compressor.compress(piece))
        out.write(compressor.flush())
    return path


READING = b'{"deviceId": "d1", "ts": 1764158400, "temperature": 21.5}\n'
LOG_LINE = b'203.0.113.9 - - [26/Nov/2026:12:00:00 +0000] "GET /p HTTP/1.1" 200 12 "-" "curl/8"\n'


@pytest.mark.parametrize(
    ("source", "good", "limit"),
    [
        pytest.param("iot", READING, 256 * 1024, id="iot"),
        pytest.param("weblog", LOG_LINE, 64 * 1024, id="weblog"),
    ],
)
def test_a_long_line_is_one_too_large_letter_and_costs_no_memory(
    tmp_path: Path, source: str, good: bytes, limit: int
) -> None:
    # GIVEN a gzip file: good lines, a 256 MiB line without a newline, good lines again
    path = gzip_of(tmp_path / "long.gz", [(good, 100), (b"a" * MIB, 256), (b"\n", 1), (good, 100)])
    assert path.stat().st_size < 2 * MIB

    # WHEN parsed
    peak_mib, summary, letters = run_measured("parse", source, str(path), "--no-filters",
                                              cwd=tmp_path)  # fmt: skip

    # THEN the good lines on both sides are parsed; the long line is one letter with its real size
    assert summary == {"valid": 200, "rejected": 1, "skipped": 0, "dead_letters": 1}
    (letter,) = letters
    assert letter["error_type"] == "too_large" and letter["raw_truncated"] is True
    assert letter["raw_size"] == 256 * MIB and f"line 101: {256 * MIB} bytes > {limit}" in str(
        letter["message"]
    )
    assert str(letter["raw"]).startswith("aaaa")
    # AND memory stayed far below the line's size (the whole line read at once: > 512 MiB)
    assert peak_mib < 160, f"peak RSS {peak_mib} MiB"


@pytest.mark.parametrize("source", ["iot", "weblog"])
def test_a_flood_of_blank_lines_is_no_record_and_no_dead_letter(
    tmp_path: Path, source: str
) -> None:
    # GIVEN 64 MiB of blank lines (newlines, CRLF, whitespace) around one good reading or log line
    good = READING if source == "iot" else LOG_LINE
    path = gzip_of(
        tmp_path / "blank.gz",
        [(b"\n" * MIB, 48), (b" \t\r\n" * (MIB // 4), 8), (good, 1), (b"\r\n" * (MIB // 2), 8)],
    )

    # WHEN parsed
    peak_mib, summary, letters = run_measured("parse", source, str(path), "--no-filters",
                                              cwd=tmp_path)  # fmt: skip

    # THEN only the good line counts; the blank ones are counted as skipped
    blank = 48 * MIB + 8 * (MIB // 4) + 8 * (MIB // 2)
    assert (summary, letters) == (
        {"valid": 1, "rejected": 0, "skipped": blank, "dead_letters": 0}, []
    )  # fmt: skip
    assert peak_mib < 160, f"peak RSS {peak_mib} MiB"


def test_a_json_array_document_over_the_limit_is_one_letter_read_no_further_than_the_limit(
    tmp_path: Path,
) -> None:
    # GIVEN a JSON array capture of 65 MiB (over the 64 MiB document limit), gzip-compressed
    element = READING.strip() + b","
    count = (65 * MIB) // len(element)
    path = gzip_of(tmp_path / "capture.json.gz", [(b"[", 1), (element, count), (b"{}]", 1)])

    # WHEN parsed
    peak_mib, summary, letters = run_measured("parse", "iot", str(path), cwd=tmp_path)

    # THEN one too_large letter with the real size; the document was never decoded
    assert summary == {"valid": 0, "rejected": 1, "skipped": 0, "dead_letters": 1}
    (letter,) = letters
    size = 1 + count * len(element) + 3
    assert (letter["error_type"], letter["raw_size"], letter["raw_truncated"]) == (
        "too_large", size, True
    )  # fmt: skip
    assert f"JSON array document: {size} bytes > {64 * MIB}" in str(letter["message"])
    assert peak_mib < 64 * 3 + 60, f"peak RSS {peak_mib} MiB"


def test_a_feed_document_over_the_limit_is_one_letter(tmp_path: Path) -> None:
    path = gzip_of(
        tmp_path / "feed.json.gz", [(b'{"features": [', 1), (b" " * MIB, 65), (b"]}", 1)]
    )
    peak_mib, summary, letters = run_measured("parse", "feed", str(path), cwd=tmp_path)
    assert summary == {"valid": 0, "rejected": 1, "skipped": 0, "dead_letters": 1}
    (letter,) = letters
    assert (letter["error_type"], letter["raw_size"]) == ("too_large", 16 + 65 * MIB)
    assert peak_mib < 64 * 3 + 60, f"peak RSS {peak_mib} MiB"


def parse_in_process(
    capsysbinary: pytest.CaptureFixture[bytes], *args: str
) -> tuple[dict[str, object], list[dict[str, object]]]:
    assert sluice_main(["parse", *args]) == 0
    err = capsysbinary.readouterr().err.strip().splitlines()
    return orjson.loads(err[-1]), [orjson.loads(line) for line in err[:-1]]


@pytest.fixture
def small_document_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """A 4 KiB array document limit, so the choices around it are tested on small inputs."""
    monkeypatch.setattr(parse_command, "MAX_ARRAY_DOCUMENT_BYTES", 4096)
    return 4096


def test_ndjson_whose_lines_are_arrays_is_read_as_lines_past_the_document_limit(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], small_document_limit: int
) -> None:
    line = b"[" + READING.strip() + b", " + READING.strip() + b"]\n"
    path = tmp_path / "batches.ndjson"
    path.write_bytes(b"\n" + line * (3 * small_document_limit // len(line)))
    summary, letters = parse_in_process(capsysbinary, "iot", str(path))
    assert letters == []
    valid = 2 * (3 * small_document_limit // len(line))
    assert summary == {"valid": valid, "rejected": 0, "skipped": 1, "dead_letters": 0}


def test_an_array_document_over_the_limit_is_refused_and_one_within_it_is_read(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], small_document_limit: int
) -> None:
    readings = [{"deviceId": f"d{i}", "ts": 1764158400 + i, "t": i} for i in range(200)]
    big, small = tmp_path / "big.json", tmp_path / "small.json"
    big.write_bytes(orjson.dumps(readings, option=orjson.OPT_INDENT_2))
    small.write_bytes(orjson.dumps(readings[:20], option=orjson.OPT_INDENT_2))
    assert big.stat().st_size > small_document_limit > small.stat().st_size

    summary, letters = parse_in_process(capsysbinary, "iot", str(big), str(small))

    assert summary == {"valid": 20, "rejected": 1, "skipped": 0, "dead_letters": 1}
    assert letters[0]["error_type"] == "too_large"
    assert letters[0]["raw_size"] == big.stat().st_size


def test_a_document_that_is_not_one_array_is_read_as_lines(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "two.json"
    path.write_bytes(b'[{"deviceId": "a", "ts": 1}]\n\n[{"deviceId": "b", "ts": 2}, {"ts": 3}]\n')
    summary, letters = parse_in_process(capsysbinary, "iot", str(path))
    assert summary == {"valid": 2, "rejected": 1, "skipped": 1, "dead_letters": 1}
    assert letters[0]["error_type"] == "missing_field"


def test_gzip_members_and_crlf_lines_parse_as_before(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "two-members.gz"
    path.write_bytes(gzip.compress(READING.replace(b"\n", b"\r\n")) + gzip.compress(READING * 2))
    summary, letters = parse_in_process(capsysbinary, "iot", str(path))
    assert (summary, letters) == ({"valid": 3, "rejected": 0, "skipped": 0, "dead_letters": 0}, [])


def test_the_summary_counts_rejections_past_the_cap_and_the_horizon_is_the_settings(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a cap of 5 dead letters, a 1 h horizon, a reading dated two hours ahead (inside the
    # default 1-day horizon), 40 lines that are no reading and a good reading
    monkeypatch.setenv("SLUICE_MAX_DEAD_LETTERS", "5")
    monkeypatch.setenv("SLUICE_MAX_FUTURE_SECONDS", "3600")
    ahead = int(time.time()) + 2 * 3600
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(
        b'{"deviceId": "ahead", "ts": %d, "t": 1}\n' % ahead
        + b"1\n" * 40
        + b'{"deviceId": "good", "ts": %d, "t": 1}\n' % int(time.time())
    )
    # WHEN parsed
    summary, letters = parse_in_process(capsysbinary, "iot", str(path))
    # THEN 41 rejections: 5 letters one by one, then one too_many_errors summary counting the rest
    assert summary == {"valid": 1, "rejected": 41, "skipped": 0, "dead_letters": 6}
    kinds = [letter["error_type"] for letter in letters]
    assert kinds == ["invalid_timestamp", *["schema_violation"] * 4, "too_many_errors"]
