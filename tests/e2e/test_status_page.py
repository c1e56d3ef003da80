"""``sluice status``: the figures of real tables as text, JSON, and an HTML page in headless Chromium.

GIVEN tables written by the real writer (two shards, several flushes over five minutes of ingest
time: IoT readings, access-log lines, and dead letters from the edge, the decoder and the window),
WHEN ``sluice status`` runs (in this process) or ``sluice status --serve`` serves its page (a process
of its own on a free loopback port) and Debian's Chromium renders it headless,
THEN the events per source, dead letters by reason and window totals, counted here straight from
the tables, are what the command prints and what the rendered page shows; a screenshot is saved
under the test's tmp folder. A missing or empty state folder is one line, exit 2.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.cli.main import main
from sluice.core.contracts import IotReading
from sluice.parsing.weblog import LogParser
from sluice.stream.envelopes import encode, wrap_access_log, wrap_dead_letter, wrap_reading
from sluice.stream.stages import InputRecord, decode_batch, window_batch
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
)

MINUTES = 5
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def _log_line(i: int, when: datetime, status: int) -> bytes:
    stamp = when.strftime("%d/%b/%Y:%H:%M:%S +0000")
    return (
        f'198.51.100.{i % 250} - - [{stamp}] "GET /p/{i % 3} HTTP/1.1" {status} {100 + i} '
        f'"-" "agent"'
    ).encode()


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five minutes of a run, one flush per minute, ending a few seconds ago."""
    folder = tmp_path_factory.mktemp("status") / "state"
    settings = WarehouseSettings(state_dir=folder)
    tables = ensure_tables(open_catalog(settings), settings)
    writer = ExactlyOnceWriter(tables, 60)
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(seconds=30)
    sequence = {"shardId-000": 100, "shardId-001": 100}
    parser = LogParser("combined")
    for minute in range(MINUTES):
        ingest = end - timedelta(minutes=MINUTES - 1 - minute)
        envelopes = [
            wrap_reading(
                IotReading(
                    device_id=f"d{i % 4}",
                    event_time=ingest - timedelta(seconds=1 + i),
                    metrics={"temp": 20.0 + i, "hum": 40.0},
                    message_id=f"m{minute}-{i}",
                ),
                ingest,
            )
            for i in range(3 + 2 * minute)
        ]
        lines = [_log_line(i, ingest, 500 if i % 4 == 0 else 200) for i in range(2 + minute)]
        parsed = parser.parse_batch([*lines, b"not a log line"])
        envelopes += [
            wrap_access_log(r, "access.log", f"{minute}-{i}", ingest)
            for i, r in enumerate(parsed.valid)
        ]
        envelopes += [wrap_dead_letter(d, ingest) for d in parsed.dead_letters]
        if minute == 3:  # a reading of an hour ago: too late for its window
            late = IotReading(device_id="d9", event_time=ingest - timedelta(hours=1), metrics={})
            envelopes.append(wrap_reading(late, ingest))
        payloads = [encode(e) for e in envelopes] + [b"{not json"]
        for index, shard in enumerate(sequence):
            mine = payloads[index::2]
            first = sequence[shard]
            records = [
                InputRecord(first + k, 0, (ingest + timedelta(seconds=1)).timestamp(), data)
                for k, data in enumerate(mine)
            ]
            batch = decode_batch(shard, records, previous_sequence=first - 1 if minute else None)
            writer.add(window_batch(batch, 60, 600))
            sequence[shard] = first + len(mine)
        writer.flush()
    return folder


def _expected(state: Path) -> dict[str, Any]:
    """The figures counted straight from the tables (not through sluice.analysts.status)."""
    settings = WarehouseSettings(state_dir=state)
    catalog = open_catalog(settings)

    def column(table: str, name: str) -> list[Any]:
        return list(
            catalog.load_table(f"sluice.{table}").scan().to_arrow().column(name).to_pylist()
        )

    letters = catalog.load_table("sluice.dead_letters").scan().to_arrow().to_pylist()
    return {
        "events": {
            "iot": len(column("iot_readings", "event_id")),
            "weblog": len(column("web_requests", "event_id")),
            "feed": len(column("feed_items", "event_id")),
        },
        "reasons": Counter(r["error_type"] for r in letters),
        "letters": Counter((r["source"], r["stage"], r["error_type"]) for r in letters),
        "metric_values": sum(column("iot_metrics_1m", "count")),
        "requests": sum(column("web_traffic_1m", "requests")),
        "errors_5xx": sum(
            r["requests"]
            for r in catalog.load_table("sluice.web_traffic_1m").scan().to_arrow().to_pylist()
            if r["status_class"] == "5xx"
        ),
    }


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_tables_hold_every_kind_of_figure(state: Path) -> None:
    expected = _expected(state)
    assert expected["events"]["iot"] > 20 and expected["events"]["weblog"] > 10
    assert {"unparseable_line", "invalid_json", "too_late"} <= set(expected["reasons"])
    assert expected["metric_values"] > 0 and expected["errors_5xx"] > 0


