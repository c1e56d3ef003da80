"""Helpers for the stream job's tests: known input as envelopes, what the tables must then hold, tables read back.

In: the fate a test wants for each input (an event table, a dead letter of some type, dropped by a
filter), event times and client addresses chosen by the test.
Out: ``Sent`` values (the wire bytes of one user record plus the fate the job must give it), the
``SourceBatch`` values the Kinesis source would emit for them, ``Expected`` (rows, window values and
dead letters computed directly from the input with plain Python, never with ``sluice.transform.aggregate`` or
``sluice.stream.stages``) and the rows and ``sluice.positions`` of the tables a run wrote.

Used by ``test_job_stages`` (Beam ``TestStream`` over the stage transforms) and the end-to-end tests
under ``tests/e2e`` (the whole job over a moto Kinesis stream), so all of them describe their input
and their expectations the same way.
"""

from __future__ import annotations

import ipaddress
import json
import math
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kinesis_testkit import Put, put_aggregated, put_records

from devkit.geoip_build import DEMO_NETWORKS
from infra.local.stack import client
from sluice.core.contracts import (
    Envelope,
    ErrorType,
    FeedItem,
    GeoPoint,
    IotReading,
    Source,
    WebAccessLog,
)
from sluice.core.deadletters import dead_letter
from sluice.stream.envelopes import (
    encode,
    wrap_access_log,
    wrap_dead_letter,
    wrap_feed_item,
    wrap_reading,
)
from sluice.stream.kinesis.records import SourceBatch, SourceRecord
from sluice.stream.kpl import UserRecord
from sluice.tables.warehouse import POSITIONS_PROPERTY, WarehouseSettings, open_catalog
from sluice.transform.aggregate import MetricStats, WebTrafficStats

WINDOW_SECONDS = 60
LATENESS_SECONDS = 600
"""The job's defaults (``--window_seconds``, ``--allowed_lateness_seconds``)."""

TABLE_NAMES = (
    "iot_readings",
    "web_requests",
    "feed_items",
    "iot_metrics_1m",
    "web_traffic_1m",
    "dead_letters",
)
INGEST_TIME = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
"""Every envelope's ingest time: fixed, so the same input is the same bytes in every run."""


def is_log_record(line: str) -> bool:
    """A line of the job's logs (text: starts with its timestamp; JSON: an object with one)."""
    return line[:4].isdigit() or line.startswith('{"timestamp":')


def _host(network: str, index: int = 10) -> str:
    return str(ipaddress.ip_network(network)[index])


# (client address, the country the demo GeoIP database must give it; '' when none).
# SYNTHETIC networks of devkit.geoip_build (not real geolocation); the second-to-last address is
# private and the last one is public but in no demo network, so both aggregate under ''.
CLIENTS: tuple[tuple[str, str], ...] = (
    *((_host(n.network), n.country_iso) for n in DEMO_NETWORKS if n.network.endswith("/24")),
    (_host("2001:218::/32"), "JP"),
    ("192.168.7.20", ""),
    ("8.8.8.8", ""),
)
BOT_AGENT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BROWSER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0"
HEALTH_CHECK_PATH = "/healthz"
"""Dropped by the default filter rules (``health_checks``): counted, never stored, never dead-lettered."""


