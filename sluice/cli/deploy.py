"""``sluice deploy --env dev|prod [--dry-run]`` and ``sluice destroy --env dev|prod [--delete-data]``.

The AWS side (boto3, the templates, SAM translation) is the adapter ``infra.aws.deploy``, imported
only when a command runs; without the ``deploy`` extra the command says so in one line.
"""

from __future__ import annotations

import argparse
from typing import Any

from sluice.core.extras import require

__all__ = ["register"]


def register(commands: Any) -> None:
    for name, summary in (
        ("deploy", "deploy an environment's stacks to AWS: package, upload, change set, deploy"),
        ("destroy", "delete an environment's stacks (data kept unless --delete-data)"),
    ):
        parser = commands.add_parser(name, help=summary, add_help=False)
        parser.set_defaults(handler=_run, forwards=True, parser_of=parser, aws_command=name)


def _run(args: argparse.Namespace, rest: list[str]) -> int:
    require("deploy", "boto3", "samtranslator", "yaml")
    from infra.aws.deploy import main

    return main(rest, command=args.aws_command)
