"""The ``sluice`` command as a newcomer meets it (subprocesses): help everywhere, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [
    (), ("parse",), ("query",), ("tables",), ("status",), ("maintain",), ("dead-letters",), ("job",),
    ("job", "run"), ("replay",), ("edge",), ("edge", "serve"), ("edge", "poll"), ("samples",),
    ("deploy",), ("destroy",),
    ("flink",), ("flink", "cluster"), ("flink", "cluster", "start"), ("flink", "cluster", "stop"),
]  # fmt: skip


def sluice(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def without_aws() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "sluice")
def test_every_command_and_group_answers_help(command: tuple[str, ...]):
    proc = sluice(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: sluice {' '.join(command)}".rstrip())
    assert "Traceback" not in proc.stderr


def test_sluice_help_says_what_sluice_is_and_lists_the_commands():
    text = sluice("--help").stdout
    assert "Sluice is a real-time analytics pipeline" in text
    names = ("parse", "query", "tables", "status", "maintain", "dead-letters", "job", "replay")
    for name in (*names, "edge", "deploy", "destroy"):
        assert f"\n    {name}" in text


def test_job_help_lists_its_options_with_defaults_and_variables():
    text = " ".join(sluice("job", "run", "--help").stdout.split())
    for option, default in [
        ("window_seconds", "60"), ("allowed_lateness_seconds", "600"), ("archive", "on"),
        ("stream_name", "sluice-events"), ("state_dir", ".sluice"), ("commit_interval_seconds", "60.0"),
    ]:  # fmt: skip
        assert f"--{option}" in text
        assert f"SLUICE_{option.upper()}; default: {default})" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("job", "run", "--windw_seconds", "5"), "did you mean --window_seconds?"),
        (("replay", "--from", "2026-01-01", "--to", "2026-01-02", "--archiv", "off"), "did you mean --archive?"),
        (("job", "run", "--archive", "maybe"), "--archive"),
        (("query", "--formt", "csv", "SELECT 1"), "did you mean --format?"),
        (("status", "--sevre"), "did you mean --serve?"),
        (("status", "--port", "http"), "not a port number"),
        (("qurey",), "invalid choice"),
        (("deploy", "--env", "qa"), "invalid choice: 'qa'"),
        (("destroy", "--env", "dev", "--delete-dta"), "unrecognized arguments: --delete-dta"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_exit_2(args: tuple[str, ...], message: str):
    proc = sluice(*args, env=without_aws() | {"AWS_DEFAULT_REGION": "us-east-1"})
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_job_without_a_region_says_what_to_set():
    proc = sluice("job", "run", "--archive", "off", env=without_aws())
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "sluice job: no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or give --region_name"
    )


def test_a_job_against_a_stopped_endpoint_says_what_to_start():
    env = without_aws() | {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # discard port: nothing listens
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    proc = sluice("job", "run", env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "cannot reach http://127.0.0.1:9" in proc.stderr


def test_csv_lines_end_with_a_newline_only(tmp_path: Path):
    query = ["query", "--state-dir", str(tmp_path), "--format", "csv", "SELECT 1 AS a, 'x' AS b"]
    proc = subprocess.run(
        [sys.executable, "-m", "sluice", *query],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"a,b\n1,x\n"


def test_a_failure_is_one_line_and_debug_adds_the_traceback(tmp_path: Path):
    query = ["query", "--state-dir", str(tmp_path), "SELECT * FROM no_such_table"]
    plain = sluice(*query)
    assert plain.returncode == 2 and len(plain.stderr.strip().splitlines()) == 1
    assert "unknown table 'no_such_table'" in plain.stderr
    debug = sluice("--debug", *query)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def test_json_output_keeps_infinities(tmp_path: Path):
    sql = "SELECT 'inf'::DOUBLE AS a, '-inf'::DOUBLE AS b, 'nan'::DOUBLE AS c, 2.5::DOUBLE AS d"
    proc = sluice("query", "--state-dir", str(tmp_path), "--format", "json", sql)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '{"a":"inf","b":"-inf","c":"nan","d":2.5}\n'
