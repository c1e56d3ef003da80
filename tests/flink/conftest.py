"""Every Flink test leaves no process behind.

A TaskManager runs a job's Python functions in worker processes of this repository's
``.venv-flink`` (``pyflink-udf-runner.sh`` -> ``beam_boot``). A TaskManager a test SIGKILLs cannot
stop them, so they outlive it. At the end of the session every such orphan
of this repository is killed (only orphans: a worker whose TaskManager still runs is its to stop).
"""

from __future__ import annotations

import contextlib
import os
import signal
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
