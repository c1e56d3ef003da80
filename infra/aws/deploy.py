"""``sluice deploy`` and ``sluice destroy``: the two stacks of an environment, step by step.

In: an environment (``--env dev|prod``), its parameters (``infra/aws/params/<env>.json``, plus
``--parameter KEY=VALUE`` overrides), AWS credentials and region as boto3 finds them
(``AWS_PROFILE``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` for a local endpoint).
Out, for deploy: each Lambda packaged with only what it needs (its folder, the shared edge code, the
core packages it imports, and dependencies installed for the Lambda platform), uploaded under a key
holding its SHA-256 (an unchanged package is not uploaded again); the SAM template translated
offline and uploaded the same way; a change set, printed (``--dry-run`` stops there and deletes it);
the change set executed with the stack's events printed as they come. Stack 2 (the Flink
application) is deployed only with ``--flink-zip``, then started from its latest snapshot. With
``Processing=lambda`` the transform Lambda (tables layer included, its dependencies pruned to fit
Lambda's unzipped limit) is packaged too, stack 2 is never deployed, and an existing one is deleted
first: the Flink job stops before the mapping starts, and the tables' positions make it a restart.
For destroy: the stacks deleted; the data resources the templates keep (buckets, stream, table, key)
stay unless ``--delete-data``.
Failures: one line naming what to fix (``DeployError``, a ``SluiceError``): no credentials or
region, a missing artifact, a parameter out of range, a stack in a failed state, a failed resource
with CloudFormation's reason. CloudFormation rolls a failed update back, so the previous version
keeps running.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from infra.aws.templates import (
    ENVIRONMENTS,
    STACKS,
    check_parameters,
    load_parameters,
    load_template,
    translate_sam,
)
from sluice.core.errors import SluiceError
from sluice.core.flags import ErrorParser

__all__ = [
    "DeployError",
    "LambdaPackage",
    "deploy",
    "destroy",
    "main",
    "package_lambda",
    "prune_dependencies",
]

REPO = Path(__file__).resolve().parents[2]
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
FAILED_STATES = frozenset(
    {
        "CREATE_FAILED",
        "ROLLBACK_COMPLETE",
        "ROLLBACK_FAILED",
        "DELETE_FAILED",
        "UPDATE_ROLLBACK_FAILED",
    }
)
DONE_STATES = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"})
# The core packages the edges import (never the tables, analysts or CLI layers).
CORE_PACKAGES = ("core", "parsing", "transform", "stream", "edges")


def _core_requirements() -> tuple[str, ...]:
    """The core's declared dependencies (pyproject's ``project.dependencies``), names only."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return tuple(re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0] for dep in project["dependencies"])


# What the edges need beyond the Lambda runtime (which has boto3): the core's dependencies and
# Powertools with the X-Ray SDK its Tracer uses. Versions come from requirements.lock.
LAMBDA_REQUIREMENTS = (*_core_requirements(), "aws-lambda-powertools", "aws-xray-sdk")
# The functions' runtime is python3.12 (Amazon Linux 2023, glibc 2.34): the lock's numpy 2.4 ships
# manylinux_2_28 wheels only, which python3.11's Amazon Linux 2 (glibc 2.26) cannot load.
LAMBDA_PYTHON = "3.12"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class DeployError(SluiceError):
    """A deploy or destroy step that cannot go on; the message names the fix."""


@dataclass(frozen=True)
class LambdaPackage:
    name: str
    parameter: str
    architecture: str
    requirements: tuple[str, ...] = LAMBDA_REQUIREMENTS
    core_packages: tuple[str, ...] = CORE_PACKAGES
    prune: bool = False
    """Trim the dependencies to fit Lambda's unzipped limit (``prune_dependencies``)."""

    @property
    def platform(self) -> str:
        return "aarch64" if self.architecture == "arm64" else "x86_64"

    @property
    def platform_flags(self) -> list[str]:
        # Wheels for glibc 2.28 (what Amazon Linux 2023 runs) and the older manylinux2014 tag,
        # which pip does not infer from the newer one.
        return [
            f"--platform=manylinux_2_28_{self.platform}",
            f"--platform=manylinux2014_{self.platform}",
        ]


