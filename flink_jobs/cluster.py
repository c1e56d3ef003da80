"""A real standalone Flink cluster on 127.0.0.1, run from the Flink distribution of ``.venv-flink``.

In: ``ClusterSettings`` (the cluster's folder, the PyFlink environment, the configuration template).
Out: a JobManager and TaskManager JVMs (separate processes, started by the distribution's own
``jobmanager.sh`` and ``taskmanager.sh``) whose config.yaml, logs, pid files, checkpoints and
savepoints live in the cluster's folder; ``Cluster.rest`` is the REST address ``HOST:PORT``.
Errors: ``ClusterError`` (a ``ConfigError``: one line, exit 2 in the CLI) naming what to run or
read: no ``.venv-flink``, no Java, a busy port, no cluster running, a process that died or a
cluster that did not get ready in time (with the log file to read and its first error line).

Why the distribution's scripts rather than ``java`` directly: they compute the JVM memory options
from config.yaml (``BashJavaUtils``) exactly as production's images do, so the local cluster is
configured the way a self-managed one is. The processes run in a session of their own, so a
Ctrl-C on the command that started them does not stop the cluster; ``stop`` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flink_jobs.settings import ClusterSettings
from sluice.core.errors import ConfigError

__all__ = [
    "HOST",
    "Cluster",
    "ClusterError",
    "client_for",
    "flatten_config",
    "flink_environment",
    "flink_home",
    "free_port",
    "rest_get",
    "running_cluster",
    "start",
    "start_taskmanager",
    "status",
    "stop",
    "submit_python",
    "write_config",
]

HOST = "127.0.0.1"
IDENT = "sluice"  # FLINK_IDENT_STRING: pid and log files are named flink-sluice-<daemon>...
JOBMANAGER, TASKMANAGER = "standalonesession", "taskexecutor"
MIN_JAVA = 11  # Flink 2.x runs on Java 11, 17 and 21
_LOG_FILES_COPIED = (
    "log4j.properties",
    "log4j-cli.properties",
    "log4j-console.properties",
    "logback.xml",
)


class ClusterError(ConfigError):
    """The local cluster cannot be started, reached or stopped; the message says what to run."""


@dataclass(frozen=True)
class Cluster:
    """A cluster's folder and what ``start`` recorded in it (``cluster.json``)."""

    folder: Path
    rest_port: int
    rpc_port: int
    blob_port: int
    flink_home: Path
    python: Path
    classpath: str = ""
    """``HADOOP_CLASSPATH`` the cluster's JVMs started with (Flink's scripts append it to their
    class path); a TaskManager started later, and the ``flink run`` client, get the same."""
    host: str = HOST

    @property
    def rest(self) -> str:
        return f"{self.host}:{self.rest_port}"

    @property
    def conf_dir(self) -> Path:
        return self.folder / "conf"

    @property
    def log_dir(self) -> Path:
        return self.folder / "log"

    @property
    def pid_dir(self) -> Path:
        return self.folder / "run"

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    def log_of(self, daemon: str) -> Path:
        """The newest log file of a daemon (``standalonesession`` or ``taskexecutor``)."""
        logs = sorted(self.log_dir.glob(f"flink-{IDENT}-{daemon}-*.log"), key=_mtime)
        return logs[-1] if logs else self.log_dir / f"flink-{IDENT}-{daemon}-0.log"

    def pids(self, daemon: str) -> list[int]:
        """Live processes of a daemon started from this folder (never a recycled pid)."""
        pid_file = self.pid_dir / f"flink-{IDENT}-{daemon}.pid"
        if not pid_file.exists():
            return []
        found = [int(p) for p in pid_file.read_text().split() if p.isdigit()]
        return [pid for pid in found if _is_ours(pid, self.conf_dir)]


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _is_ours(pid: int, conf_dir: Path) -> bool:
    """A running (not zombie) JVM whose command line names this cluster's configuration folder."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and str(conf_dir).encode() in cmdline


# --- locating what the cluster runs from ---------------------------------------------------------


def flink_home(venv: Path) -> Path:
    """The Flink distribution PyFlink ships (``site-packages/pyflink``: bin/, lib/flink-dist)."""
    python = venv / "bin" / "python"
    homes = sorted(venv.glob("lib/python3*/site-packages/pyflink"))
    home = next((h for h in homes if any(h.glob("lib/flink-dist-*.jar"))), None)
    if not python.exists() or home is None or not (home / "bin" / "jobmanager.sh").exists():
        raise ClusterError(
            f"no PyFlink environment with a Flink distribution at {venv}: run 'make flink-venv' "
            "(or give --flink_venv)"
        )
    return home


def java_version() -> int:
    """The major version of the ``java`` the scripts will run (``JAVA_HOME``, else ``PATH``)."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise ClusterError(
            "Java not found (no JAVA_HOME, no java on PATH): install a JDK 17 "
            "(apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"
        )
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ClusterError(f"{java} -version failed ({err}): check the Java installation") from None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr)
    if not found:
        raise ClusterError(f"{java} -version printed no version: check the Java installation")
    major = int(found.group(1))
    major = int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8
    if major < MIN_JAVA:
        raise ClusterError(
            f"Flink 2.x needs Java {MIN_JAVA} or newer, {java} is Java {major}: install a JDK 17 "
            "or set JAVA_HOME to one"
        )
    return major


