"""The PyFlink application's pieces that need no Flink (main environment, part of ``make test``):
its settings from MSF property groups, its table columns against ``sluice.tables.specs``, its
archive line parser against ``sluice.tables.archive``, and its start-up checks.

GIVEN property groups / table specs / archive files, WHEN the application's code reads them, THEN
it agrees with the core, and every problem is one ``ConfigError`` line naming the key.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DoubleType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    StringType,
    TimestamptzType,
)

from flink_jobs.app.job import catalog_ddl, check_python
from flink_jobs.app.rows import COLUMNS, WINDOW_GROUPS, select_list
from flink_jobs.app.settings import GROUPS, load_app_settings, parse_groups
from sluice.core.errors import ConfigError
from sluice.tables.specs import TABLES, WINDOW_TABLES

REPO = Path(__file__).resolve().parents[2]


def group(group_id: str, **values: str) -> dict[str, Any]:
    return {"PropertyGroupId": group_id, "PropertyMap": values}


MINIMAL = [
    group("sluice.input", source="archive", **{"archive.path": "/tmp/archive"}),
    group(
        "sluice.iceberg",
        **{"catalog.type": "jdbc", "warehouse": "file:///w", "jdbc.uri": "jdbc:sqlite:/c.db"},
    ),
]


def _kind(field_type: Any) -> str:
    simple = {
        StringType: "string", TimestamptzType: "timestamp", DoubleType: "double",
        LongType: "long", IntegerType: "int", BooleanType: "bool", BinaryType: "bytes",
    }  # fmt: skip
    for kind, name in simple.items():
        if isinstance(field_type, kind):
            return name
    if isinstance(field_type, MapType):
        return f"map<string,{_kind(field_type.value_type)}>"
    assert isinstance(field_type, ListType)
    return f"array<{_kind(field_type.element_type)}>"


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_app_columns_are_the_specs_columns_in_order(name: str) -> None:
    spec = [(f.name, _kind(f.field_type)) for f in TABLES[name].schema.fields]
    assert COLUMNS[name] == spec


def test_window_groups_are_the_specs_group_columns() -> None:
    assert {name: w.group_columns for name, w in WINDOW_TABLES.items()} == WINDOW_GROUPS


def test_timestamps_are_cast_to_timestamp_ltz_in_the_insert() -> None:
    cast = "CAST(CAST(`event_time` AS TIMESTAMP(6)) AS TIMESTAMP_LTZ(6)) AS `event_time`"
    assert cast in select_list("iot_readings")
    assert select_list("iot_readings").startswith("`event_id`, `device_id`, CAST(")


def test_minimal_properties_give_documented_defaults() -> None:
    settings = parse_groups(MINIMAL, local=True)
    assert settings.input.source == "archive" and settings.input.archive_path == "/tmp/archive"
    assert settings.iceberg.namespace == "sluice" and settings.iceberg.catalog_name == "sluice"
    assert settings.core.window_seconds == 60 and settings.core.allowed_lateness_seconds == 600
    assert settings.job.checkpoint_interval_seconds == 60 and settings.job.batch_max_records == 500
    assert settings.run_options.jarfile == "lib/pyflink-dependencies.jar"
    assert settings.input.bounded is False and settings.input.records_per_call == 1_000
    core = settings.core_settings()
    assert core.window_seconds == 60 and core.geoip_city_db is None


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([*MINIMAL, group("sluice.nope", a="1")], "unknown property group 'sluice.nope'"),
        (
            [*MINIMAL, group("sluice.job", **{"checkpoint.interval": "5"})],
            "sluice.job: checkpoint.interval: Extra inputs are not permitted",
        ),
        (
            [*MINIMAL, group("sluice.core", **{"window.seconds": "sixty"})],
            "sluice.core: window.seconds: Input should be a valid integer",
        ),
        ([MINIMAL[1]], "property group 'sluice.input' is missing"),
        (
            [group("sluice.input", source="kinesis"), MINIMAL[1]],
            "sluice.input: group: stream.arn is required when source=kinesis",
        ),
        (
            [MINIMAL[0], group("sluice.iceberg", **{"catalog.type": "jdbc", "warehouse": "x"})],
            "jdbc.uri is required when catalog.type=jdbc",
        ),
        ([*MINIMAL, MINIMAL[0]], "property group 'sluice.input' given twice"),
        (
            [
                group("sluice.input", source="kinesis", **{"stream.arn": "a", "bounded": "maybe"}),
                MINIMAL[1],
            ],
            "sluice.input: bounded: Input should be a valid boolean",
        ),
        (
            [
                group(
                    "sluice.input",
                    source="kinesis",
                    **{"stream.arn": "a", "records.per.call": "20000"},
                ),
                MINIMAL[1],
            ],
            "sluice.input: records.per.call: Input should be less than or equal to 10000",
        ),
        ({"not": "a list"}, "expected a JSON list"),
    ],
)
def test_a_bad_property_is_one_line_naming_group_and_key(groups: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_groups(groups, local=True)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_properties_file_names_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"copy flink_conf/application_properties\.local\.json"):
        load_app_settings(tmp_path / "application_properties.json", local=True)
    with pytest.raises(ConfigError, match=r"runtime properties \(property groups\) in MSF"):
        load_app_settings(tmp_path / "application_properties.json", local=False)


@pytest.mark.parametrize(
    "name",
    [
        "application_properties.local.json",
        "application_properties.kinesis-local.json",
        "application_properties.msf.json",
    ],
)
def test_the_committed_property_files_are_valid(name: str) -> None:
    groups = json.loads((REPO / "flink_conf" / name).read_text())
    settings = parse_groups(groups, local="local" in name)
    assert {g["PropertyGroupId"] for g in groups} <= set(GROUPS)
    assert settings.run_options.python == "main.py"


def test_a_wrong_python_is_one_line_naming_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"needs Python 3\.12 .* this is Python 3\.11\.4: run it"):
        check_python((3, 11, 4))
    check_python((3, 12, 1))


def test_catalog_ddl_for_jdbc_and_glue() -> None:
    jdbc = catalog_ddl(parse_groups(MINIMAL, local=True).iceberg)
    assert "'catalog-impl' = 'org.apache.iceberg.jdbc.JdbcCatalog'" in jdbc
    assert (
        "'uri' = 'jdbc:sqlite:/c.db?busy_timeout=60000'" in jdbc
        and "'jdbc.schema-version' = 'V1'" in jdbc
    )
    glue = parse_groups(
        [MINIMAL[0], group("sluice.iceberg", **{"catalog.type": "glue", "warehouse": "s3://b/w"})],
        local=False,
    )
    assert "GlueCatalog" in catalog_ddl(glue.iceberg) and "S3FileIO" in catalog_ddl(glue.iceberg)


def test_a_bounded_kinesis_input_reads_its_settings() -> None:
    given = group(
        "sluice.input", source="kinesis", bounded="true",
        **{"stream.arn": "arn:aws:kinesis:us-east-1:1:stream/s", "records.per.call": "5"},
    )  # fmt: skip
    settings = parse_groups([given, MINIMAL[1]], local=True)
    assert settings.input.bounded is True and settings.input.records_per_call == 5


def test_a_missing_shaded_jar_is_one_line_naming_make_flink_jar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flink_jobs.jars
    from flink_jobs.app.local import classpath

    monkeypatch.setattr(flink_jobs.jars, "SHADED_JAR", tmp_path / "pyflink-dependencies.jar")
    with pytest.raises(ConfigError, match=r"is not built: run 'make flink-jar'"):
        classpath()


def _frame(*records: tuple[str, int, float, bytes]) -> bytes:
    """A frame laid out as ``Frames.java`` writes one (big-endian counts and lengths)."""
    out = [struct.pack(">i", len(records))]
    for sequence, sub, arrival, data in records:
        seq = sequence.encode()
        out.append(struct.pack(">i", len(seq)) + seq + struct.pack(">idi", sub, arrival, len(data)))
        out.append(data)
    return b"".join(out)


def test_a_batch_frame_gives_each_user_record_once_in_sequence_order() -> None:
    from flink_jobs.app.operators import batch_user_records, read_states
    from sluice.stream.kpl import UserRecord, aggregate

    # GIVEN a KPL aggregate of three records (a whole Kinesis record, sub -1), a plain record
    # read twice, and an archive user record, out of order
    (kpl,) = list(aggregate([UserRecord("k", b'{"a":%d}' % i) for i in (1, 2, 3)]))
    frame = _frame(
        ("30", -1, 3.5, b"plain"), ("20", -1, 2.0, kpl.data), ("30", -1, 3.5, b"plain"),
        ("10", 4, 1.25, b"archived"),
    )  # fmt: skip
    # WHEN it is read THEN each position comes once, de-aggregated, in (sequence, sub) order
    records = batch_user_records(frame)
    assert [(r.sequence, r.sub_sequence, r.arrival, r.data) for r in records] == [
        (10, 4, 1.25, b"archived"),
        (20, 0, 2.0, b'{"a":1}'), (20, 1, 2.0, b'{"a":2}'), (20, 2, 2.0, b'{"a":3}'),
        (30, 0, 3.5, b"plain"),
    ]  # fmt: skip
    states = struct.pack(">i", 2) + struct.pack(">i", 3) + b"abc" + struct.pack(">i", 0)
    assert read_states(states) == [b"abc", b""]
