"""The reliability suite (``make reliability``): fault and hostile-input scenarios on the local stack.

Every test here is marked ``reliability`` and deselected from the default run (``-m "not
reliability"`` in ``pyproject.toml``); ``make reliability`` / ``make reliability-short`` select it.
Each scenario module records a ``report.Result``; at the end of the session ``reports/reliability.md``
is rewritten from the JSON results (see ``report.py``).

The shared helpers live with the other suites (one copy each): ``job_testkit`` and
``kinesis_testkit`` (tests/pipeline), ``faults`` (tests/functional), ``infra.local.stack``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
_HERE = Path(__file__).resolve().parent
for _folder in (_HERE, _ROOT / "tests" / "pipeline", _ROOT / "tests" / "functional", _ROOT):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

import report  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller writes it
        return
    ran = any(_HERE in Path(str(i.fspath)).resolve().parents for i in session.items)
    if ran:
        path = report.write_report(report.report_path())
        if path is not None:
            print(f"\nreliability report: {path}", file=sys.stderr)


@pytest.fixture(scope="session")
def scale() -> str:
    return report.scale()
