"""Importing Sluice's modules in a fresh interpreter (a subprocess): no side effects on the process."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_kpl_module_leaves_sys_path_alone() -> None:
    # aws-kinesis-agg prepends its own folder and site-packages to sys.path on import.
    code = (
        "import sys; before = list(sys.path); import sluice.stream.kpl; assert sys.path == before"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cli_starts_without_importing_the_heavy_layers() -> None:
    # `sluice --help` and `sluice parse` must not pay for Beam, pyiceberg, DuckDB or boto3.
    code = (
        "import sys; import sluice.cli; "
        "heavy = {'apache_beam', 'pyiceberg', 'duckdb', 'boto3', 'pyarrow'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
