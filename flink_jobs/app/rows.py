"""Table rows as the PyFlink job hands them to Flink: column lists, Flink types, row values.

In: the events, dead letters and finished windows of ``sluice.stream.stages.JobBatch`` values.
Out: per table, its columns in the table's order (``COLUMNS``), the PyFlink type of its rows
(``row_type``), the SQL that casts them to the Iceberg table's own types (``select_list``), and the
values of one row (``event_row``, ``dead_letter_row``, ``window_row``).

Why not ``sluice.tables.specs``: it builds pyarrow tables from pyiceberg schemas, and pyiceberg is not in
``.venv-flink`` (0.12 needs pyarrow >= 18; PyFlink 2.2 pins pyarrow < 17). The columns here are
checked against the specs' schemas by ``tests/flink/test_app_unit.py`` (run in the main environment),
so they cannot drift apart; the values follow ``specs.iot_rows`` / ``web_rows`` / ``feed_rows`` /
``dead_letter_rows`` / ``iot_metric_rows`` / ``web_traffic_rows`` field by field.

Timestamps travel as UTC wall-clock text (``2026-12-01 10:01:23.878103``) and are cast to
``TIMESTAMP(6)`` and then ``TIMESTAMP_LTZ(6)`` in SQL: PyFlink's own timestamp types lose the
microseconds on their way from Python to Java (``Types.SQL_TIMESTAMP`` and ``Types.INSTANT`` carry
milliseconds), which the Beam job keeps. The second cast reads the wall clock in the session time
zone, so the job requires it to be UTC (MSF's is; ``flink_jobs.app.job`` checks at start).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import orjson

from sluice.core.contracts import Source
from sluice.stream.stages import Event

__all__ = [
    "COLUMNS",
    "EVENT_TABLES",
    "WINDOW_GROUPS",
    "dead_letter_row",
    "event_row",
    "row_type",
    "select_list",
    "stream_schema",
    "window_row",
]

Kind = str
"""A column's kind: string, timestamp, double, long, int, bool, bytes, map<string,double>,
map<string,string>, array<string>, array<int>, array<double>."""

_IOT: list[tuple[str, Kind]] = [
    ("event_id", "string"), ("device_id", "string"), ("event_time", "timestamp"),
    ("ingest_time", "timestamp"), ("metrics", "map<string,double>"),
    ("attributes", "map<string,string>"), ("lat", "double"), ("lon", "double"),
    ("message_id", "string"), ("flags", "array<string>"), ("correlation_id", "string"),
]  # fmt: skip
_WEB: list[tuple[str, Kind]] = [
    ("event_id", "string"), ("event_time", "timestamp"), ("ingest_time", "timestamp"),
    ("client_ip", "string"), ("remote_user", "string"), ("method", "string"), ("path", "string"),
    ("query", "string"), ("protocol", "string"), ("status", "int"), ("bytes_sent", "long"),
    ("referer", "string"), ("user_agent", "string"), ("forwarded_for", "array<string>"),
    ("request_time", "double"), ("vhost", "string"), ("request", "string"),
    ("extra", "map<string,string>"), ("flags", "array<string>"), ("geo_status", "string"),
    ("country_iso", "string"), ("country_name", "string"), ("city", "string"), ("lat", "double"),
    ("lon", "double"), ("asn", "long"), ("as_org", "string"), ("invalid_utf8", "bool"),
    ("response_bytes", "long"), ("request_length", "long"), ("server_port", "int"),
    ("ssl_protocol", "string"), ("upstream_addr", "array<string>"),
    ("upstream_status", "array<int>"), ("upstream_response_time", "array<double>"),
    ("upstream_connect_time", "array<double>"), ("upstream_header_time", "array<double>"),
    ("correlation_id", "string"),
]  # fmt: skip
_FEED: list[tuple[str, Kind]] = [
    ("event_id", "string"), ("feed", "string"), ("item_id", "string"), ("event_time", "timestamp"),
    ("updated_time", "timestamp"), ("ingest_time", "timestamp"), ("lat", "double"),
    ("lon", "double"), ("fields", "map<string,string>"), ("flags", "array<string>"),
    ("correlation_id", "string"),
]  # fmt: skip
_IOT_1M: list[tuple[str, Kind]] = [
    ("window_start", "timestamp"), ("window_end", "timestamp"), ("device_id", "string"),
    ("metric", "string"), ("count", "long"), ("sum", "double"), ("min", "double"),
    ("max", "double"), ("mean", "double"), ("p50", "double"), ("p95", "double"),
    ("p99", "double"), ("state", "bytes"),
]  # fmt: skip
_WEB_1M: list[tuple[str, Kind]] = [
    ("window_start", "timestamp"), ("window_end", "timestamp"), ("path", "string"),
    ("status_class", "string"), ("country_iso", "string"), ("requests", "long"),
    ("bytes", "long"), ("request_time_p50", "double"), ("request_time_p95", "double"),
    ("request_time_p99", "double"), ("unique_clients", "double"), ("state", "bytes"),
]  # fmt: skip
_LETTERS: list[tuple[str, Kind]] = [
    ("dead_letter_id", "string"), ("source", "string"), ("stage", "string"),
    ("error_type", "string"), ("message", "string"), ("raw", "string"),
    ("raw_encoding", "string"), ("raw_size", "long"), ("raw_truncated", "bool"),
    ("event_time", "timestamp"), ("first_seen", "timestamp"), ("pipeline_version", "string"),
    ("correlation_id", "string"),
]  # fmt: skip

COLUMNS: dict[str, list[tuple[str, Kind]]] = {
    "iot_readings": _IOT,
    "web_requests": _WEB,
    "feed_items": _FEED,
    "iot_metrics_1m": _IOT_1M,
    "web_traffic_1m": _WEB_1M,
    "dead_letters": _LETTERS,
}
"""Every table's columns, in its schema's order (``sluice.tables.specs``)."""

EVENT_TABLES: dict[Source, str] = {
    Source.IOT: "iot_readings",
    Source.WEBLOG: "web_requests",
    Source.FEED: "feed_items",
}
WINDOW_GROUPS: dict[str, tuple[str, ...]] = {
    "iot_metrics_1m": ("device_id", "metric"),
    "web_traffic_1m": ("path", "status_class", "country_iso"),
}
"""A window table's key columns before ``window_start`` (``specs.WINDOW_TABLES``' group columns)."""

_SQL = {
    "string": "STRING", "timestamp": "TIMESTAMP_LTZ(6)", "double": "DOUBLE", "long": "BIGINT",
    "int": "INT", "bool": "BOOLEAN", "bytes": "BYTES", "map<string,double>": "MAP<STRING, DOUBLE>",
    "map<string,string>": "MAP<STRING, STRING>", "array<string>": "ARRAY<STRING>",
    "array<int>": "ARRAY<INT>", "array<double>": "ARRAY<DOUBLE>",
}  # fmt: skip


def _flink_type(kind: Kind) -> Any:
    from pyflink.common import Types

    simple = {
        "string": Types.STRING,
        "timestamp": Types.STRING,
        "double": Types.DOUBLE,
        "long": Types.LONG,
        "int": Types.INT,
        "bool": Types.BOOLEAN,
    }
    if kind in simple:
        return simple[kind]()
    if kind == "bytes":
        return Types.PRIMITIVE_ARRAY(Types.BYTE())
    if kind.startswith("map<"):
        value = Types.DOUBLE() if kind.endswith("double>") else Types.STRING()
        return Types.MAP(Types.STRING(), value)
    element = {"array<string>": Types.STRING, "array<int>": Types.INT}.get(kind, Types.DOUBLE)
    return Types.BASIC_ARRAY(element())


def _data_type(kind: Kind) -> Any:
    from pyflink.table import DataTypes

    simple = {
        "string": DataTypes.STRING, "double": DataTypes.DOUBLE, "long": DataTypes.BIGINT,
        "int": DataTypes.INT, "bool": DataTypes.BOOLEAN, "bytes": DataTypes.BYTES,
    }  # fmt: skip
    if kind in simple:
        return simple[kind]()
    if kind == "timestamp":
        return DataTypes.STRING()
    if kind.startswith("map<"):
        value = DataTypes.DOUBLE() if kind.endswith("double>") else DataTypes.STRING()
        return DataTypes.MAP(DataTypes.STRING(), value)
    element = {"array<string>": DataTypes.STRING, "array<int>": DataTypes.INT}.get(
        kind, DataTypes.DOUBLE
    )
    return DataTypes.ARRAY(element())


def stream_schema(table: str) -> Any:
    """The ``Schema`` of the table's row stream in ``from_data_stream`` (every column declared)."""
    from pyflink.table import Schema

    builder = Schema.new_builder()
    for column, kind in COLUMNS[table]:
        builder = builder.column(column, _data_type(kind))
    return builder.build()