# Input ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    """One user record put on the stream, and what the job must make of it.

    ``lands_in``: the table it must end up in (an event table, or ``dead_letters`` with
    ``error_type``), or None when a filter rule drops it.
    """

    data: bytes
    partition_key: str
    lands_in: str | None
    record: Any = None
    event_id: str | None = None
    error_type: ErrorType | None = None
    country: str = ""
    bot: bool = False

    def user_record(self) -> UserRecord:
        return UserRecord(self.partition_key, self.data)


def _sent_envelope(envelope: Envelope, record: Any, lands_in: str | None, **more: Any) -> Sent:
    return Sent(
        data=encode(envelope),
        partition_key=envelope.partition_key,
        lands_in=lands_in,
        record=record,
        event_id=envelope.event_id,
        **more,
    )


def reading(
    device: str, at: datetime, number: int, *, too_late: bool = False, **metrics: float
) -> Sent:
    """An IoT reading; ``too_late`` says the test made it arrive after its window closed."""
    record = IotReading(
        device_id=device, event_time=at, metrics=metrics, message_id=f"{device}-{number}"
    )
    if too_late:
        return _sent_envelope(
            wrap_reading(record, INGEST_TIME), record, "dead_letters", error_type=ErrorType.TOO_LATE
        )
    return _sent_envelope(wrap_reading(record, INGEST_TIME), record, "iot_readings")


def request(
    at: datetime,
    client: tuple[str, str],
    number: int,
    *,
    path: str = "/home",
    status: int = 200,
    bytes_sent: int = 512,
    request_time: float = 0.25,
    agent: str = BROWSER_AGENT,
    too_late: bool = False,
    origin: str = "s3://sluice-access-logs/nginx/web-1.log.gz",
) -> Sent:
    """A web access-log line from ``client`` (address, expected country), line ``number`` of ``origin``."""
    ip, country = client
    record = WebAccessLog(
        client_ip=ip,
        event_time=at,
        request=f"GET {path} HTTP/1.1",
        method="GET",
        path=path,
        protocol="HTTP/1.1",
        status=status,
        bytes_sent=bytes_sent,
        user_agent=agent,
        request_time=request_time,
    )
    envelope = wrap_access_log(record, origin, number, INGEST_TIME)
    bot = "bot" in agent.lower()
    if too_late:
        return _sent_envelope(
            envelope, record, "dead_letters", error_type=ErrorType.TOO_LATE, country=country
        )
    lands_in = None if path == HEALTH_CHECK_PATH else "web_requests"
    return _sent_envelope(envelope, record, lands_in, country=country, bot=bot)


def feed_item(item_id: str, at: datetime, magnitude: float = 2.5) -> Sent:
    """A feed item (an earthquake); feed items are never too late, however old."""
    record = FeedItem(
        feed="usgs-earthquakes",
        item_id=item_id,
        event_time=at,
        updated_time=at + timedelta(minutes=5),
        location=GeoPoint(lat=35.0, lon=-118.0),
        fields={"mag": magnitude, "place": "10 km N of Nowhere, CA"},
    )
    return _sent_envelope(wrap_feed_item(record, INGEST_TIME), record, "feed_items")


def edge_dead_letter(number: int, seen: datetime) -> Sent:
    """A dead letter an edge produced (an unparseable log line) travelling the stream to the job."""
    letter = dead_letter(
        Source.WEBLOG,
        "edge.logs",
        ErrorType.UNPARSEABLE_LINE,
        "line does not match the log format",
        f"garbage line {number} \x01",
        identity=("s3://sluice-access-logs/nginx/web-1.log.gz", 10_000 + number),
        first_seen=seen,
    )
    return _sent_envelope(
        wrap_dead_letter(letter, INGEST_TIME),
        letter,
        "dead_letters",
        error_type=ErrorType.UNPARSEABLE_LINE,
    )


def _raw(data: bytes, error_type: ErrorType, key: str) -> Sent:
    return Sent(data=data, partition_key=key, lands_in="dead_letters", error_type=error_type)


def _envelope_json(source: str, payload: dict[str, Any], number: int) -> bytes:
    return json.dumps(
        {
            "source": source,
            "event_id": f"bad-{number}",
            "ingest_time": INGEST_TIME.isoformat(),
            "partition_key": f"bad-{number}",
            "payload": payload,
        }
    ).encode()


def invalid_records(number: int, at: datetime) -> list[Sent]:
    """One record of each way an input can fail to decode, and the error type each must get."""
    stamp = at.isoformat()
    return [
        _raw(b'{"source": "iot", "event_id": ', ErrorType.INVALID_JSON, f"bad-json-{number}"),
        _raw(
            b'{"source": "iot", "x": "\xff\xfe"}', ErrorType.INVALID_ENCODING, f"bad-utf-{number}"
        ),
        _raw(
            _envelope_json("iot", {"event_time": stamp, "metrics": {"t": 1.0}}, number),
            ErrorType.MISSING_FIELD,
            f"bad-missing-{number}",
        ),
        _raw(
            _envelope_json("iot", {"device_id": "d", "event_time": "yesterday"}, number),
            ErrorType.INVALID_TIMESTAMP,
            f"bad-time-{number}",
        ),
        _raw(
            _envelope_json(
                "weblog", {"client_ip": None, "event_time": stamp, "status": 1200}, number
            ),
            ErrorType.SCHEMA_VIOLATION,
            f"bad-status-{number}",
        ),
    ]


def quarter(rng: random.Random, low: float, high: float) -> float:
    """A random multiple of 0.25: sums of these are exact in any order, so every run agrees to the bit."""
    return round(rng.uniform(low, high) * 4) / 4


def window_of(at: datetime, size: int = WINDOW_SECONDS) -> datetime:
    """The start of the epoch-aligned window holding ``at`` (computed here, not by the job's code)."""
    return datetime.fromtimestamp(math.floor(at.timestamp() / size) * size, UTC)


def mixed_input(
    rng: random.Random,
    start: datetime,
    *,
    span_seconds: int,
    devices: int,
    readings: int,
    requests: int,
    feed_items: int = 0,
    too_late: int = 0,
    invalid: int = 0,
    edge_dead_letters: int = 0,
) -> list[Sent]:
    """Readings and requests with event times in ``[start, start + span)``, plus the other kinds.

    Too-late events are half readings, half requests, with event times 30 minutes before ``start``:
    the caller puts them on the stream no earlier than ``start``, so they arrive at least 19
    minutes after their window closed (lateness 10 minutes). Every ``invalid`` adds one record of
    each decoding failure (see ``invalid_records``).
    """
    sent: list[Sent] = []
    for n in range(readings):
        at = start + timedelta(seconds=rng.uniform(0, span_seconds))
        device = f"device-{rng.randrange(devices):03d}"
        sent.append(
            reading(
                device,
                at,
                n,
                temperature=quarter(rng, -10, 40),
                humidity=quarter(rng, 0, 100),
            )
        )
    paths = ["/", "/home", "/products", "/checkout", HEALTH_CHECK_PATH]
    for n in range(requests):
        at = start + timedelta(seconds=rng.uniform(0, span_seconds))
        sent.append(
            request(
                at,
                rng.choice(CLIENTS),
                n,
                path=rng.choice(paths),
                status=rng.choice([200, 200, 200, 304, 404, 500]),
                bytes_sent=rng.randrange(0, 50_000),
                request_time=quarter(rng, 0, 3),
                agent=BOT_AGENT if rng.random() < 0.1 else BROWSER_AGENT,
            )
        )
    for n in range(feed_items):
        sent.append(feed_item(f"quake-{n}", start - timedelta(days=2, minutes=n)))
    old = start - timedelta(minutes=30)
    for n in range(too_late):
        if n % 2:
            sent.append(request(old, CLIENTS[0], 1_000_000 + n, too_late=True))
        else:
            sent.append(reading("device-late", old, n, too_late=True, temperature=1.0))
    for n in range(invalid):
        sent.extend(invalid_records(n, start))
    for n in range(edge_dead_letters):
        sent.append(edge_dead_letter(n, start))
    return sent


def prefill_mixed_stream(
    kinesis: Any, stream: str, start: datetime, seed: int, shuffle_seed: int, **counts: int
) -> list[Sent]:
    """``mixed_input`` over the three minutes from ``start`` (4 devices; ``counts`` are its keyword
    counts), shuffled, the first half put KPL-aggregated 20 to a record and the rest one record each:
    the pre-filled stream the replay, archive and Flink comparisons read."""
    sent = mixed_input(random.Random(seed), start, span_seconds=180, devices=4, **counts)
    random.Random(shuffle_seed).shuffle(sent)
    half = len(sent) // 2
    put_aggregated(kinesis, stream, [s.user_record() for s in sent[:half]], 20)
    put_records(kinesis, stream, [(s.partition_key, s.data) for s in sent[half:]])
    return sent


def source_batch(
    shard_id: str,
    sent: Sequence[Sent],
    *,
    first_sequence: int,
    arrival: datetime,
    previous: int | None,
    stream: str = "sluice-events",
) -> SourceBatch:
    """The batch the Kinesis source would emit for ``sent`` arriving together, one Kinesis record each."""
    records = tuple(
        SourceRecord(str(first_sequence + i), 0, arrival.timestamp(), s.partition_key, s.data)
        for i, s in enumerate(sent)
    )
    return SourceBatch(
        stream=stream,
        shard_id=shard_id,
        records=records,
        first_sequence=records[0].sequence_number,
        last_sequence=records[-1].sequence_number,
        previous_sequence=None if previous is None else str(previous),
        max_arrival=arrival.timestamp(),
        millis_behind_latest=0,
    )


# Expectations --------------------------------------------------------------------------------------


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


@dataclass
class Expected:
    """What the tables must hold for some input, computed directly from it."""

    event_ids: dict[str, Counter[str]] = field(default_factory=dict)
    """Event table -> event ids (each exactly once)."""
    iot_windows: dict[tuple[str, str, datetime], tuple[int, float, float | None, float | None]] = (
        field(default_factory=dict)
    )
    """(device, metric, window start) -> (count, sum, min, max)."""
    web_windows: dict[tuple[str, str, str, datetime], tuple[int, int]] = field(default_factory=dict)
    """(path, status class, country, window start) -> (requests, bytes)."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    """Error type -> dead letters."""
    countries: dict[str, str] = field(default_factory=dict)
    """Web request event id -> its country ('' when none)."""
    bots: set[str] = field(default_factory=set)
    """Web request event ids the ``bots`` rule must flag."""


def expect(sent: Iterable[Sent], size: int = WINDOW_SECONDS) -> Expected:
    expected = Expected(event_ids={name: Counter() for name in TABLE_NAMES[:3]})
    iot_values: dict[tuple[str, str, datetime], list[float]] = {}
    web: dict[tuple[str, str, str, datetime], list[int]] = {}
    for s in sent:
        if s.lands_in == "dead_letters":
            assert s.error_type is not None
            expected.dead_letters[s.error_type.value] += 1
            continue
        if s.lands_in is None:
            continue
        assert s.event_id is not None
        expected.event_ids[s.lands_in][s.event_id] += 1
        if s.lands_in == "iot_readings":
            for metric, value in s.record.metrics.items():
                key = (s.record.device_id, metric, window_of(s.record.event_time, size))
                iot_values.setdefault(key, []).append(value)
        elif s.lands_in == "web_requests":
            record: WebAccessLog = s.record
            web_key = (
                record.path or "",
                status_class(record.status),
                s.country,
                window_of(record.event_time, size),
            )
            web.setdefault(web_key, []).append(record.bytes_sent or 0)
            expected.countries[s.event_id] = s.country
            if s.bot:
                expected.bots.add(s.event_id)
    expected.iot_windows = {
        key: (len(values), sum(values), min(values), max(values))
        for key, values in iot_values.items()
    }
    expected.web_windows = {key: (len(sizes), sum(sizes)) for key, sizes in web.items()}
    return expected


# Tables --------------------------------------------------------------------------------------------


def read_tables(
    state_dir: Path, names: Sequence[str] = TABLE_NAMES
) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows (or those of ``names``), as written by a job run with
    ``--state_dir state_dir``."""
    catalog = open_catalog(WarehouseSettings(state_dir=state_dir))
    return {
        name: catalog.load_table(f"sluice.{name}").scan().to_arrow().to_pylist() for name in names
    }


def committed_positions(state_dir: Path) -> dict[str, dict[str, str]]:
    """Each table's ``sluice.positions``, read from its current snapshot's summary ({} when none)."""
    catalog = open_catalog(WarehouseSettings(state_dir=state_dir))
    positions: dict[str, dict[str, str]] = {}
    for name in TABLE_NAMES:
        snapshot = catalog.load_table(f"sluice.{name}").current_snapshot()
        properties = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
        positions[name] = json.loads(properties.get(POSITIONS_PROPERTY, "{}"))
    return positions


def iot_window_values(
    rows: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str, datetime], tuple[int, float, float, float]]:
    """``iot_metrics_1m`` rows as (device, metric, window start) -> (count, sum, min, max)."""
    out: dict[tuple[str, str, datetime], tuple[int, float, float, float]] = {}
    for row in rows:
        key = (row["device_id"], row["metric"], row["window_start"].astimezone(UTC))
        assert key not in out, f"window row {key} is stored twice"
        out[key] = (row["count"], row["sum"], row["min"], row["max"])
    return out


