"""Helpers of the PyFlink application's tests (``test_app_flink``, ``test_app_kinesis``).

In: what a test runs (``sluice`` commands, property groups) and two warehouses to compare.
Out: the command's result; the MSF property groups of a local run (JDBC catalog over the SQLite
file pyiceberg uses); ``assert_same_tables``, the one comparison of an application run with a
reference run (the Beam job, or an uninterrupted application run): event tables and dead letters
row for row, window rows by key with count, sum, min, max and mean exactly and the sketches'
quantiles and unique counts within their documented error; ``one_line`` for start-up refusals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flink_jobs.settings import REPO_ROOT

sys.path.append(str(REPO_ROOT / "tests" / "pipeline"))
from job_testkit import assert_same_rows, read_tables

__all__ = [
    "EVENT_TABLES",
    "MOTO_CREDENTIALS",
    "SKETCH_ERROR",
    "app_properties",
    "assert_same_tables",
    "kill_folder_processes",
    "one_line",
    "read_tables",
    "sluice",
]

MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
"""moto's dummy credentials, for the JVMs' default chain (moto checks no signature)."""
SKETCH_ERROR = 0.05
"""Relative error allowed for quantiles (KLL, rank error about 1.65 % at k = 200) and unique counts
(HLL) (docs/ARCHITECTURE.md, "Core: aggregation"): partial sketches merged in another order, as two
runs batch differently, may give slightly different estimates."""
EVENT_TABLES = ("iot_readings", "web_requests", "feed_items", "dead_letters")
WINDOW_KEYS = {
    "iot_metrics_1m": ("window_start", "device_id", "metric"),
    "web_traffic_1m": ("window_start", "path", "status_class", "country_iso"),
}
EXACT = {
    "iot_metrics_1m": ("count", "sum", "min", "max", "mean"),
    "web_traffic_1m": ("requests", "bytes"),
}
APPROX = {
    "iot_metrics_1m": ("p50", "p95", "p99"),
    "web_traffic_1m": ("request_time_p50", "request_time_p95", "unique_clients"),
}


def sluice(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """``.venv/bin/sluice ARGS`` in the repository, output captured."""
    return subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "sluice"), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def app_properties(
    source: dict[str, str], state: Path, core: dict[str, str] | None = None, **job: str
) -> list[dict[str, Any]]:
    """Property groups of a local run: ``source`` is ``sluice.input``; the tables go to
    ``state`` (pyiceberg's SQLite catalog and warehouse layout); checkpoints every 2 s."""
    groups = [
        {"PropertyGroupId": "sluice.input", "PropertyMap": source},
        {"PropertyGroupId": "sluice.iceberg",
         "PropertyMap": {"catalog.type": "jdbc", "warehouse": (state / "warehouse").as_uri(),
                         "jdbc.uri": f"jdbc:sqlite:{state / 'catalog.db'}"}},
        {"PropertyGroupId": "sluice.job",
         "PropertyMap": {"checkpoint.interval.seconds": "2", **job}},
    ]  # fmt: skip
    if core:
        groups.append({"PropertyGroupId": "sluice.core", "PropertyMap": core})
    return groups


def _by_key(rows: list[dict[str, Any]], keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        assert key not in out, f"window {key} is stored twice"
        out[key] = tuple(row[c] for c in columns)
    return out


def assert_same_tables(
    mine: dict[str, list[dict[str, Any]]], reference: dict[str, list[dict[str, Any]]]
) -> None:
    """The same event rows and dead letters (every column), the same windows with equal exact
    aggregates, and sketch results within ``SKETCH_ERROR``."""
    for name in EVENT_TABLES:
        assert_same_rows(name, mine[name], reference[name])
    for name, keys in WINDOW_KEYS.items():
        assert mine[name], f"{name} is empty"
        exact, theirs = (
            _by_key(mine[name], keys, EXACT[name]),
            _by_key(reference[name], keys, EXACT[name]),
        )
        only_mine, only_theirs = exact.keys() - theirs.keys(), theirs.keys() - exact.keys()
        assert not only_mine and not only_theirs, (
            f"{name}: {len(only_mine)} windows only in this run, {len(only_theirs)} only in the "
            f"reference (of {len(theirs)}), e.g. {sorted(only_mine, key=str)[:3]}, "
            f"{sorted(only_theirs, key=str)[:3]}"
        )
        different = [k for k in exact if exact[k] != theirs[k]]
        assert not different, f"{name}: {len(different)} windows differ, e.g. {different[0]}"
        approx = _by_key(reference[name], keys, APPROX[name])
        for key, values in _by_key(mine[name], keys, APPROX[name]).items():
            for value, expected in zip(values, approx[key], strict=True):
                assert value == pytest.approx(expected, rel=SKETCH_ERROR, abs=1e-9), (name, key)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command prints (exit 2, no traceback)."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return str(lines[0])


def kill_folder_processes(folder: Path) -> None:
    """SIGKILL any process whose command line names ``folder`` (a JVM a failed stop left)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            pass


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    """``check()``'s first truthy value, polled every 0.5 s; an AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
