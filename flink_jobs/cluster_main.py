"""``sluice flink cluster start|stop|status|start-taskmanager``: the local Flink cluster.

In: the action and its options (the fields of ``flink_jobs.settings.ClusterSettings``; ``--help``
lists them with their environment variables and defaults).
Out: ``start`` and ``start-taskmanager`` print the processes and folders on standard error and the
REST address ``HOST:PORT`` as the last line of standard output; ``stop`` the processes it stopped;
``status`` one JSON object. Errors: one line (``ClusterError``), exit 2 in the CLI.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from flink_jobs import cluster as local
from flink_jobs.settings import ClusterSettings, load_cluster_settings
from sluice.core.flags import FlagParser

__all__ = ["main"]


def _settings(action: str, argv: Sequence[str], description: str) -> ClusterSettings:
    flags = FlagParser(f"sluice flink cluster {action}", ClusterSettings, description=description)
    _, overrides = flags.parse(list(argv))
    return load_cluster_settings(overrides)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(action: str, argv: Sequence[str], description: str = "") -> int:
    """Run one action (``start``, ``stop``, ``status``, ``start-taskmanager``)."""
    settings = _settings(action, argv, description)
    if action == "start":
        cluster = local.start(settings)
        _say(
            f"Flink cluster running from {cluster.folder}: JobManager pid "
            f"{','.join(map(str, cluster.pids(local.JOBMANAGER)))}, TaskManager pid "
            f"{','.join(map(str, cluster.pids(local.TASKMANAGER)))}; logs in {cluster.log_dir}, "
            f"checkpoints in {cluster.checkpoints}"
        )
        print(cluster.rest, flush=True)
    elif action == "start-taskmanager":
        cluster, pid = local.start_taskmanager(settings)
        _say(f"TaskManager pid {pid} registered with the JobManager at {cluster.rest}")
        print(cluster.rest, flush=True)
    elif action == "stop":
        cluster, pids = local.stop(settings)
        _say(f"stopped the Flink cluster at {cluster.rest} (pids {', '.join(map(str, pids))})")
    else:
        print(json.dumps(local.status(settings), indent=2), flush=True)
    return 0
