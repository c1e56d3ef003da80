"""A damaged catalog or table is one line naming it, exit 2, for ``sluice tables`` and ``sluice query``.

Damage done to a real state dir: the current metadata file deleted or corrupt, ``catalog.db``
overwritten with garbage, truncated or with its pages damaged, and a manifest whose entry makes
pyiceberg's Avro decoder raise ``SystemError``.
"""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from test_query_guard import write_readings

from sluice.tables.warehouse import WarehouseSettings, open_catalog

QUERY = "SELECT count(*) AS n FROM iot_readings"


def sluice(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args], capture_output=True, text=True, timeout=120
    )


def one_line_exit_2(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    return proc.stderr.strip()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    write_readings(tmp_path / "state")
    return tmp_path / "state"


def metadata_file(state: Path, table: str = "iot_readings") -> Path:
    location = open_catalog(WarehouseSettings(state_dir=state)).load_table(f"sluice.{table}")
    return Path(location.metadata_location.removeprefix("file://"))


@pytest.mark.parametrize("command", [("tables",), ("query", QUERY)], ids=["tables", "query"])
def test_a_missing_metadata_file_is_named(state: Path, command: tuple[str, ...]) -> None:
    metadata = metadata_file(state)
    metadata.unlink()
    line = one_line_exit_2(sluice(*command, "--state-dir", str(state)))
    assert line.startswith(f"sluice: {command[0]} failed: cannot read table iot_readings: ")
    assert metadata.name in line


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"format-version": 2', "invalid table metadata: Invalid JSON"),
        (b'{"format-version": 2}', "invalid table metadata: "),
        (b"\xff\xfe", "'utf-8' codec can't decode"),
    ],
)
def test_corrupt_metadata_names_the_table(state: Path, content: bytes, reason: str) -> None:
    metadata_file(state, "web_requests").write_bytes(content)
    line = one_line_exit_2(sluice("tables", "--state-dir", str(state)))
    assert line.startswith(f"sluice: tables failed: cannot read table web_requests: {reason}")


@pytest.mark.parametrize("command", [("tables",), ("query", QUERY)], ids=["tables", "query"])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "pages", "folder"])
def test_a_damaged_catalog_is_named(state: Path, command: tuple[str, ...], damage: str) -> None:
    catalog = state / "catalog.db"
    data = catalog.read_bytes()
    if damage == "garbage":
        catalog.write_bytes(bytes(range(256)) * 12)
    elif damage == "truncated":
        catalog.write_bytes(data[:5000])
    elif damage == "pages":  # the header page intact, every other page overwritten
        catalog.write_bytes(data[:4096] + b"\xff" * (len(data) - 4096))
    else:
        catalog.unlink()
        catalog.mkdir()
    line = one_line_exit_2(sluice(*command, "--state-dir", str(state)))
    opened = f"sluice: cannot open the catalog {catalog.resolve()}: "
    read = f"sluice: {command[0]} failed: cannot read table iot_readings: the catalog is damaged: "
    assert line.startswith((opened, read)), line
    if damage == "garbage":
        assert line == opened + "file is not a database"


def _zigzag(value: int) -> bytes:
    """An Avro long: zig-zag, then variable length."""
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def garble_manifest(path: Path) -> None:
    """Keep the manifest's Avro header; replace its entries by one whose file path is -5 bytes."""
    data = path.read_bytes()
    sync = data[-16:]  # every Avro block, and the header, ends with the file's sync marker
    header = data[: data.index(sync) + 16]
    entry = (
        _zigzag(1)  # status ADDED
        + _zigzag(1) + _zigzag(0)  # snapshot id: the long branch of the union, 0
        + _zigzag(0) + _zigzag(0)  # sequence numbers: null
        + _zigzag(0)  # content DATA
        + _zigzag(-5)  # file path: a string of length -5
        + bytes(40)
    )  # fmt: skip
    if b"avro.codec" + _zigzag(len(b"deflate")) + b"deflate" in header:
        packer = zlib.compressobj(wbits=-15)  # Avro's deflate is raw deflate
        entry = packer.compress(entry) + packer.flush()
    path.write_bytes(header + _zigzag(1) + _zigzag(len(entry)) + entry + sync)


def test_a_garbage_manifest_is_one_line(state: Path) -> None:
    table = open_catalog(WarehouseSettings(state_dir=state)).load_table("sluice.iot_readings")
    snapshot = table.current_snapshot()
    assert snapshot is not None
    [manifest] = snapshot.manifests(table.io)
    garble_manifest(Path(manifest.manifest_path.removeprefix("file://")))
    with pytest.raises(SystemError):  # what pyiceberg raises, in process
        table.scan().to_arrow()
    line = one_line_exit_2(sluice("query", QUERY, "--state-dir", str(state)))
    assert line.startswith("sluice: query failed: cannot read table iot_readings: "), line
    assert "Negative size" in line
    debug = sluice("--debug", "query", QUERY, "--state-dir", str(state))
    assert debug.returncode == 2 and "SystemError" in debug.stderr  # the cause, with --debug
    assert debug.stderr.strip().splitlines()[-1] == line
    listed = sluice("tables", "--state-dir", str(state), "--format", "csv")  # metadata only
    assert listed.returncode == 0 and "\niot_readings,6,1,1," in listed.stdout, listed.stderr