def test_status_json_matches_the_tables(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "status", "--state-dir", str(state), "--format", "json")
    assert code == 0
    figures = orjson.loads(out)
    expected = _expected(state)
    by_source = {s["source"]: s for s in figures["sources"]}
    assert {k: by_source[k]["events"] for k in expected["events"]} == expected["events"]
    iot = by_source["iot"]
    # five minutes of ingest, ending 30-90 s ago, with 3, 5, 7, 9, 11 readings (the late one is a
    # dead letter); the 55 minutes before them have none
    assert [n for _, n in iot["per_minute"]] == [0] * 55 + [3, 5, 7, 9, 11]
    assert iot["rate_per_minute"] == pytest.approx((3 + 5 + 7 + 9 + 11) / 5)
    assert 30 <= iot["lag_seconds"] < 600
    letters = Counter(
        {(d["source"], d["stage"], d["reason"]): d["count"] for d in figures["dead_letters"]}
    )
    assert letters == expected["letters"]
    tables = {t["table"]: t for t in figures["tables"]}
    assert set(tables) == {
        "iot_readings", "web_requests", "feed_items", "iot_metrics_1m", "web_traffic_1m",
        "dead_letters",
    }  # fmt: skip
    assert tables["iot_readings"]["rows"] == expected["events"]["iot"]
    assert tables["iot_readings"]["snapshots"] == MINUTES
    assert (
        tables["iot_readings"]["rows_added"] == 11
    )  # the last flush: 11 readings, the late one not
    assert set(tables["dead_letters"]["positions"]) == {"shardId-000", "shardId-001"}
    assert set(figures["resume_positions"]) == {"shardId-000", "shardId-001"}
    windows = figures["windows"]
    assert (
        sum(p["values"]["metric_values"] for p in windows["iot_metrics_1m"])
        == expected["metric_values"]
    )
    web = windows["web_traffic_1m"]
    assert sum(p["values"]["errors_5xx"] for p in web) == expected["errors_5xx"]


def test_status_text(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "status", "--state-dir", str(state))
    assert code == 0
    expected = _expected(state)
    assert re.search(rf"^iot\s+iot_readings\s+{expected['events']['iot']}\s", out, re.M)
    for (source, stage, reason), count in expected["letters"].items():
        assert re.search(rf"^{source}\s+{re.escape(stage)}\s+{reason}\s+{count}\s*$", out, re.M)
    assert re.search(r"^dead_letters\s+\d+\s+5\s+\S+\s+append\s", out, re.M)


@pytest.mark.parametrize("kind", ["missing", "empty", "no tables"])
def test_status_without_tables_is_one_line(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "state"
    if kind != "missing":
        folder.mkdir()
    if kind == "no tables":
        open_catalog(WarehouseSettings(state_dir=folder))  # a catalog database, nothing in it
    code, out, err = _run(capsys, "status", "--state-dir", str(folder))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert ("no tables" if kind == "no tables" else "no catalog") in err
    assert folder.exists() == (kind != "missing")  # status creates nothing


class _Figures(HTMLParser):
    """The elements of the rendered page that carry data-* attributes, with their text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[dict[str, str], str]] = []
        self._open: list[tuple[str, dict[str, str], list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open.append((tag, {k: v or "" for k, v in attrs}, []))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            name, attrs, text = self._open.pop()
            joined = "".join(text)
            if self._open:
                self._open[-1][2].append(joined)
            if any(k.startswith("data-") for k in attrs):
                self.found.append((attrs, joined))
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][2].append(data)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name) or (
            f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None
        )
        if found:
            return found
    pytest.skip("no chromium binary: `make chromium` installs Debian's chromium (root or sudo -n)")


def test_status_page_renders_in_headless_chromium(state: Path, tmp_path: Path) -> None:
    browser = _chromium()
    expected = _expected(state)
    server = subprocess.Popen(
        [sys.executable, "-m", "sluice", "status", "--serve", "--port", "0",
         "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.match(r"serving (http://127\.0\.0\.1:\d+/) ", line)
        assert match, (line, server.stderr.read() if server.poll() is not None else "")
        url = match.group(1)
        common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
        dom = subprocess.run(
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        screenshot = tmp_path / "status.png"
        subprocess.run(
            [*common, f"--screenshot={screenshot}", "--window-size=1200,900", url],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)
        assert server.stdout is not None and server.stderr is not None
        server.stdout.close()
        server.stderr.close()

    parsed = _Figures()
    parsed.feed(dom)
    found = parsed.found
    shown = {
        attrs["data-source"]: int(text)
        for attrs, text in found
        if attrs.get("data-figure") == "events"
    }
    assert shown == expected["events"]
    letters = Counter(
        {
            (attrs["data-source"], attrs["data-stage"], attrs["data-reason"]): int(
                re.findall(r"\d+$", text)[0]
            )
            for attrs, text in found
            if "data-dead-letter" in attrs
        }
    )
    assert letters == expected["letters"]
    bars = {
        attrs["data-label"]: float(attrs["data-value"])
        for attrs, _ in found
        if "data-label" in attrs and "data-value" in attrs
    }
    for reason, count in expected["reasons"].items():
        assert bars[reason] == count  # the dead-letters-by-reason chart
    charts = {
        (attrs["data-window-table"], attrs["data-metric"]): float(attrs["data-total"])
        for attrs, _ in found
        if "data-window-table" in attrs
    }
    assert charts[("iot_metrics_1m", "metric_values")] == expected["metric_values"]
    assert charts[("web_traffic_1m", "requests")] == expected["requests"]
    assert charts[("web_traffic_1m", "errors_5xx")] == expected["errors_5xx"]
    per_minute = Counter[str]()
    for attrs, _ in found:
        if attrs.get("data-series", "").startswith("events-"):
            per_minute[attrs["data-series"].removeprefix("events-")] += int(attrs["data-value"])
    assert per_minute == +Counter(expected["events"])  # the bars of events per minute, per source
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, len(data)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 900)


def test_a_port_in_use_is_one_line(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = _run(
            capsys, "status", "--serve", "--port", str(port), "--state-dir", str(state)
        )
    assert code == 2 and out == ""
    assert err.startswith(f"sluice: cannot serve on 127.0.0.1:{port}: ") and err.count("\n") == 1
