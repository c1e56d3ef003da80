"""Build the transform Lambda's package as ``sluice deploy`` does, weigh it, and run it.

Usage: ``python -m benchmarks.transform_package --python PYTHON3.12 [--deps DIR]``.

``--deps``: a folder of its dependencies already installed for python3.12 x86_64 (default: what
``infra.aws.deploy.build_dependencies`` installs with pip and prunes, cached in ``.sluice-build/``;
that downloads about 150 MB from PyPI once). The zip is made by ``package_lambda`` (which refuses a
package over Lambda's unzipped limit), unpacked into a temporary folder, and ``PYTHON`` (the Lambda
runtime's version, 3.12) runs ``BatchCommitter`` from that folder alone (``-I``: no site packages):
imports, every stage and one commit of 200 readings to a local SQLite catalog, read back. boto3 is
not in the package (the Lambda runtime has it), so Glue and S3 are not exercised here.
Prints the installed, pruned, zipped and unzipped sizes and the smoke run's output.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import zipfile
from io import BytesIO
from pathlib import Path

from infra.aws.deploy import REPO, TRANSFORM, build_dependencies, package_lambda

SMOKE = """
import sys, tempfile, time
from datetime import UTC, datetime, timedelta
from pathlib import Path
started = time.time()
import pyarrow, pyiceberg
from sluice.core.config import CoreSettings
from sluice.core.contracts import IotReading
from sluice.stream.envelopes import encode, wrap_reading
from sluice.stream.lambda_events import ShardRecords
from sluice.stream.stages import InputRecord
from sluice.tables.batch_commit import BatchCommitter
from sluice.tables.catalog import WarehouseSettings
print(f"imports {time.time() - started:.1f} s, python {sys.version.split()[0]}, "
      f"pyarrow {pyarrow.__version__}, pyiceberg {pyiceberg.__version__}")
at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
records = [
    InputRecord(1000 + n, 0, at.timestamp() + 30, encode(wrap_reading(IotReading(
        device_id=f"d{n % 5}", event_time=at + timedelta(seconds=n % 60), metrics={"t": float(n)},
        message_id=str(n)), at)))
    for n in range(200)
]
committer = BatchCommitter(CoreSettings(), WarehouseSettings(state_dir=Path(tempfile.mkdtemp())), "smoke")
report = committer.process([ShardRecords("shardId-0", "arn", tuple(str(r.sequence) for r in records),
                                         tuple(records))])
rows = committer.tables["iot_readings"].refresh().scan().to_arrow().num_rows
print("committed", report.rows, "retry", report.retry_from, "read back", rows)
assert report.retry_from == [] and rows == 200
"""


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="a Python 3.12 interpreter")
    parser.add_argument("--deps", type=Path, help="dependencies installed for python3.12 x86_64")
    args = parser.parse_args(argv)
    deps = args.deps or build_dependencies(TRANSFORM, REPO / ".sluice-build" / "lambda-deps")
    body = package_lambda(TRANSFORM, deps)
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(BytesIO(body)).extractall(tmp)
        print(f"dependencies {_size(deps) / 1e6:.1f} MB; zip {len(body) / 1e6:.1f} MB, "
              f"unzipped {_size(Path(tmp)) / 1e6:.1f} MB (limit 262.1 MB)")  # fmt: skip
        code = f"import sys; sys.path[:0] = [{tmp!r}]\n{SMOKE}"
        result = subprocess.run([args.python, "-I", "-c", code], cwd=tmp, check=False)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