LAMBDAS = (
    LambdaPackage("iot_ingest", "IotIngestCodeKey", "x86_64"),
    LambdaPackage("log_ingest", "LogIngestCodeKey", "x86_64"),
    LambdaPackage("feed_poller", "FeedPollerCodeKey", "arm64"),
    LambdaPackage("archive_transform", "ArchiveTransformCodeKey", "arm64"),
)
# The transform Lambda (Processing=lambda) also needs the tables layer and its extra (pyiceberg,
# pyarrow, SQLAlchemy, which sluice.tables.catalog imports); installed, that is 439 MB, pruned to fit.
TRANSFORM = LambdaPackage(
    "stream_transform",
    "StreamTransformCodeKey",
    "x86_64",
    requirements=(*LAMBDA_REQUIREMENTS, "pyiceberg[sql-sqlite,pyarrow,pyiceberg-core]", "pyarrow"),
    core_packages=(*CORE_PACKAGES, "tables"),
    prune=True,
)
LAMBDA_UNZIPPED_LIMIT = 262_144_000
"""Lambda's limit on a function's unzipped code and layers (250 MiB)."""
# What the transform Lambda never imports (checked by running it from the pruned folder under
# Python 3.12, see docs/ARCHITECTURE.md): botocore (the runtime has boto3), Pygments, click and
# the Hive/HTTP clients pyiceberg and fsspec can use; pyarrow's Flight, ORC, HDFS, GCS, Azure and
# test modules, C++ headers and sources; numpy's tests; zstandard's second (CFFI) backend.
PRUNED = (
    "botocore", "botocore-*.dist-info", "pygments", "pygments-*.dist-info", "click",
    "click-*.dist-info", "hive_metastore", "fb303", "aiohttp", "aiohttp-*.dist-info",
    "aiohappyeyeballs*", "aiosignal*", "frozenlist*", "multidict*", "propcache*", "yarl*", "bin",
    "pyarrow/tests", "pyarrow/include", "pyarrow/src", "pyarrow/libarrow_flight.so*",
    "pyarrow/_flight*.so", "pyarrow/libarrow_python_flight*", "pyarrow/libarrow_python.so",
    "pyarrow/libarrow_python.so.*.*", "pyarrow/_pyarrow_cpp_tests*", "pyarrow/_azurefs*",
    "pyarrow/_gcsfs*", "pyarrow/_hdfs*", "pyarrow/_orc*", "pyarrow/_dataset_orc*",
    "pyarrow/libarrow_python_parquet_encryption.so",
    "pyarrow/libarrow_python_parquet_encryption.so.*.*", "numpy/*/tests", "numpy/tests",
    "zstandard/_cffi*",
)  # fmt: skip
PRUNED_SUFFIXES = (".pyx", ".pxd", ".pxi", ".h", ".cc", ".pyi")


