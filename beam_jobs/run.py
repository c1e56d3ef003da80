"""``sluice job run``: check the settings and what they point at, then start the stream job.

In: the job's options (``beam_jobs.settings.JobSettings``: flags, else ``SLUICE_<OPTION>``, else the
default; dashes and underscores both accepted, ``--stop-when-idle`` for ``--stop_when_idle_seconds``).
Out: the job's tables; every Sluice counter printed as one JSON line when the job ends.
Errors: an unknown option, a bad value, no region, an unreachable endpoint, a missing stream or an
unusable catalog is one line on stderr and exit 2, before anything runs.
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
from beam_jobs.pipeline import build
from beam_jobs.preflight import check_catalog, check_stream
from beam_jobs.settings import JobSettings, load_job_settings
from sluice.core.errors import ConfigError
from sluice.core.flags import FlagParser
from sluice.core.runtime import tune_gc

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


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    sluice_log = logging.getLogger("sluice")
    sluice_log.addHandler(handler)
    sluice_log.setLevel(logging.INFO)
    sluice_log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    try:
        _, overrides = job_flags().parse(list(sys.argv[1:] if argv is None else argv))
        settings = load_job_settings(overrides)
        job_server = flink_job_server(settings)  # FlinkRunner: a verified jar, never a download
        check_stream(settings)
        check_catalog(settings)
    except ConfigError as err:
        print(f"sluice job: {err}", file=sys.stderr)
        return 2
    configure_logging()
    tune_gc()
    options = pipeline_options(settings, streaming=True)
    if job_server is not None:
        options = PipelineOptions.from_dictionary(
            {**options.get_all_options(drop_default=True), "flink_job_server_jar": str(job_server)}
        )
    pipeline = beam.Pipeline(options=options)
    build(pipeline, settings)
    return run_and_report(pipeline)


if __name__ == "__main__":
    sys.exit(main())
