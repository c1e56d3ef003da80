"""The jar manifest (``flink_conf/jars.lock``): what the Flink side needs, fetched and verified at
build time, found (never downloaded) when a job starts.

In: the manifest (one ``group:artifact:version sha256 set why`` per line) and the jar cache
(``SLUICE_JAR_CACHE``, default ``~/.cache/sluice/jars``, outside the repository).
Out: ``python -m flink_jobs.jars fetch [--set S]`` (``make flink-jars``) fetches each jar with Maven
(``dependency:copy``, no transitive dependencies: the manifest lists every jar) and checks its
SHA-256; ``cached_jar`` gives a verified jar's path to a job at start. ``python -m flink_jobs.jars
verify-build`` (run by ``make flink-jar`` after Maven) checks that the jars Maven put into the shaded
jar (``build/maven/*/shaded-jars.txt``) are exactly the manifest's ``pyflink`` and ``kinesis`` lines,
each with its SHA-256, and deletes the shaded jar when they are not.
Errors: one line per jar that is not served, fails its checksum or has no pinned SHA-256
(``fetch`` exits 2 when any did); ``JarError`` (a ``ConfigError``) at a job's start names the jar
and ``make flink-jars``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from flink_jobs.settings import REPO_ROOT
from sluice.core.errors import ConfigError

__all__ = [
    "MANIFEST",
    "SHADED_JAR",
    "Jar",
    "JarError",
    "cache_dir",
    "cached_jar",
    "main",
    "manifest",
    "shaded_jar",
    "verify_build",
]

MANIFEST = REPO_ROOT / "flink_conf" / "jars.lock"
UNPINNED = "-"
BUILD = REPO_ROOT / "build"
SHADED_JAR = BUILD / "flink" / "pyflink-dependencies.jar"
"""The one jar MSF's ``jarfile`` names and the local cluster's jobs load (``make flink-jar``)."""
SHADED_SETS = ("pyflink", "kinesis")
"""The manifest's sets that go into ``SHADED_JAR``."""


class JarError(ConfigError):
    """A jar of the manifest is missing from the cache, unpinned or fails its checksum."""


@dataclass(frozen=True)
class Jar:
    """One line of the manifest."""

    group: str
    artifact: str
    version: str
    sha256: str
    set: str
    why: str

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"


def manifest(path: Path = MANIFEST) -> list[Jar]:
    """The manifest's jars, in order; a malformed line is a ``JarError`` naming it."""
    jars = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(maxsplit=3)
        coordinates = fields[0].split(":")
        sha = fields[1].lower() if len(fields) > 1 else ""
        valid_sha = sha == UNPINNED or (
            len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        )
        if len(fields) < 3 or len(coordinates) != 3 or not valid_sha:
            raise JarError(f"{path}:{number}: expected 'group:artifact:version sha256 set why'")
        group, artifact, version = coordinates
        why = fields[3] if len(fields) > 3 else ""
        jars.append(Jar(group, artifact, version, sha, fields[2], why))
    return jars


def cache_dir() -> Path:
    """Where fetched jars live: ``SLUICE_JAR_CACHE``, else ``~/.cache/sluice/jars``."""
    return Path(os.environ.get("SLUICE_JAR_CACHE") or Path.home() / ".cache" / "sluice" / "jars")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find(artifact: str, jars: Sequence[Jar] | None = None) -> Jar:
    """The manifest's entry for an artifact id."""
    for jar in jars if jars is not None else manifest():
        if jar.artifact == artifact:
            return jar
    raise JarError(f"{artifact} is not in {MANIFEST}")


def cached_jar(jar: Jar) -> Path:
    """The verified jar in the cache; never downloads. A missing, unpinned or altered jar is one
    ``JarError`` naming it and ``make flink-jars``."""
    path = cache_dir() / jar.file_name
    if not path.exists():
        raise JarError(
            f"{jar.file_name} ({jar.coordinates}) is not in {cache_dir()}: run 'make flink-jars'"
        )
    if jar.sha256 == UNPINNED:
        raise JarError(
            f"{jar.coordinates} has no SHA-256 in {MANIFEST}: pin it (sha256sum {path}) after "
            "checking the jar against the repository's published checksum"
        )
    found = sha256_of(path)
    if found != jar.sha256:
        raise JarError(
            f"{path} fails its checksum (SHA-256 {found}, manifest {jar.sha256}): delete it and "
            "run 'make flink-jars'"
        )
    return path


def _maven_copy(jar: Jar, into: Path, maven: str) -> str | None:
    """Copy one jar from the Maven repository into ``into``; the reason when it cannot."""
    command = [
        maven,
        "--batch-mode",
        "--quiet",
        "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
        f"-Dartifact={jar.coordinates}:jar",
        f"-DoutputDirectory={into}",
        "-Dmdep.useBaseVersion=true",
        "-Dtransitive=false",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=900, check=False, cwd=into
        )
    except FileNotFoundError:
        return f"Maven ({maven}) not found: install it (apt-get install maven) or set MVN"
    except subprocess.TimeoutExpired:
        return "Maven did not finish within 900 s"
    if done.returncode == 0 and (into / jar.file_name).exists():
        return None
    output = done.stdout + done.stderr
    if "Could not find artifact" in output or "was not found in" in output:
        return "not served by the Maven repository this machine reaches (404)"
    line = next((x for x in output.splitlines() if "[ERROR]" in x), output.strip()[:200])
    return f"Maven failed: {line.strip()[:300]}"


