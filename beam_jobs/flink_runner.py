"""What Beam's FlinkRunner needs before the job starts: Beam's Flink job server jar, verified.

In: the job's settings (``--runner FlinkRunner``) and the jar manifest ``flink_conf/jars.lock``.
Out: the job server jar's path in the jar cache (``make flink-jars`` put it there and checked its
SHA-256), passed to the runner as ``--flink_job_server_jar``; ``None`` for the in-process runner.
Errors: a ``ConfigError`` of one line naming the jar and ``make flink-jars`` when it is missing,
unpinned or altered, or pinned for another Beam version, before anything runs.

Why: without ``--flink_job_server_jar`` Beam downloads the job server when the job is submitted,
and nothing may be downloaded at run time.
"""

from __future__ import annotations

from pathlib import Path

from apache_beam.version import __version__ as beam_version

from beam_jobs.settings import JobSettings
from flink_jobs.jars import JarError, cached_jar, find

__all__ = ["JOB_SERVER", "flink_job_server"]

JOB_SERVER = "beam-runners-flink-2.2-job-server"
"""The job server for the local cluster's Flink (2.2, .venv-flink's apache-flink 2.2.1)."""


def flink_job_server(settings: JobSettings) -> Path | None:
    """The verified job server jar for ``--runner FlinkRunner``; ``None`` for other runners."""
    if settings.runner != "FlinkRunner":
        return None
    jar = find(JOB_SERVER)
    if jar.version != beam_version:
        raise JarError(
            f"flink_conf/jars.lock pins {jar.coordinates} but this environment runs Beam "
            f"{beam_version}: pin the job server of Beam {beam_version} and run 'make flink-jars'"
        )
    return cached_jar(jar)
