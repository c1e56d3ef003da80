"""The archive line and Firehose's transformation into it (``sluice.stream.archive``)."""

from __future__ import annotations

import base64
import gzip

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.stream.archive import archive_line, archive_lines, firehose_records, read_archive_file
from sluice.stream.stages import InputRecord


def _firehose(
    record_id: str, data: bytes, sub: object, arrival_ms: int = 1_772_441_400_123
) -> dict[str, object]:
    return {
        "recordId": record_id,
        "approximateArrivalTimestamp": arrival_ms,
        "data": base64.b64encode(data).decode(),
        "kinesisRecordMetadata": {
            "shardId": "shardId-000000000001",
            "partitionKey": "k",
            "approximateArrivalTimestamp": arrival_ms,
            "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "subsequenceNumber": sub,
        },
    }


def test_a_firehose_record_becomes_the_line_the_job_archives() -> None:
    outcome = firehose_records([_firehose("a", b'{"x":1}', ""), _firehose("b", b"\xff\x00", 3)])
    assert outcome.archived == 2 and not outcome.failed
    first, _ = outcome.records
    assert first["result"] == "Ok" and first["metadata"] == {
        "partitionKeys": {"dt": "2026-03-02", "hour": "08"}
    }
    lines = b"".join(base64.b64decode(r["data"]) for r in outcome.records)
    (shard, one), (_, two) = read_archive_file(lines)
    sequence = 49590338271490256608559692538361571095921575989136588898
    assert one == InputRecord(sequence, 0, 1_772_441_400.123, b'{"x":1}')
    assert two == InputRecord(sequence, 3, 1_772_441_400.123, b"\xff\x00")
    assert lines == archive_line(shard, one) + archive_line(shard, two)


def test_the_jobs_archive_files_hold_the_same_lines() -> None:
    pytest.importorskip("pyiceberg")  # sluice.tables needs the tables extra
    from sluice.tables.archive import encode_batch

    outcome = firehose_records([_firehose("a", b'{"x":1}', ""), _firehose("b", b"\xff\x00", 3)])
    lines = b"".join(base64.b64decode(r["data"]) for r in outcome.records)
    (shard, one), (_, two) = read_archive_file(lines)
    # byte for byte what the job writes for the same records (its archive files are these lines)
    ((_, file),) = encode_batch(shard, [one, two])
    assert gzip.decompress(file) == lines == archive_line(shard, one) + archive_line(shard, two)


def test_what_is_not_a_stream_record_is_kept_as_processing_failed() -> None:
    direct_put = {
        "recordId": "c",
        "approximateArrivalTimestamp": 1,
        "data": base64.b64encode(b"x").decode(),
    }
    bad_base64 = {**_firehose("d", b"", 0), "data": "%%%"}
    bad_sequence = _firehose("e", b"y", 0)
    bad_sequence["kinesisRecordMetadata"] = {
        **bad_sequence["kinesisRecordMetadata"],
        "sequenceNumber": "n/a",
    }  # type: ignore[dict-item]
    good = _firehose("f", b"z", 0)
    outcome = firehose_records([direct_put, bad_base64, bad_sequence, good])
    assert [r["result"] for r in outcome.records] == ["ProcessingFailed"] * 3 + ["Ok"]
    assert [r["recordId"] for r in outcome.records] == ["c", "d", "e", "f"]
    assert outcome.records[0]["data"] == direct_put["data"]  # kept unchanged under raw-errors/
    assert set(outcome.failed) == {"c", "d", "e"} and outcome.archived == 1
    assert all("\n" not in reason and reason for reason in outcome.failed.values())
    assert (
        orjson.loads(base64.b64decode(outcome.records[3]["data"]))["data"]
        == base64.b64encode(b"z").decode()
    )


arrivals = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1_772_441_400.123, 1e16, 1e-7, 5e-324]),
    st.integers(-(2**63), 2**63 - 1),
)
records = st.builds(
    InputRecord,
    st.integers(0, 2**200),
    st.integers(0, 2**63 - 1),
    arrivals,
    st.binary(max_size=40),
)


@given(
    st.text(max_size=12) | st.just("shardId-000000000001"),
    st.lists(st.one_of(records, st.just(InputRecord(7, 0, 0.0, b"a"))), max_size=12),
    st.data(),
)
def test_the_batch_lines_are_byte_for_byte_the_record_lines(
    shard: str, batch: list[InputRecord], data: st.DataObject
) -> None:
    # records sharing an arrival (a KPL aggregate's), and arrivals equal as keys but written apart
    if batch:
        twin = data.draw(st.sampled_from(batch))
        batch += [twin, InputRecord(twin.sequence, 1, -0.0, twin.data)]
    assert archive_lines(shard, batch) == b"".join(archive_line(shard, r) for r in batch)
    assert archive_lines(shard, []) == b""


def test_arrivals_equal_as_keys_keep_their_own_json() -> None:
    # 5 and 5.0, 0.0 and -0.0 are one dict key; archive_line writes each as orjson does
    batch = [InputRecord(1, i, arrival, b"x") for i, arrival in enumerate((5, 5.0, 0.0, -0.0))]
    assert archive_lines("s", batch) == b"".join(archive_line("s", r) for r in batch)
    assert b'"arrival":5,' in archive_lines("s", batch) and b'"arrival":-0.0,' in archive_lines(
        "s", batch
    )
