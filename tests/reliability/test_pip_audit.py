"""``pip-audit`` of the lock files: clean, each finding listed, or "not run" with the reason.

pip-audit is not in ``requirements.lock`` (it needs a vulnerability service, so it adds nothing
offline); ``make reliability`` installs it into ``.venv-audit`` when the package index is reachable.
Both services are tried: PyPI's JSON API and OSV. A dependency the service could not look up is a
skip, not a clean result: when every dependency was skipped, or no service answered, the scenario is
NOT RUN with the reason (on the machine this was written on PyPI's per-version JSON API answered 404
for every pin and api.osv.dev did not resolve).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from report import FAIL, NOT_RUN, PASS, ROOT, Result, measure

LOCK_FILES = sorted(ROOT.glob("requirements*.lock"))


def _pip_audit() -> str | None:
    for candidate in (
        os.environ.get("SLUICE_PIP_AUDIT"),
        str(ROOT / ".venv-audit" / "bin" / "pip-audit"),
        shutil.which("pip-audit"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _status(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.status)
    except urllib.error.HTTPError as error:
        return str(error.code)
    except OSError as error:
        return f"unreachable ({type(error).__name__})"


def _pypi_probe(name: str, version: str) -> str:
    """Why PyPI gave nothing: the status of the per-version JSON API pip-audit's ``pypi`` service
    reads vulnerabilities from, next to the project-level one."""
    per_version = f"https://pypi.org/pypi/{name}/{version}/json"
    return (
        f"; here {per_version} answers {_status(per_version)} while "
        f"https://pypi.org/pypi/{name}/json answers {_status(f'https://pypi.org/pypi/{name}/json')}"
    )


def _audit(tool: str, lock: Path, service: str) -> tuple[str, str, int, int]:
    """(verdict, detail, dependencies, audited) for one lock file and one service."""
    command = [tool, "-r", str(lock), "--no-deps", "--disable-pip", "--progress-spinner", "off",
               "-f", "json", "-s", service, "--timeout", "15"]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return NOT_RUN, f"not run: pip-audit -s {service} did not finish in 300 s", 0, 0
    try:
        report = json.loads(done.stdout or b"{}")
    except json.JSONDecodeError:
        report = {}
    dependencies = report.get("dependencies", [])
    if not dependencies:
        error = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        return NOT_RUN, f"not run: {service} unreachable ({error[:200]})", 0, 0
    audited = [d for d in dependencies if "skip_reason" not in d]
    findings = [(d["name"], d["version"], v["id"]) for d in audited for v in d.get("vulns", [])]
    if not audited:
        reason = dependencies[0]["skip_reason"]
        name = str(dependencies[0]["name"])
        pins = dict(line.split("==", 1) for line in lock.read_text().splitlines() if "==" in line)
        version = dependencies[0].get("version") or pins.get(name, "").strip()
        probe = _pypi_probe(name, version) if service == "pypi" and version else ""
        return (
            NOT_RUN,
            f"not run: {service} could not look up any of the {len(dependencies)} pins "
            f"(e.g. {reason[:120]}){probe}",
            len(dependencies),
            0,
        )
    if findings:
        listed = ", ".join(f"{n} {v}: {i}" for n, v, i in findings)
        return (
            FAIL,
            f"{len(findings)} findings, none justified yet: {listed}",
            len(dependencies),
            len(audited),
        )
    skipped = len(dependencies) - len(audited)
    return (
        PASS,
        f"no known vulnerabilities ({skipped} pins not looked up)",
        len(dependencies),
        len(audited),
    )


def test_pip_audit_of_the_lock_files(scale: str) -> None:
    if scale == "smoke":
        pytest.skip(
            "smoke (make test): pip-audit needs a vulnerability service; see make reliability"
        )
    result = Result("pip_audit", "pip-audit of the lock files")
    with measure(result):
        tool = _pip_audit()
        if tool is None:
            result.not_run(
                "all lock files", "-",
                "pip-audit is not installed (make reliability installs it into .venv-audit when "
                "the package index is reachable; it is not in the lock)",
            )  # fmt: skip
        else:
            for lock in LOCK_FILES:
                for service in ("pypi", "osv"):
                    verdict, detail, pins, audited = _audit(tool, lock, service)
                    result.check(
                        f"{lock.name} via {service}", f"{pins} pinned dependencies",
                        events_in=pins, events_out=audited, verdict=verdict, detail=detail,
                    )  # fmt: skip
    assert result.overall() != FAIL, result.checks
