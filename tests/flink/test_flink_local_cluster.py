"""The local Flink cluster for real (``make test-flink``, marker ``flink``): ``sluice flink cluster
start`` -> a checkpointed PyFlink job -> the TaskManager SIGKILLed and a fresh one started -> the
job recovers from its checkpoint -> ``stop`` leaves no process. Plus the failures that need a real
``.venv-flink`` (a busy port, a start that times out).

GIVEN a cluster folder in tmp_path, WHEN the CLI runs as a user runs it (a subprocess), THEN the
REST API, the checkpoint folder and /proc say what happened.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from app_testkit import wait_for

from flink_jobs.cluster import Cluster, rest_get, running_cluster, submit_python
from flink_jobs.settings import REPO_ROOT, ClusterSettings

pytestmark = pytest.mark.flink

FLINK_VENV = REPO_ROOT / ".venv-flink"
JOB = Path(__file__).parent / "jobs" / "datagen_window.py"


def sluice(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def processes_of(folder: Path) -> list[int]:
    """Every live (not zombie) process whose command line names the cluster folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(folder).encode() in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def flink_venv() -> Path:
    """``.venv-flink``, created with ``make flink-venv`` when it is not there yet."""
    if not (FLINK_VENV / "bin" / "python").exists():
        subprocess.run(["make", "flink-venv"], cwd=REPO_ROOT, check=True, timeout=1200)
    return FLINK_VENV


@pytest.fixture
def folder(tmp_path: Path, flink_venv: Path) -> Iterator[Path]:
    """The cluster's folder; whatever the test left running is stopped and checked gone."""
    where = tmp_path / "flink"
    yield where
    if processes_of(where):
        sluice("flink", "cluster", "stop", "--flink_dir", str(where))
    for pid in processes_of(where):  # never leave a JVM behind, even when stop failed
        os.kill(pid, signal.SIGKILL)


def job_state(cluster: Cluster, job_id: str) -> tuple[str, list[str]]:
    job = rest_get(cluster.rest, f"/jobs/{job_id}") or {}
    return job.get("state", ""), [v.get("status", "") for v in job.get("vertices", [])]


def fully_running(cluster: Cluster, job_id: str) -> bool:
    state, vertices = job_state(cluster, job_id)
    return state == "RUNNING" and bool(vertices) and set(vertices) == {"RUNNING"}


def restarts(cluster: Cluster, job_id: str) -> int:
    found = rest_get(cluster.rest, f"/jobs/{job_id}/metrics?get=numRestarts") or []
    return int(found[0]["value"]) if found else 0


def checkpoints(cluster: Cluster, job_id: str) -> dict[str, Any]:
    return rest_get(cluster.rest, f"/jobs/{job_id}/checkpoints") or {}


