"""``make flink-jar``'s check (``flink_jobs.jars.verify_build``): the jars Maven shaded must be exactly
the manifest's ``pyflink`` and ``kinesis`` lines, each with its SHA-256. Pure file checks, no Maven
or Flink, so it runs in ``make test`` too.

GIVEN a manifest and a class-path listing of jars in a fake Maven repository, WHEN checked, THEN
each difference is one line naming the jar.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flink_jobs.jars import Jar, manifest, verify_build


def _jar(repo: Path, group: str, artifact: str, version: str, content: bytes) -> Path:
    path = repo / group.replace(".", "/") / artifact / version / f"{artifact}-{version}.jar"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return path


def _pin(group: str, artifact: str, version: str, content: bytes, set_: str = "kinesis") -> Jar:
    return Jar(group, artifact, version, hashlib.sha256(content).hexdigest(), set_, "test")


def test_matching_jars_pass_and_every_difference_is_named(tmp_path: Path):
    repo = tmp_path / "m2"
    good = _jar(repo, "software.amazon.awssdk", "kinesis", "2.57.8", b"kinesis")
    altered = _jar(repo, "org.apache.hadoop", "hadoop-common", "3.3.6", b"altered")
    stray = _jar(repo, "org.example", "stray", "1.0", b"stray")
    jars = [
        _pin("software.amazon.awssdk", "kinesis", "2.57.8", b"kinesis"),
        _pin("org.apache.hadoop", "hadoop-common", "3.3.6", b"original", "pyflink"),
        _pin("org.example", "unused", "1.0", b"unused", "pyflink"),
        _pin("org.apache.beam", "job-server", "1.0", b"beam", "beam"),  # not shaded: ignored
    ]
    listing = tmp_path / "shaded-jars.txt"

    listing.write_text(str(good))
    assert verify_build([listing], jars[:1]) == []

    listing.write_text(":".join(str(p) for p in (good, altered, stray)))
    problems = verify_build([listing], jars)
    assert len(problems) == 3, problems
    assert any(p.startswith("org.apache.hadoop:hadoop-common:3.3.6: SHA-256 ") for p in problems)
    assert "stray-1.0.jar: used by Maven but not in jars.lock" in problems
    assert (
        "org.example:unused:1.0: in jars.lock but not in the shaded jar's dependencies" in problems
    )


def test_the_manifest_pins_every_shaded_jar():
    shaded = [jar for jar in manifest() if jar.set in ("pyflink", "kinesis")]
    assert shaded and all(len(jar.sha256) == 64 for jar in shaded)
    assert {"iceberg-flink-runtime-2.0", "kinesis", "url-connection-client"} <= {
        jar.artifact for jar in shaded
    }
