"""``sluice edge serve|poll``: the Lambda edges run locally, against a real or local AWS endpoint.

``serve``: the IoT and access-log edges behind a local HTTP server, as API Gateway would call them
(``curl -X POST localhost:8080/iot -d @reading.json``). ``poll``: the feed poller, once.
Each action's ``--help`` lists its options. The edges are adapters (boto3, Powertools), imported
only when asked for; without the ``edges`` extra the command says so in one line.
"""

from __future__ import annotations

import argparse
from typing import Any

from sluice.core.extras import require

__all__ = ["register"]


def register(commands: Any) -> None:
    edge = commands.add_parser(
        "edge",
        help="run the Lambda edges locally: 'serve' (HTTP, like API Gateway) or 'poll' (feeds once)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = edge.add_subparsers(dest="action", required=True, title="actions", metavar="ACTION")
    serve = actions.add_parser(
        "serve", help="the IoT and log edges behind a local HTTP server", add_help=False
    )
    serve.set_defaults(handler=run_serve, forwards=True, parser_of=serve)
    poll = actions.add_parser("poll", help="run the feed poller once", add_help=False)
    poll.set_defaults(handler=run_poll, forwards=True, parser_of=poll)


def _require(rest: list[str]) -> None:
    if not {"-h", "--help"} & set(rest):
        require("edges", "boto3", "aws_lambda_powertools")


def run_serve(args: argparse.Namespace, rest: list[str]) -> int:
    _require(rest)
    from edge_lambdas.local_server import main

    return main(rest)


def run_poll(args: argparse.Namespace, rest: list[str]) -> int:
    _require(rest)
    from edge_lambdas.feed_poller.local import main

    return main(rest)
