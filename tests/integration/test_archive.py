"""The raw-record archive: lossless codec, deterministic files, hour layout and pruning, replay batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from beam_jobs.replay import shard_batches, shard_records
from sluice.stream.stages import InputRecord
from sluice.tables.archive import (
    encode_batch,
    iter_archive_files,
    read_archive_file,
    records_in_range,
    split_at_sequences,
)

SHARD = "shardId-000000000001"
T0 = datetime(2026, 3, 2, 9, 58, tzinfo=UTC).timestamp()

records = st.lists(
    st.builds(
        InputRecord,
        sequence=st.integers(min_value=0, max_value=10**56),
        sub_sequence=st.integers(min_value=0, max_value=10_000),
        arrival=st.floats(min_value=0, max_value=4e9, allow_nan=False),
        data=st.binary(max_size=2000),
    ),
    min_size=1,
    max_size=30,
)


@given(records)
def test_every_record_survives_a_round_trip_with_its_shard_position_arrival_and_bytes(
    batch: list[InputRecord],
) -> None:
    files = encode_batch(SHARD, batch)
    decoded = [pair for _, content in files for pair in read_archive_file(content)]
    assert sorted(decoded, key=repr) == sorted(((SHARD, r) for r in batch), key=repr)


def test_a_batch_is_one_file_per_arrival_hour_named_by_shard_and_range() -> None:
    batch = [InputRecord(100 + i, 0, T0 + 50 * i, b"x%d" % i) for i in range(5)]
    files = encode_batch(SHARD, batch)
    assert [path for path, _ in files] == [
        f"raw/dt=2026-03-02/hour=09/{SHARD}-100-102.jsonl.gz",
        f"raw/dt=2026-03-02/hour=10/{SHARD}-103-104.jsonl.gz",
    ]
    # Writing the same records again writes the same bytes (a restart overwrites, never duplicates).
    assert encode_batch(SHARD, batch) == files


def _write(root: Path, batch: list[InputRecord]) -> None:
    for relative, content in encode_batch(SHARD, batch):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)


def test_a_range_reads_only_the_hours_it_overlaps_and_the_records_that_arrived_in_it(
    tmp_path: Path,
) -> None:
    hour = datetime(2026, 3, 2, 9, tzinfo=UTC)
    for h in range(4):  # 09:00 .. 12:00, two records each, at :10 and :40
        at = (hour + timedelta(hours=h)).timestamp()
        _write(tmp_path, [InputRecord(10 * h, 0, at + 600, b"a"), InputRecord(10 * h + 1, 0, at + 2400, b"b")])  # fmt: skip
    start, end = hour + timedelta(hours=1, minutes=30), hour + timedelta(hours=3)

    files = list(iter_archive_files(tmp_path, start, end))

    assert [f.parent.name for f in files] == ["hour=10", "hour=11"]
    pairs = [pair for f in files for pair in read_archive_file(f.read_bytes())]
    assert [r.sequence for r in records_in_range(pairs, start, end)[SHARD]] == [11, 20, 21]


def test_overlapping_files_are_de_duplicated_and_replayed_as_one_chain() -> None:
    first = [InputRecord(s, sub, T0, b"%d" % s) for s in (5, 6) for sub in (0, 1)]
    again = [*first, InputRecord(7, 0, T0, b"7")]  # re-read after a restart, one more record
    pairs = [(SHARD, r) for r in first + again]
    shard_records = records_in_range(pairs, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))[SHARD]  # fmt: skip
    assert [(r.sequence, r.sub_sequence) for r in shard_records] == [
        (5, 0), (5, 1), (6, 0), (6, 1), (7, 0),
    ]  # fmt: skip

    batches = shard_batches(SHARD, shard_records, size=1)

    # an aggregate (one sequence) is never split; each batch names its predecessor's end
    assert [(b.first_sequence, b.last_sequence, b.previous_sequence) for b in batches] == [
        ("5", "5", None), ("6", "6", "5"), ("7", "7", "6"),
    ]  # fmt: skip
    assert [len(chunk) for chunk in split_at_sequences(shard_records, 3)] == [4, 1]


def test_a_shard_is_read_one_run_of_overlapping_files_at_a_time_with_the_same_records(
    tmp_path: Path,
) -> None:
    # GIVEN a shard's archive: a batch, the same range read again with one more record (a restart),
    # a batch split at an hour with interleaved arrivals, and a later batch
    at = datetime(2026, 3, 2, 9, 59, tzinfo=UTC).timestamp()
    runs = [
        [InputRecord(s, 0, at, b"a") for s in (1, 2, 3)],
        [InputRecord(s, 0, at, b"a") for s in (2, 3, 4)],
        [InputRecord(10, 0, at + 30, b"b"), InputRecord(11, 0, at + 90, b"b"),
         InputRecord(12, 0, at + 50, b"b"), InputRecord(13, 0, at + 95, b"b")],
        [InputRecord(s, 0, at + 200, b"c") for s in (20, 21)],
    ]  # fmt: skip
    for batch in runs:
        _write(tmp_path, batch)
    start, end = datetime(2026, 3, 2, 9, tzinfo=UTC), datetime(2026, 3, 2, 11, tzinfo=UTC)
    paths = [str(p) for p in iter_archive_files(tmp_path, start, end)]
    pairs = [pair for path in paths for pair in read_archive_file(Path(path).read_bytes())]

    # WHEN the shard is read run by run
    read = shard_records(SHARD, paths, start, end)

    # THEN the first run comes out before the later files are read
    assert [next(read).sequence for _ in range(4)] == [1, 2, 3, 4]
    later = tmp_path / "raw/dt=2026-03-02/hour=10" / f"{SHARD}-20-21.jsonl.gz"
    later.unlink()
    _write(tmp_path, [InputRecord(s, 0, at + 200, b"c") for s in (20, 22)])  # now named 20-22
    later.with_name(f"{SHARD}-20-22.jsonl.gz").rename(later)
    rest = [r.sequence for r in read]
    assert rest == [10, 11, 12, 13, 20, 22]  # the interleaved hour split merged in order
    # AND, before the change to the last file, the records equal reading everything at once
    expected = [r.sequence for r in records_in_range(pairs, start, end)[SHARD]]
    assert expected == [1, 2, 3, 4, 10, 11, 12, 13, 20, 21]
