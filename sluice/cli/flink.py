"""``sluice flink cluster start|stop|status|start-taskmanager``: a local Flink cluster;
``sluice flink run-local`` (alias ``run``): the PyFlink (MSF) application, from its zip, on that
cluster (started with MSF's one shaded jar on its classpath when none runs) or, with
``--flink_master HOST:PORT``, on an already-running cluster;
``sluice flink package``: the MSF application zip (``flink_jobs.app``).

A real standalone cluster (a JobManager and a TaskManager JVM, two task slots, checkpoints to a
local folder) on 127.0.0.1, run from the Flink distribution of ``.venv-flink`` (``make
flink-venv``). ``start`` prints the REST address ``HOST:PORT`` as its last line. The processes and
their configuration are the adapter ``flink_jobs.cluster``, imported only when asked for; each
action's ``--help`` lists its options.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

ACTIONS = {
    "start": "start a JobManager and a TaskManager (2 slots) on 127.0.0.1; prints HOST:PORT last",
    "stop": "stop every JobManager and TaskManager of the cluster and wait for them to exit",
    "status": "the cluster's REST address, processes, slots and jobs, as JSON",
    "start-taskmanager": "start one more TaskManager (say, after one was killed)",
}


APP_ACTIONS = {
    "run-local": "run the PyFlink application zip on the local cluster (--properties FILE "
    "[--flink_master HOST:PORT] [--wait])",
    "package": "build the MSF application zip (main.py, lib/ jar, dep/) [--out FILE] [--jar FILE]",
}


APP_ALIASES = {"run-local": ["run"]}
"""``sluice flink run`` is the command's first name, kept working."""


def register(commands: Any) -> None:
    flink = commands.add_parser(
        "flink",
        help="Flink: 'sluice flink cluster start|stop|status' runs a local Flink cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = flink.add_subparsers(dest="group", required=True, title="groups", metavar="GROUP")
    cluster = groups.add_parser(
        "cluster", help="a local standalone Flink cluster: start, stop, status, start-taskmanager"
    )
    actions = cluster.add_subparsers(
        dest="action", required=True, title="actions", metavar="ACTION"
    )
    for name, text in ACTIONS.items():
        action = actions.add_parser(name, help=text, add_help=False)
        action.set_defaults(handler=run_cluster, forwards=True, parser_of=action, verb=name)
    for name, text in APP_ACTIONS.items():
        aliases = APP_ALIASES.get(name, [])
        app = groups.add_parser(name, help=text, add_help=False, aliases=aliases)
        app.set_defaults(handler=run_app, forwards=True, parser_of=app, verb=name)


def run_cluster(args: argparse.Namespace, rest: list[str]) -> int:
    from flink_jobs.cluster_main import main

    return main(args.verb, rest, ACTIONS[args.verb])


def run_app(args: argparse.Namespace, rest: list[str]) -> int:
    if args.verb == "run-local":
        from flink_jobs.app.local import main as run_main

        return run_main(rest)
    from flink_jobs.app.package import main as package_main

    return package_main(rest)
