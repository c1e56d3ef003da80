"""``sluice job run``: start the stream job (DirectRunner unless ``--runner`` says otherwise).

Flags are the job's options (``beam_jobs.options``) and Beam's own; dashes and underscores are both
accepted (``--stop-when-idle 5`` is ``--stop_when_idle_seconds 5``). The job logs its counters every
``--progress_seconds`` and prints them as JSON when it ends.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_jobs.metrics import query_counters
from beam_jobs.options import OPTIONS, JobSettings
from beam_jobs.pipeline import build
from sluice.core.config import load_settings
from sluice.core.errors import ConfigError
from sluice.core.runtime import tune_gc

ALIASES = {
    "--stop-when-idle": "--stop_when_idle_seconds",
    "--stop_when_idle": "--stop_when_idle_seconds",
}
KNOWN = {f"--{name}" for name, *_ in OPTIONS}


def normalize_flags(argv: Sequence[str]) -> list[str]:
    """Accept ``--some-option`` for ``--some_option`` and the short aliases of the CLI."""
    out = []
    for arg in argv:
        flag, sep, value = arg.partition("=")
        flag = ALIASES.get(flag, flag)
        underscored = flag.replace("-", "_").replace("__", "--", 1)
        if underscored in KNOWN or underscored in ALIASES.values():
            flag = underscored
        out.append(f"{flag}{sep}{value}")
    return out


def pipeline_options(argv: Sequence[str], *, streaming: bool) -> PipelineOptions:
    """Options from flags, with the local runner pinned unless ``--runner`` says otherwise."""
    options = PipelineOptions(normalize_flags(argv))
    standard = options.view_as(StandardOptions)
    standard.streaming = streaming
    if standard.runner is None:
        # The DirectRunner would first try to download the Prism runner (failing offline, and
        # running a different engine online); its in-process FnApiRunner is pinned instead.
        standard.runner = "FnApiRunner"
    return options


def run_and_report(pipeline: beam.Pipeline) -> int:
    """Run to the end and print every Sluice counter as one JSON line."""
    result = pipeline.run()
    result.wait_until_finish()
    sys.stdout.buffer.write(
        orjson.dumps(query_counters(result), option=orjson.OPT_SORT_KEYS) + b"\n"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    sluice_log = logging.getLogger("sluice")
    sluice_log.addHandler(handler)
    sluice_log.setLevel(logging.INFO)
    sluice_log.propagate = False
    tune_gc()
    options = pipeline_options(list(sys.argv[1:] if argv is None else argv), streaming=True)
    try:
        settings = JobSettings.from_options(options)
        core = load_settings()
    except ConfigError as err:
        print(f"sluice job: {err}", file=sys.stderr)
        return 2
    pipeline = beam.Pipeline(options=options)
    build(pipeline, settings, core)
    return run_and_report(pipeline)


if __name__ == "__main__":
    sys.exit(main())
