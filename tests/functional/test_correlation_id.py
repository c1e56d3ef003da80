"""A correlation id follows each event from the edge request to its table row.

Real HTTP to the local edge server (the real IoT and log handlers), a real moto Kinesis stream, then
the job's own stages (``StageRunner``) and table writer over what the stream holds, into Iceberg
tables of a local warehouse: what ``sluice job run`` does with each batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kinesis_reader import read_stream
from test_local_server import StartServer, request, start_server  # noqa: F401 - the fixture

from sluice.core.config import CoreSettings
from sluice.stream.run import StageRunner
from sluice.stream.stages import InputRecord
from sluice.tables.warehouse import (
    ExactlyOnceWriter,
    WarehouseSettings,
    ensure_tables,
    open_catalog,
)


@pytest.fixture
def edge(start_server: StartServer) -> Iterator[Any]:  # noqa: F811 - the imported fixture
    yield start_server()


def _reading(i: int) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(seconds=30)
    return {"deviceId": f"dev-{i % 3}", "timestamp": at.isoformat(), "temp": 20.0 + i, "seq": i}


def _post_iot(edge: Any, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    status, answered, _ = request(
        edge, "POST", "/iot", body, {"Content-Type": "application/x-ndjson", **headers}
    )
    return status, answered["x-correlation-id"]


def _rows(kinesis: Any, stream: str, state_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every user record on the stream through the stages and the writer, as one batch."""
    users = read_stream(kinesis, stream).user_records
    now = datetime.now(UTC).timestamp()
    records = [InputRecord(i + 1, 0, now, user.data) for i, user in enumerate(users)]
    warehouse = WarehouseSettings(state_dir=state_dir)
    tables = ensure_tables(open_catalog(warehouse), warehouse)
    writer = ExactlyOnceWriter(tables, 60)
    with StageRunner(CoreSettings()) as runner:
        writer.add(runner.run("shardId-000000000000", records))
    writer.flush()
    return {name: t.refresh().scan().to_arrow().to_pylist() for name, t in tables.items()}


def test_each_row_carries_the_id_of_the_request_that_brought_it(
    edge: Any, kinesis: Any, stream: str, tmp_path: Path
) -> None:
    # GIVEN a request with the client's own correlation id, one without (the HTTP API's request
    # id is used), one with an unusable id (ignored), each with a bad line, and log lines
    mine = "client-req.42:abc"
    ndjson = lambda rows: b"\n".join(orjson.dumps(r) for r in rows) + b"\n{broken\n"  # noqa: E731
    status_a, id_a = _post_iot(
        edge, ndjson([_reading(i) for i in range(4)]), {"x-correlation-id": mine}
    )
    status_b, id_b = _post_iot(edge, ndjson([_reading(i) for i in range(4, 7)]), {})
    status_c, id_c = _post_iot(
        edge, ndjson([_reading(7)]), {"x-correlation-id": "bad id with spaces"}
    )
    line = '203.0.113.9 - - [{at}] "GET /p HTTP/1.1" 200 12 "-" "curl/8"'
    at = (datetime.now(UTC) - timedelta(seconds=20)).strftime("%d/%b/%Y:%H:%M:%S +0000")
    log_status, _, _ = request(edge, "POST", "/logs", "\n".join([line.format(at=at)] * 2).encode())

    # THEN the edge answered with the id it used
    assert (status_a, status_b, status_c, log_status) == (202, 202, 202, 200)
    assert id_a == mine and id_b and id_b != mine and id_c not in (mine, "bad id with spaces")

    # WHEN the job's stages and writer land what the stream holds
    tables = _rows(kinesis, stream, tmp_path / "state")

    # THEN every reading row names its request, and so does each request's dead letter
    by_request = Counter(row["correlation_id"] for row in tables["iot_readings"])
    assert by_request == {id_a: 4, id_b: 3, id_c: 1}
    letters = Counter(row["correlation_id"] for row in tables["dead_letters"])
    assert letters == {id_a: 1, id_b: 1, id_c: 1}
    # AND both log lines share the log invocation's id
    (log_id,) = {row["correlation_id"] for row in tables["web_requests"]}
    assert log_id and log_id not in (id_a, id_b, id_c) and len(tables["web_requests"]) == 2
