"""``sluice deploy`` / ``sluice destroy`` against moto server on 127.0.0.1 (its own process).

Through the real command (``sluice.cli.main.main``) and CloudFormation change sets. moto gives
stacks made through change sets no Outputs, so the checks read the resources themselves. The Lambda
dependencies come from ``--lambda-deps`` (an empty folder: nothing is downloaded here); the default
path (pip for the Lambda platform) is what a real deploy uses.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.local.stack import client
from sluice.cli.main import main

ACCOUNT = "123456789012"


@pytest.fixture
def aws(local_aws: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for variable, value in local_aws.env.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    env: dict[str, str] = local_aws.env
    return env


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def deploy_args(tmp_path: Path, env: str = "dev", *extra: str) -> list[str]:
    deps = tmp_path / "deps"
    deps.mkdir(exist_ok=True)
    return ["deploy", "--env", env, "--lambda-deps", str(deps), "--timeout", "60", *extra]


def test_deploy_dry_run_update_and_destroy(
    aws: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfn, s3 = client("cloudformation", aws), client("s3", aws)
    bucket = f"sluice-dev-artifacts-{ACCOUNT}"

    # A dry run shows the change set and deploys nothing
    code, out, err = run(capsys, *deploy_args(tmp_path, "dev", "--dry-run"))
    assert (code, err) == (0, ""), err
    assert re.search(r"create sluice-dev-core: \d+ change\(s\)", out)
    assert "Add     Stream AWS::Kinesis::Stream" in out
    assert out.rstrip().endswith("dry run: nothing deployed")
    assert cfn.list_stacks(StackStatusFilter=["CREATE_COMPLETE"])["StackSummaries"] == []

    # Packages are uploaded under their content hash, each with only what its function needs
    objects = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="edges/")["Contents"]}
    assert len(objects) == 4
    for key in objects:
        name, digest = re.fullmatch(r"edges/(\w+)-([0-9a-f]{20})\.zip", key).groups()  # type: ignore[union-attr]
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest().startswith(digest)
        names = zipfile.ZipFile(io.BytesIO(body)).namelist()
        assert f"edge_lambdas/{name}/handler.py" in names
        assert "edge_lambdas/shared/publisher.py" in names and "sluice/core/contracts.py" in names
        others = {"iot_ingest", "log_ingest", "feed_poller", "archive_transform"} - {name}
        assert not [
            n
            for n in names
            if n.split("/")[1] in others or n.startswith(("sluice/tables", "sluice/cli"))
        ]

    # The deploy creates the stack, step by step
    code, out, err = run(capsys, *deploy_args(tmp_path))
    assert (code, err) == (0, ""), err
    steps = re.findall(r"^\[(\d)/6\] (\w+)", out, flags=re.M)
    assert [s[1] for s in steps] == [
        "credentials",
        "parameters",
        "lambdas",
        "template",
        "change",
        "deployed",
    ]
    assert "CREATE_COMPLETE" in out
    (stack,) = cfn.describe_stacks(StackName="sluice-dev-core")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    kinesis = client("kinesis", aws)
    assert (
        kinesis.describe_stream_summary(StreamName="sluice-dev-events")["StreamDescriptionSummary"][
            "RetentionPeriodHours"
        ]
        == 24
    )

    # The same deploy again uploads nothing and changes nothing
    code, out, err = run(capsys, *deploy_args(tmp_path))
    assert (code, err) == (0, "")
    assert out.count("unchanged") == 4 and "no changes" in out

    # A changed parameter updates the stack
    code, out, err = run(
        capsys, *deploy_args(tmp_path, "dev", "--parameter", "StreamRetentionHours=48")
    )
    assert (code, err) == (0, ""), err
    assert (
        cfn.describe_stacks(StackName="sluice-dev-core")["Stacks"][0]["StackStatus"]
        == "UPDATE_COMPLETE"
    )
    assert (
        kinesis.describe_stream_summary(StreamName="sluice-dev-events")["StreamDescriptionSummary"][
            "RetentionPeriodHours"
        ]
        == 48
    )

    # (Stack 2 is not deployed here: moto gives stacks made through change sets no Outputs, so
    # stack 1 has no exports for stack 2 to import; test_moto_stack.py deploys it with create_stack.)

    # Destroy removes the stacks and keeps the data
    code, out, err = run(capsys, "destroy", "--env", "dev", "--timeout", "60")
    assert (code, err) == (0, ""), err
    assert "sluice-dev-flink: not deployed" in out and "sluice-dev-core: deleted" in out
    assert f"kept AWS::S3::Bucket sluice-dev-warehouse-{ACCOUNT}" in out
    assert "kept AWS::Kinesis::Stream sluice-dev-events" in out
    names = {f["FunctionName"] for f in client("lambda", aws).list_functions()["Functions"]}
    assert not {n for n in names if n.startswith("sluice-dev-")}
    s3.head_bucket(Bucket=f"sluice-dev-warehouse-{ACCOUNT}")
    kinesis.describe_stream_summary(StreamName="sluice-dev-events")


def test_destroy_delete_data(
    aws: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *deploy_args(tmp_path, "prod"))
    assert code == 0, err
    s3 = client("s3", aws)
    raw = f"sluice-prod-raw-{ACCOUNT}"
    s3.put_object(Bucket=raw, Key="raw/dt=2026-12-01/hour=12/a.gz", Body=b"x")
    s3.put_object(Bucket=raw, Key="raw/dt=2026-12-01/hour=12/a.gz", Body=b"y")  # two versions
    code, out, err = run(capsys, "destroy", "--env", "prod", "--delete-data", "--timeout", "60")
    assert (code, err) == (0, ""), err
    assert f"deleted AWS::S3::Bucket {raw}" in out
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert not {b for b in buckets if b.startswith("sluice-prod-") and "artifacts" not in b}
    assert "sluice-prod-events" not in client("kinesis", aws).list_streams()["StreamNames"]
    assert "sluice-prod-feed-checkpoints" not in client("dynamodb", aws).list_tables()["TableNames"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--parameter", "ApiThrottleRate=0"],
            "parameter ApiThrottleRate=0 is below its minimum 1",
        ),
        (["--parameter", "NoSuchParameter=1"], "unknown parameter NoSuchParameter"),
        (
            ["--flink-zip", "missing/stream_job.zip"],
            "--flink-zip missing/stream_job.zip: no such file",
        ),
        (["--parameter", "oops"], "use KEY=VALUE"),
    ],
)
def test_refusals_are_one_line(
    aws_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, _, err = run(capsys, *deploy_args(tmp_path, "dev", *extra))
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    cfn = boto3.client("cloudformation", endpoint_url=aws_env)
    assert "sluice-dev-core" not in {s["StackName"] for s in cfn.list_stacks()["StackSummaries"]}


def test_missing_credentials_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    code, _, err = run(capsys, *deploy_args(tmp_path))
    assert code == 2 and err.strip().count("\n") == 0 and "no AWS credentials" in err, err


def _stack_parameters(cfn: Any) -> dict[str, str]:
    (stack,) = cfn.describe_stacks(StackName="sluice-dev-core")["Stacks"]
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}


def test_deploy_the_lambda_path_and_switch(
    aws: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfn, s3 = client("cloudformation", aws), client("s3", aws)
    bucket = f"sluice-dev-artifacts-{ACCOUNT}"
    on_lambda = ["--parameter", "Processing=lambda"]

    # Processing=lambda packages the transform Lambda (with the tables layer) and skips stack 2
    code, out, err = run(capsys, *deploy_args(tmp_path, "dev", *on_lambda))
    assert (code, err) == (0, ""), err
    assert (
        "stack 2 (Flink application) skipped: Processing is lambda (deployment lambda-dev-" in out
    )
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="edges/")["Contents"]}
    (transform,) = [k for k in keys if k.startswith("edges/stream_transform-")]
    body = s3.get_object(Bucket=bucket, Key=transform)["Body"].read()
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert "edge_lambdas/stream_transform/handler.py" in names
    assert "sluice/tables/batch_commit.py" in names and "sluice/tables/warehouse.py" in names
    assert not [n for n in names if n.startswith(("sluice/cli", "sluice/analysts", "beam_jobs"))]
    first = _stack_parameters(cfn)
    assert first["Processing"] == "lambda" and first["TransformDeploymentId"].startswith("lambda-")
    function = client("lambda", aws).get_function_configuration(
        FunctionName="sluice-dev-stream-transform"
    )
    assert (
        function["Environment"]["Variables"]["SLUICE_DEPLOYMENT_ID"]
        == (first["TransformDeploymentId"])
    )

    # Deploying the Lambda path again keeps its owner id (its claim on the tables stands)
    code, out, err = run(capsys, *deploy_args(tmp_path, "dev", *on_lambda))
    assert (code, err) == (0, ""), err
    assert _stack_parameters(cfn)["TransformDeploymentId"] == first["TransformDeploymentId"]

    # Switching to flink and back to lambda makes a new owner id: the new deployment claims the
    # tables from the job at its first batch
    code, out, err = run(capsys, *deploy_args(tmp_path, "dev"))
    assert (code, err) == (0, ""), err
    assert _stack_parameters(cfn)["Processing"] == "flink"
    import time

    time.sleep(1.1)  # the id holds the time to the second
    code, out, err = run(capsys, *deploy_args(tmp_path, "dev", *on_lambda))
    assert (code, err) == (0, ""), err
    assert _stack_parameters(cfn)["TransformDeploymentId"] != first["TransformDeploymentId"]

    # A Flink zip with Processing=lambda is refused, before anything is deployed
    zip_file = tmp_path / "stream_job.zip"
    zip_file.write_bytes(b"PK")
    code, _, err = run(
        capsys, *deploy_args(tmp_path, "dev", *on_lambda, "--flink-zip", str(zip_file))
    )
    assert code == 2 and "--flink-zip with Processing=lambda" in err, err


def test_building_the_flink_zip_without_the_shaded_jar_is_one_line(
    aws_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The jar is make flink-jar's (test-flink builds it); where it is not, the deploy stops first.
    monkeypatch.setattr("flink_jobs.jars.SHADED_JAR", tmp_path / "not-built.jar")
    code, out, err = run(capsys, *deploy_args(tmp_path, "dev", "--flink-zip", "build"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "not-built.jar is not built: run 'make flink-jar'" in err and out == ""
    cfn = boto3.client("cloudformation", endpoint_url=aws_env)
    assert "sluice-dev-core" not in {s["StackName"] for s in cfn.list_stacks()["StackSummaries"]}