def fetch(jars: Sequence[Jar], maven: str) -> Iterator[tuple[Jar, str | None]]:
    """Fetch each jar not already verified in the cache; yield it with the reason it failed."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    for jar in jars:
        target = cache / jar.file_name
        if target.exists() and jar.sha256 != UNPINNED and sha256_of(target) == jar.sha256:
            yield jar, None
            continue
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            reason = _maven_copy(jar, Path(scratch), maven)
            if reason is None:
                fetched = Path(scratch) / jar.file_name
                found = sha256_of(fetched)
                if jar.sha256 == UNPINNED:
                    reason = f"no SHA-256 pinned in {MANIFEST.name}; the fetched jar's is {found}"
                elif found != jar.sha256:
                    reason = f"fails its checksum (SHA-256 {found}, manifest {jar.sha256})"
                else:
                    fetched.replace(target)
        yield jar, reason


def shaded_jar() -> Path:
    """The shaded jar ``make flink-jar`` built; never builds. Missing: a ``JarError`` naming the
    target."""
    if not SHADED_JAR.is_file():
        raise JarError(f"{SHADED_JAR} is not built: run 'make flink-jar'")
    return SHADED_JAR


def _maven_path(jar: Jar) -> str:
    group = jar.group.replace(".", "/")
    return f"{group}/{jar.artifact}/{jar.version}/{jar.file_name}"


def verify_build(listings: Sequence[Path], jars: Sequence[Jar]) -> list[str]:
    """What is wrong with the jars Maven shaded (each listing: one ``:``-separated class path):
    a jar the manifest lacks, a checksum that differs, a manifest jar Maven did not use."""
    expected = {_maven_path(j): j for j in jars if j.set in SHADED_SETS}
    problems: list[str] = []
    used: set[str] = set()
    for listing in listings:
        for entry in listing.read_text().strip().split(os.pathsep):
            path = Path(entry)
            if not entry or path.resolve().is_relative_to(BUILD.resolve()):
                continue  # a module of this build (the Kinesis source), not a download
            match = next((k for k in expected if entry.endswith("/" + k)), None)
            if match is None:
                problems.append(f"{path.name}: used by Maven but not in {MANIFEST.name}")
                continue
            used.add(match)
            jar = expected[match]
            found = sha256_of(path)
            if found != jar.sha256:
                problems.append(
                    f"{jar.coordinates}: SHA-256 {found}, {MANIFEST.name} says {jar.sha256}"
                )
    problems.extend(
        f"{jar.coordinates}: in {MANIFEST.name} but not in the shaded jar's dependencies"
        for key, jar in expected.items()
        if key not in used
    )
    return problems


def _verify_build_main() -> int:
    listings = sorted((BUILD / "maven").glob("*/shaded-jars.txt"))
    if not listings:
        print("flink-jar: no build/maven/*/shaded-jars.txt: run 'make flink-jar'", file=sys.stderr)
        return 2
    problems = verify_build(listings, manifest())
    for problem in problems:
        print(f"flink-jar: {problem}", file=sys.stderr)
    if problems:
        SHADED_JAR.unlink(missing_ok=True)
        print(f"flink-jar: {SHADED_JAR.name} deleted: fix {MANIFEST}", file=sys.stderr)
        return 2
    print(f"ok      {SHADED_JAR} (every shaded jar matches {MANIFEST.name})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flink_jobs.jars",
        description="Fetch and verify the jars of flink_conf/jars.lock.",
    )
    parser.add_argument("action", choices=["fetch", "check", "verify-build"])
    parser.add_argument(
        "--set", action="append", help="only these sets (pyflink, beam); default all"
    )
    args = parser.parse_args(argv)
    if args.action == "verify-build":
        return _verify_build_main()
    try:
        jars = [j for j in manifest() if not args.set or j.set in args.set]
    except (OSError, JarError) as err:
        print(f"flink-jars: {err}", file=sys.stderr)
        return 2
    failed = 0
    if args.action == "fetch":
        results = fetch(jars, os.environ.get("MVN", "mvn"))
    else:
        results = ((jar, _check(jar)) for jar in jars)
    for jar, reason in results:
        if reason is None:
            print(f"ok      {jar.coordinates} ({jar.set})")
        else:
            failed += 1
            print(f"flink-jars: {jar.coordinates} ({jar.set}): {reason}", file=sys.stderr)
    print(f"{len(jars) - failed} verified, {failed} failed, in {cache_dir()}")
    return 2 if failed else 0


def _check(jar: Jar) -> str | None:
    try:
        cached_jar(jar)
    except JarError as err:
        return str(err)
    return None


if __name__ == "__main__":
    sys.exit(main())