def web_window_values(
    rows: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str, str, datetime], tuple[int, int]]:
    """``web_traffic_1m`` rows as (path, status class, country, window start) -> (requests, bytes)."""
    out: dict[tuple[str, str, str, datetime], tuple[int, int]] = {}
    for row in rows:
        key = (
            row["path"],
            row["status_class"],
            row["country_iso"],
            row["window_start"].astimezone(UTC),
        )
        assert key not in out, f"window row {key} is stored twice"
        out[key] = (row["requests"], row["bytes"])
    return out


def chunks(items: Sequence[Sent], size: int) -> Iterator[list[Sent]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# Job processes and comparing runs ------------------------------------------------------------------
# Used by the kill test (tests/e2e) and the reliability suite (tests/reliability).

COMMIT_ORDER = ("iot_metrics_1m", "web_traffic_1m", "iot_readings", "web_requests")
"""The first tables ``ExactlyOnceWriter.flush`` commits, in order (window tables before their event
tables; ``feed_items`` and ``dead_letters`` come last, and only in flushes that give them rows)."""


@dataclass
class Job:
    """One ``python -m sluice job run`` process; its stderr goes to a file the test reads."""

    env: dict[str, str]
    state_dir: Path
    log: Path
    flags: list[str] = field(default_factory=list)
    stream: str = "sluice-events"
    stop_when_idle_seconds: float = 3
    commit_interval_seconds: float = 0.5
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Job:
        command = [
            sys.executable, "-m", "sluice", "job", "run",
            "--stream_name", self.stream,
            "--stop_when_idle_seconds", str(self.stop_when_idle_seconds),
            "--commit_interval_seconds", str(self.commit_interval_seconds),
            "--state_dir", str(self.state_dir),
            *self.flags,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=subprocess.DEVNULL, stderr=log
            )
        return self

    def commits_logged(self) -> int:
        text = self.log.read_text(errors="replace")
        return text.count(" committed ") + text.count('"message":"committed ')  # text or JSON logs

    def kill(self) -> None:
        assert self.process is not None
        assert self.process.poll() is None, f"the job ended before it was killed; see {self.log}"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def wait(self, timeout: float) -> None:
        assert self.process is not None
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(
                f"the job did not stop within {timeout} s; see {self.log}"
            ) from None
        assert code == 0, f"the job failed ({code}); see {self.log}"


def metadata_locations(state_dir: Path) -> dict[str, str]:
    """Each table's current metadata file, read straight from the SQLite catalog (cheap to poll)."""
    path = state_dir / "catalog.db"
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute(
                "SELECT table_name, metadata_location FROM iceberg_tables"
            ).fetchall()
    except sqlite3.OperationalError:  # the catalog's tables are not created yet
        return {}
    return dict(rows)


def wait_until(condition: Any, timeout: float, what: str, poll: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def kill_during_a_commit(job: Job, commits_to_skip: int) -> None:
    """Kill the job right after the first table of a commit changed, before the others are written."""
    seen: list[str] = []

    def first_table_committed() -> bool:
        location = metadata_locations(job.state_dir).get(COMMIT_ORDER[0])
        if location is not None and (not seen or seen[-1] != location):
            seen.append(location)
        # the first location seen is where the table stood when polling began
        return len(seen) >= 2 + commits_to_skip

    wait_until(first_table_committed, 30, "a commit")
    job.kill()


def produce(
    env: dict[str, str], stream: str, waves: list[list[Sent]], pause: float, landed: list[Put]
) -> None:
    """Put each wave (KPL-aggregated, about 100 user records per Kinesis record; invalid and too-late
    records as plain records), pausing between waves so the job is mid-stream when it is killed."""
    kinesis = client("kinesis", env)
    for wave in waves:
        plain = [s for s in wave if s.lands_in == "dead_letters"]
        rest = [s for s in wave if s.lands_in != "dead_letters"]
        landed += put_aggregated(kinesis, stream, [s.user_record() for s in rest], 100)
        landed += put_records(kinesis, stream, [(s.partition_key, s.data) for s in plain])
        time.sleep(pause)


def frozen(value: Any) -> Any:
    """A row value as something hashable (lists and maps become tuples), to compare rows as multisets."""
    if isinstance(value, list):
        return tuple(frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, frozen(v)) for k, v in value.items()))
    return value


