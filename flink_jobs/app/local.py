"""``sluice flink run-local``: the MSF application zip, unpacked, submitted to a local Flink cluster.

In: ``--properties FILE`` (MSF's property-group JSON; it goes beside main.py as
``application_properties.json``, read with ``IS_LOCAL=true``), ``--zip FILE`` (default: build one with
``sluice flink package`` around the shaded jar), ``--flink_dir`` (the local cluster's folder; started
when none runs there), ``--flink_master HOST:PORT`` (instead: an already-running cluster's REST
address), ``--wait``. ``sluice flink run`` is the same command (its first name).
Out: the job id on standard output; with ``--wait``, the job's final state (exit 0 when FINISHED).
What is shipped is what runs: the zip is unpacked into ``<cluster folder>/apps/<zip name>/`` and
``flink run --python main.py --pyFiles dep`` runs its main.py and dep/.

The one jar. Locally the cluster's JVMs (and the ``flink run`` client) have MSF's one shaded jar,
``build/flink/pyflink-dependencies.jar`` (``make flink-jar``: the Kinesis source, Iceberg, Hadoop,
sqlite-jdbc), on their own classpath: ``HADOOP_CLASSPATH`` when this command starts the cluster,
which Flink's scripts append to the JVM's ``-classpath``. Not in ``pipeline.jars``: Iceberg's JDBC
catalog opens SQLite through ``java.sql.DriverManager``, which registers the drivers it finds once
per JVM and then hands a driver only to callers whose class loader loads that very driver class. A
driver inside a job's (child-first) class loader serves that loader alone, and only when that job
touched ``DriverManager`` first in the JVM ("No suitable driver found for jdbc:sqlite:..." otherwise:
seen in-process, and the rule for a restarted job's new class loader). On the system class path
there is one copy, seen by every loader. On MSF the same jar is the ``jarfile`` (the job's class
loader), which is fine there: the Glue catalog uses no JDBC. Nothing in the jar clashes with
Flink's own classes on one class path: its Hadoop configuration classes and ``HadoopUtils`` shim are
relocated (``io.sluice.flink.shaded``), as are the Kinesis source's AWS SDK and HTTP client.

Start-up checks, each one line (exit 2) naming the fix: the properties, .venv-flink's Python (3.12),
the shaded jar (``make flink-jar``), the catalog (for jdbc: the SQLite file and its six tables), and
a cluster whose JVMs have the jar on their classpath (the folder's TaskManagers' environment; with
``--flink_master``, the JobManager's class path as its REST API reports it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from flink_jobs.app.rows import COLUMNS
from flink_jobs.app.settings import LOCAL_PROPERTIES, AppSettings, load_app_settings
from flink_jobs.cluster import (
    Cluster,
    client_for,
    rest_get,
    running_cluster,
    start,
    submit_python,
)
from flink_jobs.settings import ClusterSettings
from sluice.core.errors import ConfigError

__all__ = [
    "classpath",
    "cluster_for",
    "main",
    "preflight",
    "remote_cluster",
    "submit",
    "unpack",
    "wait_for",
]


def classpath() -> str:
    """The local cluster's extra class path: MSF's one shaded jar (``make flink-jar``); a
    ``JarError`` (a ``ConfigError``) naming the command when it has not been built."""
    from flink_jobs.jars import shaded_jar

    return str(shaded_jar())


def _check_flink_python(venv: Path) -> None:
    python = venv / "bin" / "python"
    if not python.exists():
        raise ConfigError(f"no PyFlink environment at {venv}: run 'make flink-venv'")
    done = subprocess.run(
        [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if done.stdout.strip() != "3.12":
        raise ConfigError(
            f"{python} is Python {done.stdout.strip() or '?'}, the application needs 3.12 "
            "(MSF FLINK-2_2): recreate it with 'make clean flink-venv' (pyenv install 3.12.1)"
        )


def _check_catalog(settings: AppSettings) -> None:
    iceberg = settings.iceberg
    if iceberg.catalog_type != "jdbc":
        return
    assert iceberg.jdbc_uri is not None
    path = Path(iceberg.jdbc_uri.removeprefix("jdbc:sqlite:").split("?", 1)[0])
    hint = (
        "create the tables first (any Sluice writer does, e.g. 'sluice replay' or 'sluice job run')"
    )
    if not path.is_file():
        raise ConfigError(f"the catalog database {path} does not exist: {hint}")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            found = {
                row[0]
                for row in db.execute(
                    "SELECT table_name FROM iceberg_tables WHERE catalog_name = ? AND "
                    "table_namespace = ?",
                    (iceberg.catalog_name, iceberg.namespace),
                )
            }
    except sqlite3.Error as err:
        raise ConfigError(f"cannot read the catalog database {path}: {err}: {hint}") from None
    missing = [t for t in COLUMNS if t not in found]
    if missing:
        raise ConfigError(f"the catalog {path} has no table {', '.join(missing)}: {hint}")


def preflight(settings: AppSettings, venv: Path) -> str:
    """Every start-up check a local run can make before submitting; returns the classpath."""
    _check_flink_python(venv)
    jars = classpath()
    _check_catalog(settings)
    return jars


def _cluster_has_jars(cluster: Cluster, jars: str) -> bool:
    """Every TaskManager of the folder was started with ``jars`` on ``HADOOP_CLASSPATH``."""
    wanted = f"HADOOP_CLASSPATH={jars}".encode()
    for pid in cluster.pids("taskexecutor"):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        if wanted not in environ:
            return False
    return True


def cluster_for(settings: ClusterSettings, jars: str) -> Cluster:
    """The running cluster of the folder (it must have the jars), else one started with them."""
    os.environ["HADOOP_CLASSPATH"] = jars
    try:
        cluster = running_cluster(settings)
    except ConfigError:
        return start(settings)
    if not _cluster_has_jars(cluster, jars):
        raise ConfigError(
            f"the Flink cluster at {cluster.rest} was not started with {jars} on its classpath: "
            "stop it ('sluice flink cluster stop') and let 'sluice flink run-local' start it"
        )
    return cluster


def remote_cluster(settings: ClusterSettings, master: str, jars: str) -> Cluster:
    """A client for the running cluster at ``master`` (``HOST:PORT``, its REST address), whose
    JobManager must have the shaded jar on its class path (the Kinesis source's enumerator runs
    there). Its REST API shows only the JobManager's class path: the TaskManagers are taken to be
    started the same way (a task that misses a class fails the job with Flink's own error)."""
    host, _, port = master.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--flink_master {master!r}: expected HOST:PORT (the REST address)")
    environment = rest_get(master, "/jobmanager/environment")
    if environment is None:
        raise ConfigError(
            f"no Flink cluster answers at {master} (--flink_master): start one, e.g. "
            "'sluice flink run-local' without --flink_master starts the folder's"
        )
    if Path(jars).name not in str(environment.get("classpath", [])):
        raise ConfigError(
            f"the Flink cluster at {master} has no {Path(jars).name} on its class path: start its "
            f"JVMs with HADOOP_CLASSPATH={jars} (as 'sluice flink run-local' does)"
        )
    return client_for(settings, host, int(port), classpath=jars)


def unpack(package: Path, into: Path, properties: Path) -> Path:
    """The zip unpacked into ``into`` (replaced), with the properties beside main.py."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    with zipfile.ZipFile(package) as archive:
        archive.extractall(into)
    if not (into / "main.py").is_file() or not (into / "dep").is_dir():
        raise ConfigError(f"{package} is not an application zip (no main.py and dep/ at its root)")
    shutil.copyfile(properties, into / LOCAL_PROPERTIES)
    return into / "main.py"


def submit(cluster: Cluster, main_py: Path) -> str:
    os.environ["IS_LOCAL"] = "true"
    os.environ.pop("SLUICE_APP_PROPERTIES", None)
    return str(submit_python(cluster, main_py, "--pyFiles", str(main_py.parent / "dep")))


def wait_for(cluster: Cluster, job_id: str, timeout: float) -> str:
    """The job's final state (``FINISHED``, ``FAILED``, ``CANCELED``), or ``RUNNING`` at timeout."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = (rest_get(cluster.rest, f"/jobs/{job_id}") or {}).get("state", "")
        if state in ("FINISHED", "FAILED", "CANCELED"):
            return str(state)
        time.sleep(1)
    return state or "UNKNOWN"


def main(argv: Sequence[str] | None = None, prog: str = "sluice flink run-local") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the MSF application zip on a local Flink cluster (IS_LOCAL=true): the "
        "folder's (started with the shaded jar on its classpath when none runs), or the running "
        "cluster at --flink_master.",
    )
    parser.add_argument("--properties", type=Path, required=True, help="property-group JSON")
    parser.add_argument("--zip", type=Path, help="the application zip (default: build one)")
    parser.add_argument("--jar", type=Path, help="the shaded jar, when building the zip")
    parser.add_argument("--flink_dir", "--flink-dir", type=Path, help="the local cluster's folder")
    parser.add_argument(
        "--flink_master",
        "--flink-master",
        metavar="HOST:PORT",
        help="submit to the running cluster at this REST address instead of the folder's",
    )
    parser.add_argument("--wait", action="store_true", help="wait until the job ends")
    parser.add_argument("--timeout_seconds", type=float, default=1800.0)
    args = parser.parse_args(argv)
    cluster_settings = ClusterSettings(flink_dir=args.flink_dir)
    try:
        settings = load_app_settings(args.properties, local=True)
        jars = preflight(settings, cluster_settings.flink_venv)
        package = args.zip
        if package is None:
            from flink_jobs.app.package import build_package

            jar = args.jar or Path(jars)
            package = build_package(cluster_settings.folder / "apps" / "sluice-flink-app.zip", jar)
        if args.flink_master:
            cluster = remote_cluster(cluster_settings, args.flink_master, jars)
        else:
            cluster = cluster_for(cluster_settings, jars)
        main_py = unpack(package, cluster.folder / "apps" / package.stem, args.properties)
        job_id = submit(cluster, main_py)
    except ConfigError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    print(job_id, flush=True)
    if not args.wait:
        return 0
    state = wait_for(cluster, job_id, args.timeout_seconds)
    print(state)
    return 0 if state == "FINISHED" else 1


if __name__ == "__main__":
    sys.exit(main())