@dataclass
class Progress:
    """Numbered steps on one stream: ``[2/7] package iot_ingest: 1.2 MB, sha256 4f3a...``."""

    total: int
    out: TextIO | None = None  # standard output at the time of printing
    done: int = 0

    def step(self, message: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {message}", file=self.out or sys.stdout, flush=True)

    def detail(self, message: str) -> None:
        print(f"      {message}", file=self.out or sys.stdout, flush=True)


# ------------------------------------------------------------------------------------ packaging


def _zip_entries(entries: Iterable[tuple[str, Path]]) -> bytes:
    """A zip that depends only on the files' paths and bytes (fixed times and modes, sorted)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def _python_files(root: Path, base: Path) -> list[tuple[str, Path]]:
    return [
        (path.relative_to(base).as_posix(), path)
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]


def package_lambda(package: LambdaPackage, dependencies: Path) -> bytes:
    """One function's zip: its folder, the shared edge code, the core packages, its dependencies.

    Refused (``DeployError``) when the files would unzip to more than Lambda allows."""
    edges = REPO / "edge_lambdas"
    entries = [("edge_lambdas/__init__.py", edges / "__init__.py")]
    for folder in (edges / "shared", edges / package.name):
        entries += _python_files(folder, REPO)
    entries.append(("sluice/__init__.py", REPO / "sluice" / "__init__.py"))
    for name in package.core_packages:
        entries += _python_files(REPO / "sluice" / name, REPO)
    entries += _python_files(dependencies, dependencies)
    unzipped = sum(path.stat().st_size for _, path in entries)
    if unzipped > LAMBDA_UNZIPPED_LIMIT:
        raise DeployError(
            f"the {package.name} package unzips to {unzipped / 1e6:.0f} MB, above Lambda's "
            f"{LAMBDA_UNZIPPED_LIMIT / 1e6:.0f} MB: prune its dependencies (--lambda-deps)"
        )
    return _zip_entries(entries)


def prune_dependencies(folder: Path) -> int:
    """Delete from ``folder`` what the transform Lambda never imports (``PRUNED``), and strip the
    symbols of shared libraries outside ``*.libs`` folders (auditwheel's relocated libraries there
    do not load once stripped). Returns the bytes left."""
    import shutil

    for pattern in PRUNED:
        for path in folder.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    for path in list(folder.rglob("*")):
        if path.is_file() and (path.suffix in PRUNED_SUFFIXES or "__pycache__" in path.parts):
            path.unlink()
    strip = shutil.which("strip")
    for path in folder.rglob("*.so*"):
        if strip and path.is_file() and not any(p.endswith(".libs") for p in path.parts):
            subprocess.run([strip, "--strip-unneeded", str(path)], capture_output=True, check=False)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build_dependencies(package: LambdaPackage, cache: Path) -> Path:
    """The Lambda's dependencies installed for its platform (``LAMBDA_PYTHON``, binary wheels only),
    cached under a folder named after the requirements, the lock and the platform."""
    lock = (REPO / "requirements.lock").read_bytes()
    recipe = (
        "\n".join((*package.requirements, *PRUNED))
        if package.prune
        else "\n".join(package.requirements)
    )
    key = hashlib.sha256(lock + package.platform.encode() + recipe.encode())
    target = cache / f"{package.architecture}-{key.hexdigest()[:16]}"
    if (target / ".complete").exists():
        return target
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target),
        *package.platform_flags, "--implementation", "cp", "--python-version", LAMBDA_PYTHON,
        "--only-binary=:all:", "-c", str(REPO / "requirements.lock"), *package.requirements,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise DeployError(
            f"installing the {package.name} dependencies for {package.platform}: {last}"
        )
    if package.prune:
        prune_dependencies(target)
    (target / ".complete").touch()
    return target


# ---------------------------------------------------------------------------------------- AWS


@dataclass
class Aws:
    """The clients of one run, made from one boto3 session."""

    session: Any
    region: str
    account: str = ""
    clients: dict[str, Any] = field(default_factory=dict)

    def client(self, name: str) -> Any:
        if name not in self.clients:
            self.clients[name] = self.session.client(name, region_name=self.region)
        return self.clients[name]


def connect(region: str | None) -> Aws:
    import os

    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    session = boto3.session.Session(region_name=region) if region else boto3.session.Session()
    if not session.region_name:
        raise DeployError("no AWS region: pass --region or set AWS_REGION")
    aws = Aws(session, session.region_name)
    try:
        aws.account = aws.client("sts").get_caller_identity()["Account"]
    except NoCredentialsError:
        raise DeployError(
            "no AWS credentials: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), "
            "or run 'aws sso login'"
        ) from None
    except NoRegionError:
        raise DeployError("no AWS region: pass --region or set AWS_REGION") from None
    return aws


def _aws_error(action: str, err: ClientError | BotoCoreError) -> DeployError:
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        return DeployError(f"{action}: {error.get('Code', 'error')}: {error.get('Message', err)}")
    return DeployError(f"{action}: {err}")


def ensure_bucket(aws: Aws, bucket: str) -> None:
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise _aws_error(f"artifact bucket {bucket}", err) from None
    location = (
        {}
        if aws.region == "us-east-1"
        else {"CreateBucketConfiguration": {"LocationConstraint": aws.region}}
    )
    s3.create_bucket(Bucket=bucket, **location)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True,
            "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
        },
    )  # fmt: skip


def upload(
    aws: Aws, bucket: str, prefix: str, name: str, body: bytes, suffix: str
) -> tuple[str, bool]:
    """Put ``body`` under ``<prefix>/<name>-<sha256>.<suffix>`` unless it is there already."""
    digest = hashlib.sha256(body).hexdigest()
    key = f"{prefix}/{name}-{digest[:20]}.{suffix}"
    s3 = aws.client("s3")
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return key, False
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise _aws_error(f"s3://{bucket}/{key}", err) from None
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return key, True


def _stack(cfn: Any, name: str) -> dict[str, Any] | None:
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as err:
        if "does not exist" in str(err):
            return None
        raise
    return stacks[0] if stacks else None


def _failure(cfn: Any, name: str, since: float) -> str:
    for event in cfn.describe_stack_events(StackName=name)["StackEvents"]:
        if event["Timestamp"].timestamp() >= since - 1 and event["ResourceStatus"].endswith(
            "_FAILED"
        ):
            reason = event.get("ResourceStatusReason", "no reason given")
            return f"{event['LogicalResourceId']} ({event['ResourceType']}) {event['ResourceStatus']}: {reason}"
    return "no failed resource reported"


def _wait_stack(cfn: Any, name: str, progress: Progress, since: float, timeout: float) -> str:
    """Wait for the stack to settle, printing each new event; return its final status."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        stack = _stack(cfn, name)
        status = stack["StackStatus"] if stack else "DELETE_COMPLETE"
        if stack is not None:
            events = cfn.describe_stack_events(StackName=name)["StackEvents"]
            for event in reversed(events):
                if event["EventId"] in seen or event["Timestamp"].timestamp() < since - 1:
                    continue
                seen.add(event["EventId"])
                what = "(stack)" if event["LogicalResourceId"] == name else event["ResourceType"]
                progress.detail(
                    f"{event['ResourceStatus']:<20} {event['LogicalResourceId']} {what}"
                )
        if not status.endswith("_IN_PROGRESS"):
            return status
        if time.monotonic() > deadline:
            raise DeployError(f"stack {name} still {status} after {timeout:.0f} s; see the console")
        time.sleep(1.0 if timeout > 120 else 0.2)


def deploy_stack(
    aws: Aws,
    name: str,
    template: dict[str, Any] | str,
    parameters: dict[str, str],
    progress: Progress,
    *,
    dry_run: bool,
    timeout: float,
) -> dict[str, str]:
    """Create and print a change set, then (unless ``dry_run``) execute it; the stack's outputs."""
    cfn = aws.client("cloudformation")
    current = _stack(cfn, name)
    status = current["StackStatus"] if current else None
    if status in FAILED_STATES:
        raise DeployError(
            f"stack {name} is in {status}: fix the cause ({_failure(cfn, name, 0)}), then "
            f"'sluice destroy --env ...' and deploy again"
        )
    if status is not None and status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        raise DeployError(f"stack {name} is busy ({status}): wait for it to finish")
    kind = "CREATE" if status in (None, "REVIEW_IN_PROGRESS") else "UPDATE"
    body = (
        {"TemplateURL": template}
        if isinstance(template, str)
        else {"TemplateBody": json.dumps(template)}
    )
    change_set = f"sluice-{int(time.time())}"
    started = time.time()
    cfn.create_change_set(
        StackName=name,
        ChangeSetName=change_set,
        ChangeSetType=kind,
        Parameters=[
            {"ParameterKey": k, "ParameterValue": v} for k, v in sorted(parameters.items())
        ],
        Capabilities=CAPABILITIES,
        **body,
    )
    while True:
        described = cfn.describe_change_set(StackName=name, ChangeSetName=change_set)
        if described["Status"] in ("CREATE_COMPLETE", "FAILED"):
            break
        time.sleep(0.5)
    if described["Status"] == "FAILED":
        reason = described.get("StatusReason", "")
        cfn.delete_change_set(StackName=name, ChangeSetName=change_set)
        if "didn't contain changes" in reason or "No updates" in reason:
            progress.detail("no changes")
            return _outputs(current)
        raise DeployError(f"change set for {name} failed: {reason}")
    changes = described.get("Changes", [])
    progress.detail(f"{kind.lower()} {name}: {len(changes)} change(s)")
    for change in changes:
        resource = change.get("ResourceChange", {})
        replacement = " (replacement)" if resource.get("Replacement") == "True" else ""
        progress.detail(
            f"{resource.get('Action', '?'):<7} {resource.get('LogicalResourceId', '?')} "
            f"{resource.get('ResourceType', '')}{replacement}"
        )
    if dry_run:
        cfn.delete_change_set(StackName=name, ChangeSetName=change_set)
        if kind == "CREATE":
            cfn.delete_stack(StackName=name)  # the empty REVIEW_IN_PROGRESS stack
        return _outputs(current)
    cfn.execute_change_set(StackName=name, ChangeSetName=change_set)
    final = _wait_stack(cfn, name, progress, started, timeout)
    if final not in DONE_STATES:
        raise DeployError(f"stack {name} ended {final}: {_failure(cfn, name, started)}")
    return _outputs(_stack(cfn, name))


def _outputs(stack: dict[str, Any] | None) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs", [])}


def _overrides(pairs: Sequence[str]) -> dict[str, dict[str, str]]:
    """``Key=Value`` (core stack) or ``flink.Key=Value`` overrides."""
    found: dict[str, dict[str, str]] = {"core": {}, "flink": {}}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DeployError(f"--parameter {pair!r}: use KEY=VALUE (flink.KEY=VALUE for stack 2)")
        stack, _, name = key.rpartition(".")
        found.setdefault(stack or "core", {})[name] = value
    unknown = set(found) - set(STACKS)
    if unknown:
        raise DeployError(f"--parameter: unknown stack {sorted(unknown)[0]!r} (core or flink)")
    return found


def _checked(template: dict[str, Any], values: dict[str, str], label: str) -> dict[str, str]:
    problems = check_parameters(template, values)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DeployError(f"{label}: {problems[0]}{more}")
    return values


# --------------------------------------------------------------------------------- the commands


BUILD_FLINK_ZIP = Path("build")
"""``--flink-zip build``: build the MSF application zip here (``sluice flink package``)."""


def build_flink_zip(out: Path = REPO / "build" / "sluice-flink-app.zip") -> Path:
    """The MSF application zip built from this checkout and ``make flink-jar``'s shaded jar (a
    one-line ``ConfigError`` naming the target when the jar is not built)."""
    from flink_jobs.app.package import build_package
    from flink_jobs.jars import shaded_jar

    return build_package(out, shaded_jar())


def deploy(args: argparse.Namespace, out: TextIO | None = None) -> int:
    flink_zip: Path | None = args.flink_zip
    building = flink_zip == BUILD_FLINK_ZIP
    if flink_zip is not None and not building and not flink_zip.is_file():
        raise DeployError(
            f"--flink-zip {flink_zip}: no such file (build the application zip first, "
            "or pass --flink-zip build)"
        )
    overrides = _overrides(args.parameter)
    values = {key: {**v, **overrides[key]} for key, v in load_parameters(args.env).items()}
    on_lambda = values["core"].get("Processing", "flink") == "lambda"
    if on_lambda and flink_zip is not None:
        raise DeployError(
            "--flink-zip with Processing=lambda: the stages run in the transform Lambda and stack 2 "
            "is not deployed; drop --flink-zip, or deploy with --parameter Processing=flink"
        )
    if building:
        flink_zip = build_flink_zip()
    # Both paths read the window and lateness from the flink section: one value for both.
    for name in ("WindowSeconds", "AllowedLatenessSeconds"):
        if name in values["flink"]:
            values["core"].setdefault(name, values["flink"][name])
    progress = Progress(total=6 + (2 if flink_zip else 0), out=out)
    aws = connect(args.region)
    progress.step(f"credentials: account {aws.account}, region {aws.region}")
    bucket = args.artifact_bucket or f"sluice-{args.env}-artifacts-{aws.account}"
    core_template = load_template(STACKS["core"].template)
    packages = (*LAMBDAS, TRANSFORM) if on_lambda else LAMBDAS
    placeholders = {"ArtifactBucket": bucket, **{p.parameter: "pending" for p in packages}}
    _checked(core_template, {**values["core"], **placeholders}, f"{args.env} core parameters")
    progress.step(f"parameters: infra/aws/params/{args.env}.json checked")
    core_name = STACKS["core"].stack_name(args.env)
    try:
        if on_lambda:
            values["core"]["TransformDeploymentId"] = _deployment_id(
                aws, core_name, args.env, overrides["core"].get("TransformDeploymentId")
            )
            flink_name = STACKS["flink"].stack_name(args.env)
            if _stack(aws.client("cloudformation"), flink_name) is not None:
                progress.total += 1
                _stop_flink(aws, flink_name, progress, dry_run=args.dry_run, timeout=args.timeout)
        ensure_bucket(aws, bucket)
        keys: dict[str, str] = {}
        built: list[str] = []
        for package in packages:
            deps = args.lambda_deps or build_dependencies(
                package, REPO / ".sluice-build" / "lambda-deps"
            )
            body = package_lambda(package, deps)
            key, new = upload(aws, bucket, "edges", package.name, body, "zip")
            keys[package.parameter] = key
            built.append(
                f"{package.name} {len(body) / 1e6:.1f} MB {'uploaded' if new else 'unchanged'}"
            )
        progress.step(f"lambdas: {'; '.join(built)}")
        core_values = {**values["core"], "ArtifactBucket": bucket, **keys}
        translated = translate_sam(core_template, core_values, aws.region)
        template_key, _ = upload(
            aws,
            bucket,
            "templates",
            "core",
            json.dumps(translated, sort_keys=True).encode(),
            "json",
        )
        progress.step(f"template: translated, s3://{bucket}/{template_key}")
        url = f"https://{bucket}.s3.{aws.region}.amazonaws.com/{template_key}"
        progress.step(f"change set: {core_name}")
        outputs = deploy_stack(
            aws, core_name, url, core_values, progress, dry_run=args.dry_run, timeout=args.timeout
        )
        if args.dry_run:
            progress.step("dry run: nothing deployed")
            return 0
        progress.step(
            f"deployed {core_name}"
            + "".join(f"\n      {k} = {v}" for k, v in sorted(outputs.items()))
        )
        if on_lambda:
            progress.detail(
                "stack 2 (Flink application) skipped: Processing is lambda (deployment "
                f"{values['core']['TransformDeploymentId']})"
            )
            return 0
        if flink_zip is None:
            progress.detail("stack 2 (Flink application) skipped: no --flink-zip")
            return 0
        flink_template = load_template(STACKS["flink"].template)
        code_key, new = upload(aws, bucket, "flink", "stream_job", flink_zip.read_bytes(), "zip")
        flink_values = _checked(
            flink_template,
            {
                **values["flink"],
                "CoreStackName": core_name,
                "CodeBucket": bucket,
                "CodeKey": code_key,
            },
            f"{args.env} flink parameters",
        )
        flink_name = STACKS["flink"].stack_name(args.env)
        progress.step(
            f"flink: {code_key} {'uploaded' if new else 'unchanged'}; change set {flink_name}"
        )
        flink_outputs = deploy_stack(
            aws,
            flink_name,
            flink_template,
            flink_values,
            progress,
            dry_run=False,
            timeout=args.timeout,
        )
        progress.step(
            start_application(
                aws, flink_outputs.get("ApplicationName", f"sluice-{args.env}-stream-job")
            )
        )
    except (ClientError, BotoCoreError) as err:
        raise _aws_error("deploy", err) from None
    return 0


def _deployment_id(aws: Aws, core_name: str, env: str, given: str | None) -> str:
    """The Lambda path's owner id: ``given``, else the deployed one while Processing stays lambda,
    else a new one (a switch to lambda is a new owner: it claims the tables at its first batch)."""
    if given:
        return given
    current = _stack(aws.client("cloudformation"), core_name) or {}
    deployed = {p["ParameterKey"]: p.get("ParameterValue") for p in current.get("Parameters", [])}
    if deployed.get("Processing") == "lambda" and deployed.get("TransformDeploymentId") not in (
        None,
        "none",
    ):
        return str(deployed["TransformDeploymentId"])
    return f"lambda-{env}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def _stop_flink(aws: Aws, name: str, progress: Progress, *, dry_run: bool, timeout: float) -> None:
    """Delete stack 2 before the Lambda path starts: the Flink job stops, and the mapping then
    reads on from the positions its last commit left in the tables (a switch is a restart)."""
    if dry_run:
        progress.step(f"{name}: would be deleted (Processing is lambda)")
        return
    cfn = aws.client("cloudformation")
    started = time.time()
    cfn.delete_stack(StackName=name)
    final = _wait_stack(cfn, name, progress, started, timeout)
    if final != "DELETE_COMPLETE":
        raise DeployError(f"stack {name} ended {final}: {_failure(cfn, name, started)}")
    progress.step(f"{name}: deleted (Processing is lambda; the tables keep its positions)")


def start_application(aws: Aws, name: str) -> str:
    """Start the MSF application from its latest snapshot if it is not running (an update of a
    running application is done by CloudFormation, which snapshots and restarts it)."""
    msf = aws.client("kinesisanalyticsv2")
    status = msf.describe_application(ApplicationName=name)["ApplicationDetail"][
        "ApplicationStatus"
    ]
    if status != "READY":
        return f"application {name}: {status}, left as it is"
    msf.start_application(
        ApplicationName=name,
        RunConfiguration={
            "ApplicationRestoreConfiguration": {
                "ApplicationRestoreType": "RESTORE_FROM_LATEST_SNAPSHOT"
            }
        },
    )
    return f"application {name}: starting from its latest snapshot"


def destroy(args: argparse.Namespace, out: TextIO | None = None) -> int:
    aws = connect(args.region)
    cfn = aws.client("cloudformation")
    progress = Progress(total=3 + (1 if args.delete_data else 0), out=out)
    progress.step(f"credentials: account {aws.account}, region {aws.region}")
    kept: list[tuple[str, str]] = []
    try:
        for key in ("flink", "core"):
            spec = STACKS[key]
            name = spec.stack_name(args.env)
            if _stack(cfn, name) is None:
                progress.step(f"{name}: not deployed")
                continue
            retained = {
                logical
                for logical, resource in load_template(spec.template)["Resources"].items()
                if resource.get("DeletionPolicy") == "Retain"
            }
            for resource in cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]:
                if resource["LogicalResourceId"] in retained and resource.get("PhysicalResourceId"):
                    kept.append((resource["ResourceType"], resource["PhysicalResourceId"]))
            started = time.time()
            cfn.delete_stack(StackName=name)
            final = _wait_stack(cfn, name, progress, started, args.timeout)
            if final != "DELETE_COMPLETE":
                raise DeployError(f"stack {name} ended {final}: {_failure(cfn, name, started)}")
            progress.step(f"{name}: deleted")
        if args.delete_data and not kept:
            raise DeployError(
                "--delete-data: no stack of this environment is left to name its data; delete the "
                "resources listed as kept by the destroy that removed the stacks by hand"
            )
        if not args.delete_data:
            for kind, physical in kept:
                progress.detail(f"kept {kind} {physical} (--delete-data deletes it)")
            return 0
        for kind, physical in kept:
            _delete_data(aws, kind, physical)
            progress.detail(f"deleted {kind} {physical}")
        progress.step(f"data: {len(kept)} resource(s) deleted")
    except (ClientError, BotoCoreError) as err:
        raise _aws_error("destroy", err) from None
    return 0


