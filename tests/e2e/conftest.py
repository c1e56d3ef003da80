"""Fixtures for the end-to-end tests of the stream job (in-process CLI runs), and two import paths.

The helpers (``job_testkit``, ``kinesis_testkit``) live with the pipeline tests; pytest puts only
this folder on sys.path for these tests, so that one is added as well (one copy of each helper).
``infra`` (the local stack) is not an installed package, so the repository root is added too.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

_ROOT = Path(__file__).resolve().parents[2]
for _folder in (str(_ROOT / "tests" / "pipeline"), str(_ROOT)):
    if _folder not in sys.path:
        sys.path.append(_folder)


Cli = Callable[[list[str]], dict[str, int]]


@pytest.fixture
def sluice(capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """``sluice ARGS...`` in this process; returns the counters it prints last (a JSON line).

    ``sluice job run`` and ``sluice replay`` change process-wide state meant for a process of their
    own (a handler on the ``sluice`` logger with propagation off, frozen and re-tuned garbage
    collection); both are put back afterwards so later tests in this worker see a normal process.
    A command that does not end fails the test after a minute instead of hanging the suite.
    """
    from sluice.cli import main as sluice_main

    logger = logging.getLogger("sluice")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    thresholds = gc.get_threshold()

    def run(argv: list[str]) -> dict[str, int]:
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["code"] = sluice_main(argv)
            except BaseException as error:  # noqa: BLE001 - re-raised in the test thread below
                outcome["error"] = error

        thread = threading.Thread(target=target, name="sluice-cli", daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), f"sluice {' '.join(argv[:2])} was still running after 60 s"
        if "error" in outcome:
            raise outcome["error"]
        assert outcome["code"] == 0
        counters: dict[str, int] = orjson.loads(capsys.readouterr().out.splitlines()[-1])
        return counters

    try:
        yield run
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.fixture
def run_job(sluice: Cli) -> Cli:
    """``sluice job run FLAGS...`` in this process (see ``sluice``); returns its counters."""
    return lambda flags: sluice(["job", "run", *flags])
