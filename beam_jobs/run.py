"""``sluice job run``: check the settings and what they point at, then start the stream job.

In: the job's options (``beam_jobs.settings.JobSettings``: flags, else ``SLUICE_<OPTION>``, else the
default; dashes and underscores both accepted, ``--stop-when-idle`` for ``--stop_when_idle_seconds``).
Out: the job's tables; every Sluice counter printed as one JSON line when the job ends.
Errors: an unknown option, a bad value, no region, an unreachable endpoint, a missing stream or an
unusable catalog is one line on stderr and exit 2, before anything runs; so are a different or
recreated stream against existing tables (see ``sluice.tables.ownership``) and another job starting on
the same tables at the same moment. A job whose tables a newer job claimed while it ran stops with
one line (``fenced: ...``) and exit 2, having committed nothing twice.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_jobs.flink_runner import flink_job_server
from beam_jobs.metrics import query_counters
from beam_jobs.pipeline import build, claim_start
from beam_jobs.preflight import check_catalog, check_stream
from beam_jobs.settings import JobSettings, load_job_settings
from sluice.core.errors import ConfigError
from sluice.core.flags import FlagParser
from sluice.core.logs import LogStyle, log_formatter
from sluice.core.runtime import tune_gc
from sluice.tables.ownership import FENCED_MARKER, fenced_message

__all__ = ["configure_logging", "job_flags", "main", "pipeline_options", "run_and_report"]

ALIASES = {
    "--stop-when-idle": "stop_when_idle_seconds",
    "--stop_when_idle": "stop_when_idle_seconds",
}


def job_flags(prog: str = "sluice job run") -> FlagParser:
    """The job's flags, made from ``JobSettings``."""
    return FlagParser(
        prog,
        JobSettings,
        description="Run the stream job: Kinesis -> parse and validate -> GeoIP -> filters -> "
        "event-time windows -> Iceberg, exactly once. It resumes where the tables say it stopped.",
        aliases=ALIASES,
    )


def pipeline_options(settings: JobSettings, *, streaming: bool) -> PipelineOptions:
    """Beam's options for these settings: the runner, streaming or batch."""
    options = PipelineOptions([])
    standard = options.view_as(StandardOptions)
    standard.streaming = streaming
    standard.runner = settings.runner
    return options


def run_and_report(pipeline: beam.Pipeline) -> int:
    """Run to the end and print every Sluice counter as one JSON line."""
    result = pipeline.run()
    result.wait_until_finish()
    sys.stdout.buffer.write(
        orjson.dumps(query_counters(result), option=orjson.OPT_SORT_KEYS) + b"\n"
    )
    return 0


_BEAM_ERROR_LOGGERS = (
    "apache_beam.runners.common",
    "apache_beam.runners.worker.sdk_worker",
    "apache_beam.runners.worker.bundle_processor",
    "apache_beam.runners.portability.fn_api_runner.fn_runner",
)
"""Where Beam logs a failed bundle with its traceback before raising it."""


class _WithoutFencing(logging.Filter):
    """Drops Beam's traceback of a fenced writer: the job reports fencing in one line itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return FENCED_MARKER not in record.getMessage()


def configure_logging(style: LogStyle = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter(style, sys.stderr))
    sluice_log = logging.getLogger("sluice")
    sluice_log.addHandler(handler)
    sluice_log.setLevel(logging.INFO)
    sluice_log.propagate = False
    for name in _BEAM_ERROR_LOGGERS:
        beam_log = logging.getLogger(name)
        if not any(isinstance(f, _WithoutFencing) for f in beam_log.filters):
            beam_log.addFilter(_WithoutFencing())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        _, overrides = job_flags().parse(list(sys.argv[1:] if argv is None else argv))
        settings = load_job_settings(overrides)
        job_server = flink_job_server(settings)  # FlinkRunner: a verified jar, never a download
        stream = check_stream(settings)
        check_catalog(settings)
        configure_logging(settings.log_style)
        job_start = claim_start(settings, stream)
    except ConfigError as err:
        print(f"sluice job: {err}", file=sys.stderr)
        return 2
    tune_gc()
    options = pipeline_options(settings, streaming=True)
    if job_server is not None:
        options = PipelineOptions.from_dictionary(
            {**options.get_all_options(drop_default=True), "flink_job_server_jar": str(job_server)}
        )
    pipeline = beam.Pipeline(options=options)
    build(pipeline, settings, job_start)
    try:
        return run_and_report(pipeline)
    except Exception as err:
        fenced = fenced_message(str(err))
        if fenced is None:
            raise
        print(f"sluice job: fenced: {fenced}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
