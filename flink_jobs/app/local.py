"""``sluice flink run``: the MSF application zip, unpacked, submitted to the local cluster.

In: ``--properties FILE`` (MSF's property-group JSON; it goes beside main.py as
``application_properties.json``, read with ``IS_LOCAL=true``), ``--zip FILE`` (default: build one with
``sluice flink package``), ``--flink_dir`` (the local cluster's folder), ``--wait``.
Out: the job id on standard output; with ``--wait``, the job's final state (exit 0 when FINISHED).
What is shipped is what runs: the zip is unpacked into ``<cluster folder>/apps/<zip name>/`` and
``flink run --python main.py --pyFiles dep`` runs its main.py and dep/.

Start-up checks, each one line (exit 2) naming the fix: the properties, .venv-flink's Python (3.12),
the jars (``make flink-jars``), the catalog (for jdbc: the SQLite file and its six tables), and a
cluster whose JVMs have the connector jars on their classpath: locally the jars go on the cluster's
classpath (``HADOOP_CLASSPATH`` when ``sluice flink run`` starts it), because Iceberg's JDBC catalog
finds the SQLite driver through ``DriverManager``, which does not see a job's class loader; on MSF the
zip's one shaded jar carries them.
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
from flink_jobs.cluster import Cluster, rest_get, running_cluster, start, submit_python
from flink_jobs.settings import ClusterSettings
from sluice.core.errors import ConfigError

__all__ = ["classpath", "main", "preflight", "submit", "unpack", "wait_for"]


def classpath() -> str:
    """The verified jars of the ``pyflink`` set, ``:``-separated (``JarError`` when one is missing)."""
    from flink_jobs.jars import cached_jar, manifest

    return ":".join(str(cached_jar(j)) for j in manifest() if j.set == "pyflink")


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


def _cluster_has_jars(cluster: Cluster) -> bool:
    for pid in cluster.pids("taskexecutor"):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        if not any(e.startswith(b"HADOOP_CLASSPATH=") and b"iceberg-flink" in e for e in environ):
            return False
    return True


def cluster_for(settings: ClusterSettings, jars: str) -> Cluster:
    """The running cluster of the folder (it must have the jars), else one started with them."""
    os.environ["HADOOP_CLASSPATH"] = jars
    try:
        cluster = running_cluster(settings)
    except ConfigError:
        return start(settings)
    if not _cluster_has_jars(cluster):
        raise ConfigError(
            f"the Flink cluster at {cluster.rest} was started without the connector jars on its "
            "classpath: stop it ('sluice flink cluster stop') and let 'sluice flink run' start it"
        )
    return cluster


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sluice flink run",
        description="Run the MSF application zip on the local Flink cluster (IS_LOCAL=true).",
    )
    parser.add_argument("--properties", type=Path, required=True, help="property-group JSON")
    parser.add_argument("--zip", type=Path, help="the application zip (default: build one)")
    parser.add_argument("--jar", type=Path, help="the shaded jar, when building the zip")
    parser.add_argument("--flink_dir", "--flink-dir", type=Path, help="the local cluster's folder")
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

            jar = args.jar or Path(jars.split(":")[0])
            package = build_package(cluster_settings.folder / "apps" / "sluice-flink-app.zip", jar)
        cluster = cluster_for(cluster_settings, jars)
        main_py = unpack(package, cluster.folder / "apps" / package.stem, args.properties)
        job_id = submit(cluster, main_py)
    except ConfigError as err:
        print(f"sluice flink run: {err}", file=sys.stderr)
        return 2
    print(job_id, flush=True)
    if not args.wait:
        return 0
    state = wait_for(cluster, job_id, args.timeout_seconds)
    print(state)
    return 0 if state == "FINISHED" else 1


if __name__ == "__main__":
    sys.exit(main())
