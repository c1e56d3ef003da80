"""``sluice job run [options]`` and ``sluice replay --from T --to T [options]``: the stream job.

In: the job's options (``sluice job run --help`` lists every one with its environment variable and
default; they are the fields of ``beam_jobs.settings.JobSettings``).
Out: the job's tables; its counters as one JSON line when it ends. The job is an adapter (Beam,
boto3), imported only when asked for; without the ``beam`` extra the command says so in one line.
"""

from __future__ import annotations

import argparse
from typing import Any

from sluice.core.extras import require

__all__ = ["register"]


def register(commands: Any) -> None:
    job = commands.add_parser(
        "job",
        help="the stream job: 'sluice job run' starts it (sluice job run --help: its options)",
        description="The stream job: Kinesis -> parse -> GeoIP -> filters -> windows -> Iceberg.",
    )
    actions = job.add_subparsers(dest="action", required=True, title="actions", metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="run the stream job until stopped (or idle: --stop-when-idle SECONDS)",
        add_help=False,  # its --help is the job's own, with every option
    )
    run.set_defaults(handler=run_job, forwards=True, parser_of=run)
    replay = commands.add_parser(
        "replay",
        help="re-process the raw archive over an arrival-time range: --from T --to T [job options]",
        add_help=False,
    )
    replay.set_defaults(handler=run_replay, forwards=True, parser_of=replay)


def run_job(args: argparse.Namespace, rest: list[str]) -> int:
    if not {"-h", "--help"} & set(rest):
        require("beam", "apache_beam", "boto3")
    from beam_jobs.run import main

    return main(rest)


def run_replay(args: argparse.Namespace, rest: list[str]) -> int:
    if not {"-h", "--help"} & set(rest):
        require("beam", "apache_beam", "boto3")
    from beam_jobs.replay import main

    return main(rest)