def assert_same_rows(
    name: str, rows: list[dict[str, Any]], reference: list[dict[str, Any]]
) -> None:
    """The same multiset of rows, every column compared."""
    mine = Counter(tuple((k, frozen(v)) for k, v in sorted(row.items())) for row in rows)
    theirs = Counter(tuple((k, frozen(v)) for k, v in sorted(row.items())) for row in reference)
    missing, extra = theirs - mine, mine - theirs
    assert not missing and not extra, (
        f"{name}: {missing.total()} rows missing, {extra.total()} extra, "
        f"e.g. {next(iter(missing or extra))}"
    )


EXACT_WINDOW_COLUMNS = {
    "iot_metrics_1m": ("count", "sum", "min", "max", "mean", "p50", "p95", "p99"),
    "web_traffic_1m": ("requests", "bytes", "request_time_p50", "request_time_p95",
                       "request_time_p99", "unique_clients"),
}  # fmt: skip
WINDOW_KEYS = {
    "iot_metrics_1m": ("window_start", "window_end", "device_id", "metric"),
    "web_traffic_1m": ("window_start", "window_end", "path", "status_class", "country_iso"),
}


def window_rows(name: str, rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Window rows by key: every column but ``state``, and what ``state`` decodes to."""
    decode = MetricStats.from_bytes if name == "iot_metrics_1m" else WebTrafficStats.from_bytes
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        key = tuple(row[c] for c in WINDOW_KEYS[name])
        assert key not in out, f"{name}: window {key} is stored twice"
        out[key] = (*(row[c] for c in EXACT_WINDOW_COLUMNS[name]), decode(row["state"]).summary())
    return out


def assert_same_windows(
    name: str, rows: list[dict[str, Any]], reference: list[dict[str, Any]]
) -> None:
    mine, theirs = window_rows(name, rows), window_rows(name, reference)
    assert mine.keys() == theirs.keys(), f"{name}: windows differ: {mine.keys() ^ theirs.keys()}"
    different = [key for key in mine if mine[key] != theirs[key]]
    assert not different, (
        f"{name}: {len(different)} windows differ, e.g. {different[0]}: "
        f"{mine[different[0]]} != {theirs[different[0]]}"
    )


def difference_from_reference(
    name: str,
    rows: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    lost: Any,
    duplicated: Any,
) -> str:
    """``""`` when table ``name``'s ``rows`` equal the uninterrupted run's ``reference`` (windows by
    their exact columns and state), else what differs, in one line, with the lost and duplicated."""
    try:
        if name in WINDOW_KEYS:
            assert_same_windows(name, rows, reference)
        else:
            assert_same_rows(name, rows, reference)
        problem = ""
    except AssertionError as different:
        problem = f"differs from the uninterrupted run: {str(different)[:300]}"
    if lost or duplicated:
        problem = (problem + f"; {lost} lost, {duplicated} duplicated").lstrip("; ")
    return problem