def test_cluster_runs_a_checkpointed_job_survives_a_killed_taskmanager_and_stops(folder: Path):
    # GIVEN a cluster started by the CLI, checkpointing every 2 s
    started = sluice(
        "flink",
        "cluster",
        "start",
        "--flink_dir",
        str(folder),
        "--checkpoint_interval_seconds",
        "2",
    )
    assert started.returncode == 0, started.stderr
    rest = started.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"127\.0\.0\.1:\d{2,5}", rest), started.stdout
    cluster = running_cluster(ClusterSettings(flink_dir=folder))
    assert cluster.rest == rest

    # THEN the REST API shows one TaskManager with two free slots, in a JVM of its own
    tms = rest_get(rest, "/taskmanagers")["taskmanagers"]
    assert len(tms) == 1 and tms[0]["slotsNumber"] == 2 and tms[0]["freeSlots"] == 2
    assert "@127.0.0.1:" in tms[0]["path"]
    jm_pids, tm_pids = cluster.pids("standalonesession"), cluster.pids("taskexecutor")
    assert len(jm_pids) == 1 and len(tm_pids) == 1 and jm_pids != tm_pids
    shown = sluice("flink", "cluster", "status", "--flink_dir", str(folder))
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert (status["rest"], status["taskmanagers"], status["slots_total"]) == (rest, 1, 2)
    assert status["jobmanager_pids"] == jm_pids and status["taskmanager_pids"] == tm_pids
    config = (folder / "conf" / "config.yaml").read_text()
    assert "taskmanager.numberOfTaskSlots: 2" in config
    assert f"execution.checkpointing.dir: {(folder / 'checkpoints').as_uri()}" in config

    # WHEN a PyFlink job (datagen -> 1-minute tumbling window -> blackhole) is submitted
    job_id = submit_python(cluster, JOB)
    wait_for("the job to run", lambda: fully_running(cluster, job_id))

    # THEN it completes a checkpoint into the cluster's local folder
    first = wait_for(
        "a completed checkpoint",
        lambda: (checkpoints(cluster, job_id).get("latest") or {}).get("completed"),
    )
    chk = Path(first["external_path"].removeprefix("file:"))
    assert chk.parent == folder / "checkpoints" / job_id
    assert (chk / "_metadata").is_file()
    assert restarts(cluster, job_id) == 0

    # WHEN the TaskManager is SIGKILLed and a fresh one is started by the CLI
    os.kill(tm_pids[0], signal.SIGKILL)
    wait_for("the killed TaskManager to be gone", lambda: tm_pids[0] not in processes_of(folder))
    fresh = sluice("flink", "cluster", "start-taskmanager", "--flink_dir", str(folder))
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip().splitlines()[-1] == rest
    new_tms = cluster.pids("taskexecutor")
    assert len(new_tms) == 1 and new_tms != tm_pids

    # THEN the job restarts from its checkpoint and runs again, checkpointing on
    # (the job's numRestarts metric can read empty under load for a while after a restart; a
    # restore from a checkpoint is the same fact, from the checkpoint statistics)
    wait_for(
        "a restart",
        lambda: (
            restarts(cluster, job_id) > 0
            or bool((checkpoints(cluster, job_id).get("latest") or {}).get("restored"))
        ),
        timeout=180,
    )
    wait_for("the job to run again", lambda: fully_running(cluster, job_id), timeout=180)
    restored = wait_for(
        "a restore from a checkpoint",
        lambda: (checkpoints(cluster, job_id).get("latest") or {}).get("restored"),
    )
    assert restored["is_savepoint"] is False
    assert restored["id"] >= first["id"]
    wait_for(
        "a checkpoint after the restore",
        lambda: (
            (checkpoints(cluster, job_id).get("latest") or {}).get("completed", {}).get("id", 0)
            > restored["id"]
        ),
    )

    # WHEN the cluster is stopped THEN no process of it is left
    stopped = sluice("flink", "cluster", "stop", "--flink_dir", str(folder))
    assert stopped.returncode == 0, stopped.stderr
    assert processes_of(folder) == []
    assert rest_get(rest, "/overview", timeout=2) is None


def one_line_refusal(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception" not in lines[0]
    return lines[0]


def test_a_busy_rest_port_is_one_line_and_starts_nothing(folder: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_refusal(
            sluice(
                "flink", "cluster", "start", "--flink_dir", str(folder), "--rest_port", str(port)
            )
        )
    assert f"port {port} on 127.0.0.1 (REST) is busy" in line
    assert processes_of(folder) == []


def test_a_start_that_times_out_names_the_log_and_leaves_no_process(folder: Path):
    line = one_line_refusal(
        sluice(
            "flink",
            "cluster",
            "start",
            "--flink_dir",
            str(folder),
            "--start_timeout_seconds",
            "0.5",
        )
    )
    assert "no TaskManager with 2 free slots registered within 0.5 s" in line
    assert str(folder / "log") in line
    assert processes_of(folder) == []
    stop = one_line_refusal(sluice("flink", "cluster", "stop", "--flink_dir", str(folder)))
    assert "no Flink cluster is running" in stop