# --- ports ----------------------------------------------------------------------------------------


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _check_free(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            raise ClusterError(
                f"port {port} on {HOST} ({what}) is busy: stop what listens there or choose "
                "another --rest_port (0: a free one)"
            ) from None


# --- configuration --------------------------------------------------------------------------------


def flatten_config(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _template(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ClusterError(f"cannot read the Flink configuration template {path}: {err}") from None
    if not isinstance(tree, Mapping):
        raise ClusterError(f"the Flink configuration template {path} is not a YAML mapping")
    return flatten_config(tree)


def write_config(settings: ClusterSettings, cluster: Cluster) -> Path:
    """``<folder>/conf/config.yaml``: the template, plus what is this cluster's own (loopback
    addresses and ports, the folders, memory, the Python interpreter). Dotted keys, one per line:
    Flink 2.x reads both forms, and one form leaves no key defined twice."""
    config = _template(settings.config_template)
    local: dict[str, Any] = {
        "jobmanager.rpc.address": HOST,
        "jobmanager.bind-host": HOST,
        "jobmanager.rpc.port": cluster.rpc_port,
        "rest.address": HOST,
        "rest.bind-address": HOST,
        "rest.port": cluster.rest_port,
        "blob.server.port": str(cluster.blob_port),
        "taskmanager.host": HOST,
        "taskmanager.bind-host": HOST,
        # 0: the system picks a free port, so a replacement TaskManager never collides.
        "taskmanager.rpc.port": "0",
        "taskmanager.data.port": 0,
        "jobmanager.memory.process.size": settings.jobmanager_memory,
        "taskmanager.memory.process.size": settings.taskmanager_memory,
        "execution.checkpointing.dir": cluster.checkpoints.as_uri(),
        "execution.checkpointing.savepoint-dir": (cluster.folder / "savepoints").as_uri(),
        "io.tmp.dirs": str(cluster.folder / "tmp"),
        "web.tmpdir": str(cluster.folder / "tmp" / "web"),
        "heartbeat.interval": f"{max(1, settings.heartbeat_timeout_seconds // 5)} s",
        "heartbeat.timeout": f"{settings.heartbeat_timeout_seconds} s",
        # Python UDF workers must run the PyFlink environment's interpreter (jobs hang otherwise).
        "python.executable": str(cluster.python),
        "python.client.executable": str(cluster.python),
    }
    if settings.checkpoint_interval_seconds is not None:
        local["execution.checkpointing.interval"] = f"{settings.checkpoint_interval_seconds:g} s"
    config.update(local)
    cluster.conf_dir.mkdir(parents=True, exist_ok=True)
    for name in _LOG_FILES_COPIED:
        source = cluster.flink_home / "conf" / name
        if source.exists():
            shutil.copyfile(source, cluster.conf_dir / name)
    target = cluster.conf_dir / "config.yaml"
    header = (
        f"# Written by 'sluice flink cluster start' from {settings.config_template}; "
        "rewritten at every start.\n"
    )
    target.write_text(header + yaml.safe_dump(config, default_flow_style=False, sort_keys=True))
    return target


# --- the processes --------------------------------------------------------------------------------


def flink_environment(cluster: Cluster) -> dict[str, str]:
    """The environment the distribution's scripts (``flink``, ``jobmanager.sh``) need for this
    cluster: its configuration, logs and pid files, the PyFlink interpreter, and the class path
    it started with (``HADOOP_CLASSPATH``)."""
    env = dict(os.environ)
    if cluster.classpath:
        env["HADOOP_CLASSPATH"] = cluster.classpath
    env.update(
        FLINK_HOME=str(cluster.flink_home),
        FLINK_CONF_DIR=str(cluster.conf_dir),
        FLINK_LOG_DIR=str(cluster.log_dir),
        FLINK_PID_DIR=str(cluster.pid_dir),
        FLINK_IDENT_STRING=IDENT,
        PYFLINK_PYTHON=str(cluster.python),
        PATH=f"{cluster.python.parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def _script(cluster: Cluster, name: str) -> None:
    """Run ``bin/<name> start`` (it starts the daemon in the background and returns)."""
    with (cluster.log_dir / "scripts.log").open("ab") as out:
        try:
            done = subprocess.run(
                ["bash", str(cluster.flink_home / "bin" / name), "start"],
                env=flink_environment(cluster),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(
                f"{name} start did not return within 120 s: see {cluster.log_dir / 'scripts.log'}"
            ) from None
    if done.returncode != 0:
        raise ClusterError(
            f"{name} start failed (exit {done.returncode}): see {cluster.log_dir / 'scripts.log'}"
        )


def rest_get(rest: str, path: str, timeout: float = 5.0) -> Any:
    """GET ``http://<rest><path>`` as JSON; ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{rest}{path}", timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _first_error(log: Path) -> str:
    """The first line of a log that says what went wrong (an exception or an ERROR), shortened."""
    for candidate in (log, log.with_suffix(".out")):
        try:
            lines = candidate.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if " ERROR " in line or "Exception:" in line or line.startswith("Error"):
                return line.strip()[:300]
    return ""


def _died(cluster: Cluster, daemon: str, what: str) -> ClusterError:
    log = cluster.log_of(daemon)
    reason = _first_error(log)
    return ClusterError(
        f"the {what} exited during start: see {log}" + (f" ({reason})" if reason else "")
    )


def _taskmanagers(cluster: Cluster) -> list[dict[str, Any]] | None:
    found = rest_get(cluster.rest, "/taskmanagers")
    return None if found is None else list(found.get("taskmanagers", []))


def _wait_for_taskmanager(
    cluster: Cluster,
    settings: ClusterSettings,
    known: set[str],
    jm_pids: list[int],
    *,
    free: bool,
) -> dict[str, Any]:
    """Wait until a TaskManager not in ``known`` is registered with its slots (all of them free
    when ``free``: a replacement's slots may be taken at once by a job waiting for them)."""
    deadline = time.monotonic() + settings.start_timeout_seconds
    slots = int(_template(settings.config_template).get("taskmanager.numberOfTaskSlots", 1))
    while time.monotonic() < deadline:
        if not any(_is_ours(pid, cluster.conf_dir) for pid in jm_pids):
            raise _died(cluster, JOBMANAGER, "JobManager")
        for tm in _taskmanagers(cluster) or []:
            ready = tm.get("slotsNumber") == slots and (not free or tm.get("freeSlots") == slots)
            if tm.get("id") not in known and ready:
                return tm
        if not cluster.pids(TASKMANAGER):
            raise _died(cluster, TASKMANAGER, "TaskManager")
        time.sleep(0.5)
    raise ClusterError(
        f"no TaskManager with {slots}{' free' if free else ''} slots registered within "
        f"{settings.start_timeout_seconds:g} s: see {cluster.log_of(TASKMANAGER)} and "
        f"{cluster.log_of(JOBMANAGER)} (or raise --start_timeout_seconds)"
    )


def _recorded(folder: Path) -> Cluster | None:
    try:
        data = json.loads((folder / "cluster.json").read_text())
        return Cluster(
            folder=folder,
            rest_port=int(data["rest_port"]),
            rpc_port=int(data["rpc_port"]),
            blob_port=int(data["blob_port"]),
            flink_home=Path(data["flink_home"]),
            python=Path(data["python"]),
            classpath=str(data.get("classpath", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _running(settings: ClusterSettings) -> Cluster:
    cluster = _recorded(settings.folder)
    if cluster is None or not cluster.pids(JOBMANAGER):
        raise ClusterError(
            f"no Flink cluster is running from {settings.folder}: start one with "
            "'sluice flink cluster start' (or give --flink_dir)"
        )
    return cluster


def start(settings: ClusterSettings) -> Cluster:
    """Start a JobManager and one TaskManager; return once the TaskManager's slots are free."""
    home = flink_home(settings.flink_venv)
    java_version()
    folder = settings.folder
    previous = _recorded(folder)
    if previous is not None and (previous.pids(JOBMANAGER) or previous.pids(TASKMANAGER)):
        raise ClusterError(
            f"a Flink cluster is already running from {folder} (REST {previous.rest}): "
            "stop it with 'sluice flink cluster stop', or give another --flink_dir"
        )
    rest_port = settings.rest_port or free_port()
    _check_free(rest_port, "REST")
    ports = {rest_port}
    while len(ports) < 3:  # the RPC and blob ports: free, and distinct from each other
        ports.add(free_port())
    rpc_port, blob_port = sorted(ports - {rest_port})
    cluster = Cluster(
        folder=folder,
        rest_port=rest_port,
        rpc_port=rpc_port,
        blob_port=blob_port,
        flink_home=home,
        python=(settings.flink_venv / "bin" / "python").absolute(),
        classpath=os.environ.get("HADOOP_CLASSPATH", ""),
    )
    for sub in ("log", "run", "checkpoints", "savepoints", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for stale in cluster.pid_dir.glob("*.pid"):
        stale.unlink()
    write_config(settings, cluster)
    (folder / "cluster.json").write_text(
        json.dumps(
            {
                "rest_port": rest_port,
                "rpc_port": rpc_port,
                "blob_port": blob_port,
                "flink_home": str(home),
                "python": str(cluster.python),
                "classpath": cluster.classpath,
            },
            indent=2,
        )
    )
    try:
        _script(cluster, "jobmanager.sh")
        jm_pids = cluster.pids(JOBMANAGER)
        if not jm_pids:
            raise _died(cluster, JOBMANAGER, "JobManager")
        _script(cluster, "taskmanager.sh")
        _wait_for_taskmanager(cluster, settings, set(), jm_pids, free=True)
    except BaseException:
        _terminate(cluster, settings.stop_timeout_seconds)
        raise
    return cluster


def start_taskmanager(settings: ClusterSettings) -> tuple[Cluster, int]:
    """Start one more TaskManager on the running cluster (say, after one was killed); return the
    cluster and the new process id once it is registered with its slots free."""
    cluster = _running(settings)
    known = {tm["id"] for tm in _taskmanagers(cluster) or [] if "id" in tm}
    before = set(cluster.pids(TASKMANAGER))
    try:
        _script(cluster, "taskmanager.sh")
        _wait_for_taskmanager(cluster, settings, known, cluster.pids(JOBMANAGER), free=False)
    except BaseException:
        for pid in set(cluster.pids(TASKMANAGER)) - before:
            _signal(pid, signal.SIGKILL)
        raise
    new = sorted(set(cluster.pids(TASKMANAGER)) - before)
    return cluster, new[-1] if new else 0


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _all_pids(cluster: Cluster) -> Iterator[int]:
    yield from cluster.pids(TASKMANAGER)
    yield from cluster.pids(JOBMANAGER)


def _terminate(cluster: Cluster, timeout: float) -> list[int]:
    """SIGTERM every process of the cluster, SIGKILL what is left after ``timeout``; wait until
    none is left. Returns the process ids stopped."""
    pids = list(_all_pids(cluster))
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_is_ours(p, cluster.conf_dir) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if _is_ours(pid, cluster.conf_dir):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_is_ours(p, cluster.conf_dir) for p in pids):
        time.sleep(0.1)
    for pid_file in cluster.pid_dir.glob("*.pid"):
        pid_file.unlink()
    return pids


def stop(settings: ClusterSettings) -> tuple[Cluster, list[int]]:
    """Stop every JobManager and TaskManager started from the folder and wait for them to exit.
    Logs and checkpoints stay."""
    cluster = _recorded(settings.folder)
    if cluster is None or not list(_all_pids(cluster)):
        raise ClusterError(
            f"no Flink cluster is running from {settings.folder}: nothing to stop (start one "
            "with 'sluice flink cluster start')"
        )
    return cluster, _terminate(cluster, settings.stop_timeout_seconds)


def status(settings: ClusterSettings) -> dict[str, Any]:
    """The running cluster's REST address, processes, TaskManagers, slots and jobs."""
    cluster = _running(settings)
    overview = rest_get(cluster.rest, "/overview")
    if overview is None:
        raise ClusterError(
            f"the JobManager runs but its REST API at {cluster.rest} does not answer: see "
            f"{cluster.log_of(JOBMANAGER)}"
        )
    jobs = rest_get(cluster.rest, "/jobs/overview") or {}
    return {
        "rest": cluster.rest,
        "folder": str(cluster.folder),
        "jobmanager_pids": cluster.pids(JOBMANAGER),
        "taskmanager_pids": cluster.pids(TASKMANAGER),
        "flink_version": overview.get("flink-version"),
        "taskmanagers": overview.get("taskmanagers"),
        "slots_total": overview.get("slots-total"),
        "slots_available": overview.get("slots-available"),
        "jobs": [
            {"id": j.get("jid"), "name": j.get("name"), "state": j.get("state")}
            for j in jobs.get("jobs", [])
        ],
        "checkpoints": str(cluster.checkpoints),
        "logs": str(cluster.log_dir),
    }


def submit_python(cluster: Cluster, script: Path, *args: str, timeout: float = 300.0) -> str:
    """Submit a PyFlink program to the cluster, detached (``flink run -m HOST:PORT -d --python``),
    and return its job id. The client runs from ``.venv-flink`` with this cluster's configuration;
    its output goes to ``<folder>/log/submit.log``."""
    command = [
        "bash",
        str(cluster.flink_home / "bin" / "flink"),
        "run",
        "-m",
        cluster.rest,
        "-d",
        "--python",
        str(script),
        *args,
    ]
    log = cluster.log_dir / "submit.log"
    try:
        done = subprocess.run(
            command,
            env=flink_environment(cluster),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"flink run did not return within {timeout:g} s: see {log}") from None
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    found = re.search(r"JobID ([0-9a-f]{32})", done.stdout + done.stderr)
    if done.returncode != 0 or not found:
        lines = (done.stderr + done.stdout).splitlines()
        # The program's own one-line refusal (flink_jobs.app.main) whole, else a Java error line.
        own = next((line for line in lines if line.startswith("sluice flink app: ")), "")
        reason = own.strip() or next((ln for ln in lines if "Error" in ln), "").strip()[:200]
        raise ClusterError(
            f"flink run --python {script} failed (exit {done.returncode}): see {log}"
            + (f" ({reason})" if reason else "")
        )
    return found.group(1)


def client_for(
    settings: ClusterSettings, host: str, rest_port: int, classpath: str = ""
) -> Cluster:
    """A client of a cluster that runs elsewhere (REST ``host:rest_port``), for ``submit_python``:
    ``<folder>/client/conf/config.yaml`` is the configuration template (JVM options, checkpoint
    mode, restart strategy) plus the REST address and the PyFlink interpreter of the Python
    workers, none of the local cluster's ports or folders; its log goes to ``<folder>/client/log/``."""
    client = Cluster(
        folder=settings.folder / "client",
        rest_port=rest_port,
        rpc_port=0,
        blob_port=0,
        flink_home=flink_home(settings.flink_venv),
        python=(settings.flink_venv / "bin" / "python").absolute(),
        classpath=classpath,
        host=host,
    )
    for sub in ("conf", "log"):
        (client.folder / sub).mkdir(parents=True, exist_ok=True)
    for name in _LOG_FILES_COPIED:
        source = client.flink_home / "conf" / name
        if source.exists():
            shutil.copyfile(source, client.conf_dir / name)
    config = _template(settings.config_template)  # the JVM options a Flink 2.x client needs too
    config.update(
        {
            "rest.address": host,
            "rest.port": rest_port,
            "python.executable": str(client.python),
            "python.client.executable": str(client.python),
        }
    )
    (client.conf_dir / "config.yaml").write_text(
        f"# Written by 'sluice flink run-local --flink_master' from {settings.config_template}: "
        "the client's settings (the cluster has its own).\n"
        + yaml.safe_dump(config, default_flow_style=False, sort_keys=True)
    )
    return client


def running_cluster(settings: ClusterSettings) -> Cluster:
    """The cluster running from the settings' folder (``ClusterError`` when none)."""
    return _running(settings)