def row_type(table: str) -> Any:
    """The PyFlink ``Types.ROW_NAMED`` of the table's rows."""
    from pyflink.common import Types

    columns = COLUMNS[table]
    return Types.ROW_NAMED([c for c, _ in columns], [_flink_type(k) for _, k in columns])


def select_list(table: str) -> str:
    """The SELECT list that turns the converted stream's columns into the table's types."""
    parts = []
    for column, kind in COLUMNS[table]:
        name = f"`{column}`"
        if kind == "timestamp":
            parts.append(f"CAST(CAST({name} AS TIMESTAMP(6)) AS TIMESTAMP_LTZ(6)) AS {name}")
        else:
            parts.append(name)
    return ", ".join(parts)


def _time(value: datetime | None) -> str | None:
    """A timestamp as UTC wall-clock text with microseconds (see the module docstring)."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _text(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _field_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _list(value: Any) -> list[Any] | None:
    return None if value is None else list(value)


def _map(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


def event_row(source: Source, event: Event) -> tuple[Any, ...]:
    """One event table row (the values of ``specs.iot_rows`` / ``web_rows`` / ``feed_rows``)."""
    r = event.record
    if source is Source.IOT:
        loc = r.location
        return (
            event.event_id, r.device_id, _time(r.event_time), _time(event.ingest_time),
            _map(r.metrics), _map(r.attributes), loc.lat if loc else None,
            loc.lon if loc else None, r.message_id, _list(r.flags), event.correlation_id,
        )  # fmt: skip
    if source is Source.WEBLOG:
        geo = r.geo
        return (
            event.event_id, _time(r.event_time), _time(event.ingest_time), r.client_ip,
            r.remote_user, r.method, r.path, r.query, r.protocol, r.status, r.bytes_sent,
            r.referer, r.user_agent, _list(r.forwarded_for), r.request_time, r.vhost, r.request,
            _map(r.extra), _list(r.flags), geo.status if geo else None,
            geo.country_iso if geo else None, geo.country_name if geo else None,
            geo.city if geo else None, geo.lat if geo else None, geo.lon if geo else None,
            geo.asn if geo else None, geo.as_org if geo else None, r.invalid_utf8,
            r.response_bytes, r.request_length, r.server_port, r.ssl_protocol,
            _list(r.upstream_addr), _list(r.upstream_status), _list(r.upstream_response_time),
            _list(r.upstream_connect_time), _list(r.upstream_header_time), event.correlation_id,
        )  # fmt: skip
    loc = r.location
    return (
        event.event_id, r.feed, r.item_id, _time(r.event_time), _time(r.updated_time),
        _time(event.ingest_time), loc.lat if loc else None, loc.lon if loc else None,
        {k: _field_text(v) for k, v in r.fields.items()}, _list(r.flags), event.correlation_id,
    )  # fmt: skip


def dead_letter_row(event: Event) -> tuple[Any, ...]:
    """One ``dead_letters`` row (``specs.dead_letter_rows``) of a dead-letter event."""
    letter = event.record  # attributes, not model_dump(): the dump leaves unset optional fields out
    values = []
    for column, kind in _LETTERS:
        value = _text(getattr(letter, column))
        values.append(_time(value) if kind == "timestamp" else value)
    return tuple(values)


def window_row(
    table: str, group: tuple[str, ...], start: datetime, stats: Any, size_seconds: int
) -> tuple[Any, ...]:
    """One window row (``specs.iot_metric_rows`` / ``web_traffic_rows``) of a finished window."""
    start = start.astimezone(UTC)
    end = _time(start + timedelta(seconds=size_seconds))
    if table == "iot_metrics_1m":
        p50, p95, p99 = stats.quantiles([0.5, 0.95, 0.99]) or (None, None, None)
        return (
            _time(start), end, *group, stats.count, stats.sum, stats.min, stats.max, stats.mean,
            p50, p95, p99, stats.to_bytes(),
        )  # fmt: skip
    timing = stats.request_time
    p50, p95, p99 = timing.quantiles([0.5, 0.95, 0.99]) or (None, None, None)
    return (
        _time(start), end, *group, stats.requests, stats.bytes, p50, p95, p99,
        stats.unique_clients.estimate(), stats.to_bytes(),
    )  # fmt: skip
