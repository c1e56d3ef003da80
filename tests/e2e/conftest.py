"""Fixtures for the end-to-end tests of the stream job: the demo GeoIP databases, and two import paths.

The helpers (``job_testkit``, ``kinesis_testkit``) live with the pipeline tests; pytest puts only
this folder on sys.path for these tests, so that one is added as well (one copy of each helper).
``infra`` (the local stack) is not an installed package, so the repository root is added too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
for _folder in (str(_ROOT / "tests" / "pipeline"), str(_ROOT)):
    if _folder not in sys.path:
        sys.path.append(_folder)


@pytest.fixture(scope="session")
def geoip_dbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The SYNTHETIC demo City and ASN databases (made-up networks, see ``devkit.geoip_build``)."""
    from devkit.geoip_build import build_demo_databases

    return build_demo_databases(tmp_path_factory.mktemp("geoip"))
