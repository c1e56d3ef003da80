"""The transform Lambda's package: what pruning removes and keeps, and the unzipped-size guard.

Installed, the Lambda path's dependencies (pyiceberg, pyarrow, SQLAlchemy, numpy, Powertools) are
439 MB for python3.12 x86_64, above Lambda's 250 MiB; ``prune_dependencies`` removes what the
function never imports and strips the libraries' symbols (docs/ARCHITECTURE.md has the figures and
how the pruned folder was run). Here a folder shaped like that install shows the rule, without
downloading anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.aws.deploy import TRANSFORM, DeployError, package_lambda, prune_dependencies

KEPT = [
    "pyarrow/lib.cpython-312-x86_64-linux-gnu.so",
    "pyarrow/libarrow.so.2500",
    "pyarrow/libarrow_python.so.2500",
    "pyarrow/libarrow_substrait.so.2500",
    "pyarrow/_s3fs.cpython-312-x86_64-linux-gnu.so",
    "pyarrow/parquet/__init__.py",
    "numpy.libs/libscipy_openblas64_-x.so",
    "pyiceberg/table/__init__.py",
    "rich/console.py",
    "sqlalchemy/__init__.py",
    "zstandard/backend_c.cpython-312-x86_64-linux-gnu.so",
]
PRUNED = [
    "botocore/session.py",
    "pygments/lexer.py",
    "hive_metastore/ttypes.py",
    "aiohttp/client.py",
    "pyarrow/tests/test_array.py",
    "pyarrow/include/arrow/api.h",
    "pyarrow/libarrow_flight.so.2500",
    "pyarrow/libarrow_python.so",
    "pyarrow/libarrow_python.so.2500.1.0",
    "pyarrow/_orc.cpython-312-x86_64-linux-gnu.so",
    "pyarrow/lib.pyx",
    "numpy/_core/tests/test_umath.py",
    "zstandard/_cffi.cpython-312-x86_64-linux-gnu.so",
    "pydantic/main.pyi",
]


def test_pruning_removes_what_the_transform_never_imports(tmp_path: Path) -> None:
    for name in KEPT + PRUNED:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    left = prune_dependencies(tmp_path)
    assert [n for n in KEPT if not (tmp_path / n).exists()] == []
    assert [n for n in PRUNED if (tmp_path / n).exists()] == []
    assert left == 10 * len(KEPT)


def test_a_package_over_the_lambda_limit_is_refused(tmp_path: Path) -> None:
    with (tmp_path / "pyarrow.so").open("wb") as big:
        big.truncate(300_000_000)  # sparse: nothing is written
    with pytest.raises(DeployError, match=r"unzips to 30[0-9] MB, above Lambda's 262 MB"):
        package_lambda(TRANSFORM, tmp_path)
