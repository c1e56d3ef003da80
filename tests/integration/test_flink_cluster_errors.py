"""``sluice flink cluster`` refusals that need no Flink (part of ``make test``, well under a second
each): no ``.venv-flink``, no Java, no cluster to stop or show, a mistyped option. Each is one line
on standard error naming what to run, exit 2, never a traceback. The refusals that need a real
``.venv-flink`` (a busy port, a start timeout) are in tests/flink (``make test-flink``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def sluice(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def refusal(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sluice"), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def fake_flink_venv(root: Path) -> Path:
    """A folder shaped like .venv-flink (a python, a Flink distribution) whose scripts never run."""
    home = root / "lib" / "python3.12" / "site-packages" / "pyflink"
    (home / "bin").mkdir(parents=True)
    (home / "lib").mkdir()
    (home / "bin" / "jobmanager.sh").write_text("exit 1\n")
    (home / "lib" / "flink-dist-2.2.1.jar").write_bytes(b"")
    (root / "bin").mkdir()
    (root / "bin" / "python").write_text("")
    return root


def test_a_missing_flink_venv_names_make_flink_venv(tmp_path: Path):
    line = refusal(
        sluice(
            "flink", "cluster", "start", "--flink_dir", str(tmp_path / "c"),
            "--flink_venv", str(tmp_path / "nothing"),
        )
    )  # fmt: skip
    assert "no PyFlink environment" in line and "make flink-venv" in line


def test_no_java_names_what_to_install(tmp_path: Path):
    venv = fake_flink_venv(tmp_path / "venv")
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"} | {"PATH": str(empty)}
    line = refusal(
        sluice(
            "flink", "cluster", "start", "--flink_dir", str(tmp_path / "c"),
            "--flink_venv", str(venv), env=env,
        )
    )  # fmt: skip
    assert "Java not found" in line and "JAVA_HOME" in line
    assert not (tmp_path / "c" / "run").exists()  # nothing was started


@pytest.mark.parametrize("action", ["stop", "status", "start-taskmanager"])
def test_no_cluster_running_names_start(tmp_path: Path, action: str):
    line = refusal(sluice("flink", "cluster", action, "--flink_dir", str(tmp_path / "c")))
    assert "no Flink cluster is running from" in line
    assert "sluice flink cluster start" in line


def test_a_mistyped_option_names_the_closest(tmp_path: Path):
    line = refusal(sluice("flink", "cluster", "start", "--rest_prot", "1"))
    assert "did you mean --rest_port?" in line


def test_a_bad_value_names_the_option():
    line = refusal(sluice("flink", "cluster", "start", "--rest_port", "70000"))
    assert "--rest_port" in line


def test_help_lists_the_options():
    proc = sluice("flink", "cluster", "start", "--help")
    assert proc.returncode == 0
    assert "--flink_dir" in proc.stdout and "SLUICE_REST_PORT" in proc.stdout


def test_the_flink_runner_refuses_to_start_without_the_job_server_jar(tmp_path: Path):
    env = os.environ | {"SLUICE_JAR_CACHE": str(tmp_path / "jars")}
    line = refusal(sluice("job", "run", "--runner", "FlinkRunner", env=env))
    assert "beam-runners-flink-2.2-job-server-2.77.0.jar" in line
    assert "run 'make flink-jars'" in line
    assert not (tmp_path / "jars").exists()  # looked for, never downloaded


def test_a_cached_jar_that_fails_its_checksum_is_refused(tmp_path: Path, monkeypatch):
    from flink_jobs.jars import JarError, cached_jar, find

    monkeypatch.setenv("SLUICE_JAR_CACHE", str(tmp_path))
    jar = find("iceberg-flink-runtime-2.0")
    (tmp_path / jar.file_name).write_bytes(b"not the jar")
    with pytest.raises(JarError, match=r"fails its checksum.*make flink-jars"):
        cached_jar(jar)