def _delete_data(aws: Aws, kind: str, physical: str) -> None:
    if kind == "AWS::S3::Bucket":
        s3 = aws.client("s3")
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=physical):
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if doomed:
                s3.delete_objects(Bucket=physical, Delete={"Objects": doomed, "Quiet": True})
        s3.delete_bucket(Bucket=physical)
    elif kind == "AWS::Kinesis::Stream":
        aws.client("kinesis").delete_stream(StreamName=physical, EnforceConsumerDeletion=True)
    elif kind == "AWS::DynamoDB::Table":
        dynamodb = aws.client("dynamodb")
        dynamodb.update_table(TableName=physical, DeletionProtectionEnabled=False)
        dynamodb.delete_table(TableName=physical)
    elif kind == "AWS::KMS::Key":
        aws.client("kms").schedule_key_deletion(KeyId=physical, PendingWindowInDays=7)


# ------------------------------------------------------------------------------------- the CLI


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, choices=ENVIRONMENTS, help="environment")
    parser.add_argument("--region", help="AWS region (default: AWS_REGION or the profile's)")
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds to wait for one stack (default 3600)"
    )


def deploy_parser(prog: str = "sluice deploy") -> argparse.ArgumentParser:
    parser = ErrorParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    _common(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="show the change set, deploy nothing"
    )
    parser.add_argument(
        "--artifact-bucket",
        help="bucket for packages and templates (default sluice-<env>-artifacts-<account>, created if missing)",
    )
    parser.add_argument(
        "--flink-zip",
        type=Path,
        help="the MSF application zip, or 'build' to build it (sluice flink package, with make "
        "flink-jar's jar); without it stack 2 is not deployed",
    )
    parser.add_argument(
        "--no-start", action="store_true", help="deploy stack 2 but do not start the application"
    )
    parser.add_argument(
        "--lambda-deps",
        type=Path,
        help="a folder of dependencies already installed for the Lambda platform (default: pip installs them, cached in .sluice-build/)",
    )
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter of params/<env>.json (flink.KEY=VALUE for stack 2); repeatable",
    )
    return parser


def destroy_parser(prog: str = "sluice destroy") -> argparse.ArgumentParser:
    parser = ErrorParser(
        prog=prog,
        allow_abbrev=False,
        description="Delete an environment's stacks; data buckets, the stream, the table and the key stay unless --delete-data.",
    )
    _common(parser)
    parser.add_argument(
        "--delete-data",
        action="store_true",
        help="also delete the retained buckets (every object version), stream, table and key",
    )
    return parser


def main(argv: Sequence[str], command: str = "deploy", out: TextIO | None = None) -> int:
    parsers: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[..., int]]] = {
        "deploy": (deploy_parser, deploy),
        "destroy": (destroy_parser, destroy),
    }
    build, run = parsers[command]
    return run(build().parse_args(list(argv)), out)
