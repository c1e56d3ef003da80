"""``sluice flink package [--out FILE] [--jar FILE]``: the application zip MSF runs.

Layout (aws-samples' ``python/IcebergSink`` / ``PackagedPythonDependencies``)::

    main.py                          the entry point (flink_jobs/app/main.py)
    lib/pyflink-dependencies.jar     the one shaded jar of connectors (--jar)
    dep/                             the core's dependencies for MSF (cp312, manylinux2014_x86_64)
    dep/sluice/, dep/flink_jobs/     the Sluice core and this application

``dep/`` is made by ``pip install --target dep --platform manylinux2014_x86_64 --only-binary=:all:
--python-version 3.12`` of the core's declared dependencies (pyproject ``[project].dependencies``) at the
versions of ``requirements-flink.lock``; PyFlink, Beam, pyarrow and numpy's own copies come with MSF's
runtime and are not shipped twice except where the core needs them (numpy). It is cached under
``~/.cache/sluice/msf-dep/<digest of the lock and pyproject>`` so a rebuild downloads nothing.
MSF's run options (property group ``kinesis.analytics.flink.run.options``): ``python=main.py``,
``jarfile=lib/pyflink-dependencies.jar``, ``pyFiles=dep/``.
Errors: one ``ConfigError`` line (no jar, pip failing), exit 2 in the CLI.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path

from flink_jobs.settings import REPO_ROOT
from sluice.core.errors import ConfigError

__all__ = ["JAR_IN_ZIP", "RUN_OPTIONS", "build_package", "core_requirements", "main"]

JAR_IN_ZIP = "lib/pyflink-dependencies.jar"
RUN_OPTIONS = {"python": "main.py", "jarfile": JAR_IN_ZIP, "pyFiles": "dep/"}
PLATFORM = ("--platform", "manylinux2014_x86_64", "--only-binary=:all:", "--python-version", "3.12")
SHIPPED_PACKAGES = ("sluice", "flink_jobs")
LOCK = REPO_ROOT / "requirements-flink.lock"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def core_requirements() -> list[str]:
    """The core's dependencies pinned to ``requirements-flink.lock``'s versions (and, for what they
    pull in, the lock's pins as constraints)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in LOCK.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            pins[_name(line)] = line.strip()
    return [pins.get(_name(r), r) for r in project["dependencies"]]


def _dep_cache() -> Path:
    digest = hashlib.sha256(LOCK.read_bytes() + (REPO_ROOT / "pyproject.toml").read_bytes())
    base = Path(os.environ.get("SLUICE_MSF_DEP_CACHE") or Path.home() / ".cache/sluice/msf-dep")
    return base / digest.hexdigest()[:16]


def _libraries() -> Path:
    cached = _dep_cache()
    if (cached / ".complete").exists():
        return cached
    scratch = Path(tempfile.mkdtemp(prefix="dep-", dir=cached.parent if cached.parent.exists()
                                    else None))  # fmt: skip
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--target", str(scratch), *PLATFORM,
        "--constraint", str(LOCK), *core_requirements(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        reason = next((x for x in done.stderr.splitlines() if "ERROR" in x), done.stderr[-300:])
        shutil.rmtree(scratch, ignore_errors=True)
        raise ConfigError(f"pip could not build dep/ for MSF (cp312, manylinux): {reason.strip()}")
    (scratch / ".complete").touch()
    cached.parent.mkdir(parents=True, exist_ok=True)
    if cached.exists():
        shutil.rmtree(cached)
    scratch.replace(cached)
    return cached


def _add_tree(archive: zipfile.ZipFile, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts or path.name == ".complete":
            continue
        archive.write(path, f"{prefix}/{path.relative_to(folder).as_posix()}")


def build_package(out: Path, jar: Path) -> Path:
    """Write the MSF application zip to ``out``; returns it."""
    if not jar.is_file():
        raise ConfigError(
            f"no connector jar at {jar}: build the shaded jar with 'make flink-jar' "
            "(build/flink/pyflink-dependencies.jar) or pass --jar FILE"
        )
    libraries = _libraries()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(REPO_ROOT / "flink_jobs" / "app" / "main.py", "main.py")
        archive.write(jar, JAR_IN_ZIP)
        _add_tree(archive, libraries, "dep")
        for package in SHIPPED_PACKAGES:
            _add_tree(archive, REPO_ROOT / package, f"dep/{package}")
    partial.replace(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sluice flink package", description="Build the MSF application zip."
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "sluice-flink-app.zip")
    parser.add_argument(
        "--jar",
        type=Path,
        default=REPO_ROOT / "build" / "flink" / "pyflink-dependencies.jar",
        help="the one shaded connector jar (lib/pyflink-dependencies.jar in the zip)",
    )
    args = parser.parse_args(argv)
    try:
        out = build_package(args.out.resolve(), args.jar)
    except ConfigError as err:
        print(f"sluice flink package: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
