"""Every Flink test leaves no process behind; the PyFlink application's zip and cluster.

``app_zip``: the MSF application zip (``sluice flink package`` around ``make flink-jar``'s shaded
jar), built once per session. ``session_flink_dir``: the folder of one local cluster for the
application's and the Kinesis source's tests (``test_app_flink``, ``test_app_kinesis``,
``test_flink_kinesis_source``; one cluster start instead of two), started as ``sluice flink
run-local`` starts it (the shaded jar on ``HADOOP_CLASSPATH``), checkpointing every 2 s (jobs that
set no interval in code; the application sets its own), with moto's dummy credentials in its
environment (the Kinesis source's default credentials chain reads them); stopped at the end.

A TaskManager runs a job's Python functions in worker processes of this repository's
``.venv-flink`` (``pyflink-udf-runner.sh`` -> ``beam_boot``). A TaskManager a test SIGKILLs cannot
stop them, so they outlive it. At the end of the session every such orphan
of this repository is killed (only orphans: a worker whose TaskManager still runs is its to stop).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flink_jobs.settings import REPO_ROOT

_WORKER_MARKS = (b"pyflink-udf-runner.sh", b"pyflink.fn_execution.beam.beam_boot")


def _process(pid: int) -> tuple[bytes, int] | None:
    """(command line, parent pid) of a process, or None when it is gone."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return cmdline, parent


def orphaned_workers(root: Path = REPO_ROOT) -> list[int]:
    """Python worker processes of ``root``'s .venv-flink that no TaskManager (a java process)
    holds any more: the first ancestor that is not a worker is not a JVM."""
    venv = str(root / ".venv-flink").encode()

    def is_worker(cmdline: bytes) -> bool:
        return venv in cmdline and any(mark in cmdline for mark in _WORKER_MARKS)

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (seen := _process(int(entry.name))) is None:
            continue
        if not is_worker(seen[0]):
            continue
        ancestor = _process(seen[1])
        while ancestor is not None and is_worker(ancestor[0]):
            ancestor = _process(ancestor[1])
        if ancestor is None or b"java" not in ancestor[0]:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_orphaned_python_workers() -> Iterator[None]:
    yield
    for pid in orphaned_workers():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def app_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MSF zip, its lib/ jar the shaded jar the local cluster has on its classpath."""
    from app_testkit import sluice

    from flink_jobs.jars import SHADED_JAR

    out = tmp_path_factory.mktemp("package") / "app.zip"
    built = sluice("flink", "package", "--out", str(out), "--jar", str(SHADED_JAR), timeout=1800)
    assert built.returncode == 0, built.stderr
    return out


@pytest.fixture(scope="session")
def session_flink_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from app_testkit import MOTO_CREDENTIALS, kill_folder_processes, sluice

    from flink_jobs.app.local import classpath

    if not (REPO_ROOT / ".venv-flink" / "bin" / "python").exists():
        subprocess.run(["make", "flink-venv"], cwd=REPO_ROOT, check=True, timeout=1200)
    folder = tmp_path_factory.mktemp("session-cluster") / "flink"
    env = {"HADOOP_CLASSPATH": classpath(), **MOTO_CREDENTIALS}
    started = sluice(
        "flink", "cluster", "start", "--flink_dir", str(folder),
        "--checkpoint_interval_seconds", "2", env=env, timeout=300,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        yield folder
    finally:
        sluice("flink", "cluster", "stop", "--flink_dir", str(folder), timeout=120)
        kill_folder_processes(folder)  # never leave a JVM of this folder behind
