"""Results of the reliability scenarios: one JSON file per scenario, and ``reports/reliability.md`` from them.

In: ``Result`` values the scenarios fill in (what was injected, events in and out, lost, duplicated,
verdict, notes) while they run; ``measure`` adds duration and peak memory.
Out: ``<results dir>/<scenario>.json`` per scenario (``SLUICE_RELIABILITY_RESULTS``, default
``.reliability/``) and the Markdown report, a table per scenario, written by the session finalizer
in ``conftest.py`` from every JSON file present (so a scenario run on its own updates its part).

Peak memory comes from ``resource.getrusage``: ``ru_maxrss`` of the test process (a high-water mark
over the whole session so far, so it only bounds what a scenario used in-process) and of its
children (the largest child process waited for so far: the job, moto, the edge server).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "reports" / "reliability.md"
PASS, FAIL, NOT_RUN = "PASS", "FAIL", "NOT RUN"


def results_dir() -> Path:
    return Path(os.environ.get("SLUICE_RELIABILITY_RESULTS", ROOT / ".reliability"))


SCALES = ("smoke", "short", "full")
"""``smoke``: the subset ``make test`` runs (about a minute, its report under the results folder);
``short``: ``make reliability-short``; ``full``: ``make reliability``."""


def scale() -> str:
    value = os.environ.get("SLUICE_RELIABILITY_SCALE", "short")
    if value not in SCALES:
        raise ValueError(f"SLUICE_RELIABILITY_SCALE must be one of {SCALES}, not {value!r}")
    return value


def sized(sizes: dict[str, Any], at: str) -> Any:
    """A scenario's sizes at scale ``at``; a scenario without sizes for it is skipped (pytest), with
    ``sizes["skip"]`` as the reason (say, where its smoke-sized cousin runs)."""
    if at not in sizes:
        import pytest

        pytest.skip(str(sizes.get("skip", f"no {at} scale")))
    return sizes[at]


def report_path() -> Path:
    """``reports/reliability.md``, except at smoke scale (``make test``): next to the results, so
    that a test run never rewrites the committed report."""
    return results_dir() / "reliability.md" if scale() == "smoke" else REPORT


def peak_rss_mib() -> tuple[float, float]:
    """(this process, largest waited-for child) peak resident memory in MiB (Linux: KiB units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(own, 1), round(children, 1)


@dataclass
class Check:
    """One sub-case of a scenario: a row of its table."""

    case: str
    injected: str
    events_in: int | None = None
    events_out: int | None = None
    lost: int | None = None
    duplicated: int | None = None
    verdict: str = PASS
    detail: str = ""


@dataclass
class Result:
    scenario: str
    title: str
    scale: str = field(default_factory=scale)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    duration_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    peak_child_rss_mib: float = 0.0
    started: str = ""
    verdict: str = NOT_RUN

    def check(self, case: str, injected: str, **values: Any) -> Check:
        entry = Check(case, injected, **values)
        self.checks.append(entry)
        return entry

    def fail(self, case: str, injected: str, detail: str, **values: Any) -> Check:
        return self.check(case, injected, verdict=FAIL, detail=detail, **values)

    def not_run(self, case: str, injected: str, reason: str) -> Check:
        return self.check(case, injected, verdict=NOT_RUN, detail=f"not run: {reason}")

    def overall(self) -> str:
        verdicts = {c.verdict for c in self.checks}
        if FAIL in verdicts:
            return FAIL
        if PASS in verdicts:
            return PASS
        return NOT_RUN

    def write(self) -> Path:
        folder = results_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.scenario}.json"
        path.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n")
        return path


@contextmanager
def measure(result: Result) -> Iterator[Result]:
    """Time the scenario and take peak memory; the JSON file is written whatever happens (a crash of
    the scenario itself becomes a FAIL check naming the exception)."""
    result.started = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    try:
        yield result
    except BaseException as error:
        result.fail("scenario", "-", f"the scenario itself raised {type(error).__name__}: {error}")
        raise
    finally:
        result.duration_seconds = round(time.monotonic() - started, 1)
        result.peak_rss_mib, result.peak_child_rss_mib = peak_rss_mib()
        result.verdict = result.overall()
        result.write()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(results: list[dict[str, Any]]) -> str:
    scales = sorted({r["scale"] for r in results})
    lines = [
        "# Reliability report",
        "",
        "Written by `make reliability` / `make reliability-short` (`tests/reliability`, "
        "see `tests/reliability/report.py`); do not edit by hand.",
        "",
        f"- Scale: {', '.join(scales)} (`SLUICE_RELIABILITY_SCALE`)",
        f"- Machine: {platform.platform()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs",
        "- Peak memory: `ru_maxrss` of the test process (session high-water mark) / of the "
        "largest child process (job, moto, edge server) waited for so far.",
        "",
        "| Scenario | Verdict | Duration (s) | Peak RSS MiB (self / child) | Started (UTC) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| [{r['title']}](#{r['scenario']}) | **{r['verdict']}** | {r['duration_seconds']} "
            f"| {r['peak_rss_mib']} / {r['peak_child_rss_mib']} | {r['started']} |"
        )
    for r in results:
        lines += [
            "",
            f'<a id="{r["scenario"]}"></a>',
            f"## {r['title']}: {r['verdict']}",
            "",
            f"Scale {r['scale']}, {r['duration_seconds']} s.",
            "",
            "| Case | Injected | Events in | Events out | Lost | Duplicated | Verdict | Detail |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in r["checks"]:
            lines.append(
                "| " + " | ".join(_cell(c[k]) for k in ("case", "injected", "events_in",
                                                       "events_out", "lost", "duplicated"))
                + f" | **{c['verdict']}** | {_cell(c['detail'])} |"
            )  # fmt: skip
        if r["metrics"]:
            lines += ["", "Measurements:", ""]
            lines += [f"- {k}: {_cell(v)}" for k, v in r["metrics"].items()]
        if r["notes"]:
            lines += ["", "Notes:", ""]
            lines += [f"- {note}" for note in r["notes"]]
    return "\n".join(lines) + "\n"


ORDER = ("kill", "edge_faults", "endpoint_restart", "poison", "resharding", "fuzz", "load",
         "pip_audit")  # fmt: skip


def write_report(path: Path = REPORT) -> Path | None:
    files = sorted(results_dir().glob("*.json"))
    if not files:
        return None
    results = [json.loads(f.read_text()) for f in files]
    results.sort(key=lambda r: ORDER.index(r["scenario"]) if r["scenario"] in ORDER else 99)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results))
    return path
