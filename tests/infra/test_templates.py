"""Unit tests over the AWS templates, for what no local endpoint creates (moto skips alarms, MSF,
Glue, Firehose, Athena, API Gateway v2, Scheduler): alarms, dashboard, Glue, Firehose, MSF, IAM,
and the edges' handlers and settings as the templates configure them.

The templates are checked as each environment deploys them (the SAM template translated to
CloudFormation with infra/aws/params/<env>.json), and the alarm dimensions are checked against the
EMF the edges really print (Powertools, run here), not against a copy of the names.
"""

from __future__ import annotations

import importlib
import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from infra_testkit import core_parameters, flink_parameters, translated_core

from infra.aws.templates import (
    AWS_DIR,
    ENVIRONMENTS,
    STACKS,
    check_parameters,
    load_parameters,
    load_template,
)

REPO = AWS_DIR.parent.parent


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def resolve(value: Any, template: dict[str, Any], parameters: dict[str, str]) -> Any:
    """A property's value with parameter references and FindInMap resolved."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        name = value["Ref"]
        if name in template.get("Parameters", {}):
            spec = template["Parameters"][name]
            raw = parameters.get(name, spec.get("Default"))
            return float(raw) if spec["Type"] == "Number" else raw
        return value
    if isinstance(value, dict) and set(value) == {"Fn::FindInMap"}:
        mapping, top, second = (resolve(v, template, parameters) for v in value["Fn::FindInMap"])
        return template["Mappings"][mapping][str(top)][second]
    return value


# ------------------------------------------------------------------------------------- alarms

# (namespace, metric, {dimension: logical id or literal}) of every alarm, as the issue lists them.
CORE_ALARMS = {
    "StreamIteratorAgeAlarm": (
        "AWS/Kinesis",
        "GetRecords.IteratorAgeMilliseconds",
        {"StreamName": "Stream"},
    ),
    "StreamWriteThrottledAlarm": (
        "AWS/Kinesis",
        "WriteProvisionedThroughputExceeded",
        {"StreamName": "Stream"},
    ),
    "StreamNoDataAlarm": ("AWS/Kinesis", "IncomingRecords", {"StreamName": "Stream"}),
    "IotIngestErrorsAlarm": ("AWS/Lambda", "Errors", {"FunctionName": "IotIngestFunction"}),
    "IotIngestThrottlesAlarm": ("AWS/Lambda", "Throttles", {"FunctionName": "IotIngestFunction"}),
    "IotIngestDurationAlarm": ("AWS/Lambda", "Duration", {"FunctionName": "IotIngestFunction"}),
    "LogIngestErrorsAlarm": ("AWS/Lambda", "Errors", {"FunctionName": "LogIngestFunction"}),
    "LogIngestThrottlesAlarm": ("AWS/Lambda", "Throttles", {"FunctionName": "LogIngestFunction"}),
    "LogIngestDurationAlarm": ("AWS/Lambda", "Duration", {"FunctionName": "LogIngestFunction"}),
    "LogIngestEventAgeAlarm": (
        "AWS/Lambda",
        "AsyncEventAge",
        {"FunctionName": "LogIngestFunction"},
    ),
    "FeedPollerErrorsAlarm": ("AWS/Lambda", "Errors", {"FunctionName": "FeedPollerFunction"}),
    "FeedPollerThrottlesAlarm": ("AWS/Lambda", "Throttles", {"FunctionName": "FeedPollerFunction"}),
    "FeedPollerDurationAlarm": ("AWS/Lambda", "Duration", {"FunctionName": "FeedPollerFunction"}),
    "FeedPollFailuresAlarm": ("Sluice", "feeds_failed", {"service": "=feed_poller"}),
    "FeedPollerNoDataAlarm": ("Sluice", "feeds_polled", {"service": "=feed_poller"}),
    "IotIngestNoDataAlarm": ("Sluice", "received", {"service": "=iot_ingest"}),
    "Api5xxAlarm": ("AWS/ApiGateway", "5xx", {"ApiId": "IngestApi", "Stage": "=$default"}),
    "ApiLatencyAlarm": ("AWS/ApiGateway", "Latency", {"ApiId": "IngestApi", "Stage": "=$default"}),
    "FirehoseFreshnessAlarm": (
        "AWS/Firehose",
        "DeliveryToS3.DataFreshness",
        {"DeliveryStreamName": "RawArchiveDelivery"},
    ),
    # The Lambda path's (Processing=lambda only).
    "TransformErrorsAlarm": ("AWS/Lambda", "Errors", {"FunctionName": "StreamTransformFunction"}),
    "TransformIteratorAgeAlarm": (
        "AWS/Lambda",
        "IteratorAge",
        {"FunctionName": "StreamTransformFunction"},
    ),
    "TransformFailedBatchesAlarm": ("Sluice", "failed_batches", {"service": "=stream_transform"}),
}
QUERY_ALARMS = {
    "EdgeDeadLettersAlarm": 'SELECT SUM(dead_lettered) FROM SCHEMA("Sluice", reason, service)',
    "FeedDeadLettersAlarm": 'SELECT SUM(dead_lettered) FROM SCHEMA("Sluice", feed, reason, service)',
}
FLINK_ALARMS = {
    "RestartsAlarm": "numRestarts",
    "FailedCheckpointsAlarm": "numberOfFailedCheckpoints",
    "CheckpointDurationAlarm": "lastCheckpointDuration",
    "LagAlarm": "millisBehindLatest",
    "HeapMemoryAlarm": "heapMemoryUtilization",
    "ContainerMemoryAlarm": "containerMemoryUtilization",
    "CpuAlarm": "cpuUtilization",
    "JobNoDataAlarm": "numRecordsInPerSecond",
}


def test_core_alarms_watch_the_listed_metrics_and_notify_the_topic(core: dict[str, Any]) -> None:
    alarms = resources(core, "AWS::CloudWatch::Alarm")
    assert set(alarms) == set(CORE_ALARMS) | set(QUERY_ALARMS) | {"TransformGaveUpAlarm"}
    assert "TransformGaveUpAlarm" in alarms  # its dimension is the queue's name (GetAtt)
    for name, (namespace, metric, dimensions) in CORE_ALARMS.items():
        alarm = alarms[name]
        assert (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric), name
        expected = {
            key: value[1:] if value.startswith("=") else {"Ref": value}
            for key, value in dimensions.items()
        }
        assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == expected, name
    for name, expression in QUERY_ALARMS.items():
        (query,) = alarms[name]["Metrics"]
        assert query["Expression"] == expression and query["ReturnData"] is True, name
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm["AlarmName"] == {"Fn::Sub": alarm["AlarmName"]["Fn::Sub"]}
        assert "docs/ARCHITECTURE.md" in alarm["AlarmDescription"], name


def test_duration_alarms_fire_at_80_percent_of_each_function_timeout(core: dict[str, Any]) -> None:
    alarms = resources(core, "AWS::CloudWatch::Alarm")
    functions = resources(core, "AWS::Lambda::Function")
    for function in ("IotIngestFunction", "LogIngestFunction", "FeedPollerFunction"):
        alarm = alarms[function.replace("Function", "DurationAlarm")]
        assert alarm["Statistic"] == "Maximum"
        assert alarm["Threshold"] == pytest.approx(functions[function]["Timeout"] * 1000 * 0.8)


def test_thresholds_come_from_the_environment(env: str, core: dict[str, Any]) -> None:
    alarms = resources(core, "AWS::CloudWatch::Alarm")
    params = core_parameters(env)

    def threshold(name: str) -> Any:
        return resolve(alarms[name]["Threshold"], core, params)

    # Half the job's allowed lateness (600 s): lag alarms before events turn too_late.
    assert threshold("StreamIteratorAgeAlarm") == 300_000
    assert alarms["StreamIteratorAgeAlarm"]["ComparisonOperator"] == "GreaterThanThreshold"
    assert threshold("StreamWriteThrottledAlarm") == 0
    assert threshold("EdgeDeadLettersAlarm") == float(params["DeadLetterThreshold"])
    for name in ("StreamNoDataAlarm", "IotIngestNoDataAlarm", "FeedPollerNoDataAlarm"):
        alarm = alarms[name]
        assert alarm["TreatMissingData"] == "breaching", name
        assert alarm["ComparisonOperator"] == "LessThanThreshold" and threshold(name) == 1
        assert alarm["Period"] * resolve(alarm["EvaluationPeriods"], core, params) == 60 * float(
            params["NoDataMinutes"]
        )
    assert alarms["ApiLatencyAlarm"]["ExtendedStatistic"] == "p99"
    assert threshold("ApiLatencyAlarm") < 15_000  # below the IoT edge's timeout
    # Firehose buffers up to 300 s: freshness alarms only past several buffer intervals.
    firehose = resources(core, "AWS::KinesisFirehose::DeliveryStream")["RawArchiveDelivery"]
    interval = firehose["ExtendedS3DestinationConfiguration"]["BufferingHints"]["IntervalInSeconds"]
    assert threshold("FirehoseFreshnessAlarm") >= 2 * interval


def test_http_api_alarms_use_the_stage_the_api_gets(core: dict[str, Any]) -> None:
    (stage,) = resources(core, "AWS::ApiGatewayV2::Stage").values()
    assert stage["StageName"] == "$default"
    assert stage["ApiId"] == {"Ref": "IngestApi"}
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRate"}


def _emf(run: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    with redirect_stdout(out):
        run()
    return [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def _dimension_sets(
    blobs: list[dict[str, Any]], metric: str
) -> set[tuple[str, str, frozenset[str]]]:
    found = set()
    for blob in blobs:
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            if metric in {m["Name"] for m in directive["Metrics"]}:
                for dims in directive["Dimensions"]:
                    found.add((directive["Namespace"], blob.get("service", ""), frozenset(dims)))
    return found


def test_edge_alarms_match_the_emf_the_edges_print() -> None:
    """The IoT and log edges' metrics, printed by Powertools as in Lambda, carry the namespace and
    dimension sets the alarms and the Metrics Insights queries select."""
    from aws_lambda_powertools import Metrics

    from edge_lambdas.shared.telemetry import NAMESPACE, record_metrics
    from sluice.edges.ingest import IngestCounts

    counts = IngestCounts(received=5, emitted=3, dead_lettered={"invalid_json": 2})
    metrics = Metrics(namespace=NAMESPACE, service="iot_ingest")

    def run() -> None:
        record_metrics(metrics, "iot_ingest", counts, None)
        metrics.flush_metrics()

    blobs = _emf(run)
    assert ("Sluice", "iot_ingest", frozenset({"service"})) in _dimension_sets(blobs, "received")
    assert _dimension_sets(blobs, "dead_lettered") == {
        ("Sluice", "iot_ingest", frozenset({"service", "reason"}))
    }
    assert QUERY_ALARMS["EdgeDeadLettersAlarm"].endswith('("Sluice", reason, service)')
    # The handlers name their service as the alarms do.
    for module, service in (("iot_ingest", "iot_ingest"), ("log_ingest", "log_ingest")):
        source = (REPO / "edge_lambdas" / module / "handler.py").read_text()
        assert f'SERVICE = "{service}"' in source


def test_poller_alarms_match_the_emf_the_poller_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    handler = importlib.import_module("edge_lambdas.feed_poller.handler")
    from sluice.edges.polling import FeedPollSummary

    summary = FeedPollSummary(feed="usgs_earthquakes", status="failed", dead_letters=1)
    summary.dead_letters_by_reason["invalid_json"] = 1

    def run() -> None:
        handler.publish_metrics(summary)
        handler.metrics.add_metric(name="feeds_polled", unit="Count", value=1)
        handler.metrics.add_metric(name="feeds_failed", unit="Count", value=1)
        handler.metrics.flush_metrics()

    blobs = _emf(run)
    top = ("Sluice", "feed_poller", frozenset({"service"}))
    assert top in _dimension_sets(blobs, "feeds_failed")
    assert top in _dimension_sets(blobs, "feeds_polled")
    assert ("Sluice", "feed_poller", frozenset({"feed", "reason", "service"})) in _dimension_sets(
        blobs, "dead_lettered"
    )
    assert QUERY_ALARMS["FeedDeadLettersAlarm"].endswith('("Sluice", feed, reason, service)')
    # The handler's own metric names, not a copy: feeds_failed and feeds_polled are what it adds.
    source = (REPO / "edge_lambdas" / "feed_poller" / "handler.py").read_text()
    assert 'name="feeds_failed"' in source and 'name="feeds_polled"' in source


def test_flink_alarms(flink: dict[str, Any]) -> None:
    alarms = resources(flink, "AWS::CloudWatch::Alarm")
    assert set(alarms) == set(FLINK_ALARMS)
    for name, metric in FLINK_ALARMS.items():
        alarm = alarms[name]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/KinesisAnalytics", metric)
        assert alarm["Dimensions"] == [{"Name": "Application", "Value": {"Ref": "StreamJob"}}]
        topic = {"Fn::ImportValue": {"Fn::Sub": "${CoreStackName}-AlarmTopic"}}
        assert alarm["AlarmActions"] == [topic]
    # FLINK-2_2 removed fullRestarts; numRestarts replaces it.
    assert "fullRestarts" not in json.dumps(flink)
    for memory in ("HeapMemoryAlarm", "ContainerMemoryAlarm"):
        assert alarms[memory]["Threshold"] == 90
    assert alarms["CpuAlarm"]["Threshold"] == 80


def test_checkpoint_alarm_is_half_the_interval_for_every_allowed_interval(
    flink: dict[str, Any],
) -> None:
    alarm = resources(flink, "AWS::CloudWatch::Alarm")["CheckpointDurationAlarm"]
    allowed = flink["Parameters"]["CheckpointIntervalMillis"]["AllowedValues"]
    for interval in allowed:
        params = {"CheckpointIntervalMillis": interval}
        assert resolve(alarm["Threshold"], flink, params) * 2 == int(interval)


# ----------------------------------------------------------------------------------- dashboard


def test_dashboard_is_valid_json_with_the_pipeline_end_to_end(core: dict[str, Any]) -> None:
    (dashboard,) = resources(core, "AWS::CloudWatch::Dashboard").values()
    body, variables = dashboard["DashboardBody"]["Fn::Sub"]
    assert set(variables) == {"Application"}
    # Every ${...} is a resource, a parameter, a pseudo parameter or the Sub variable.
    names = set(re.findall(r"\$\{([^}!]+)\}", body))
    known = set(core["Resources"]) | set(core["Parameters"]) | set(variables) | {"AWS::Region"}
    assert names <= known, names - known
    rendered = json.loads(re.sub(r"\$\{([^}!]+)\}", "1", body))
    titles = [w["properties"]["title"] for w in rendered["widgets"]]
    for theme in (
        "Ingest rate per source",
        "Kinesis lag",
        "Job throughput",
        "Dead letters by reason",
        "Iceberg commits",
    ):
        assert any(title.startswith(theme) for title in titles), theme
    text = json.dumps(rendered)
    for metric in (
        "received",
        "dead_lettered",
        "GetRecords.IteratorAgeMilliseconds",
        "millisBehindLatest",
        "numRecordsInPerSecond",
        "lastCommitDurationMs",
        "committedDataFilesCount",
    ):
        assert metric in text, metric
    flink_name = load_template(STACKS["flink"].template)["Resources"]["StreamJob"]["Properties"]
    assert variables["Application"] == flink_name["ApplicationName"]


# ------------------------------------------------------------------- Glue, Athena, Firehose, S3


def test_glue_database_holds_the_warehouse(env: str, core: dict[str, Any]) -> None:
    (database,) = resources(core, "AWS::Glue::Database").values()
    assert database["DatabaseInput"]["Name"] == {"Ref": "GlueDatabaseName"}
    assert database["DatabaseInput"]["LocationUri"] == {
        "Fn::Sub": "s3://${WarehouseBucket}/warehouse/"
    }
    assert load_parameters(env)["core"]["GlueDatabaseName"] == (
        "sluice" if env == "prod" else "sluice_dev"
    )


def test_athena_workgroup_mirrors_infra_athena(env: str, core: dict[str, Any]) -> None:
    reference = json.loads((REPO / "infra" / "athena" / "workgroup.json").read_text())[
        "Configuration"
    ]
    (group,) = resources(core, "AWS::Athena::WorkGroup").values()
    config = group["WorkGroupConfiguration"]
    for key in (
        "EnforceWorkGroupConfiguration",
        "PublishCloudWatchMetricsEnabled",
        "RequesterPaysEnabled",
    ):
        assert config[key] == reference[key], key
    assert config["EngineVersion"] == reference["EngineVersion"]
    cutoff = resolve(config["BytesScannedCutoffPerQuery"], core, core_parameters(env))
    assert cutoff <= reference["BytesScannedCutoffPerQuery"]
    # Results are encrypted with the stack's key (stronger than the JSON's SSE_S3 for a fresh setup).
    assert config["ResultConfiguration"]["EncryptionConfiguration"]["EncryptionOption"] == "SSE_KMS"


def test_firehose_archives_the_stream_by_arrival_hour(core: dict[str, Any]) -> None:
    from sluice.stream.archive import ARCHIVE_PREFIX

    (delivery,) = resources(core, "AWS::KinesisFirehose::DeliveryStream").values()
    assert delivery["DeliveryStreamType"] == "KinesisStreamAsSource"
    assert delivery["KinesisStreamSourceConfiguration"]["KinesisStreamARN"] == {
        "Fn::GetAtt": ["Stream", "Arn"]
    }
    s3 = delivery["ExtendedS3DestinationConfiguration"]
    assert s3["BucketARN"] == {"Fn::GetAtt": ["RawArchiveBucket", "Arn"]}
    assert s3["Prefix"].startswith(f"{ARCHIVE_PREFIX}/dt=") and "/hour=" in s3["Prefix"]
    assert s3["CompressionFormat"] == "GZIP"
    assert s3["EncryptionConfiguration"]["KMSEncryptionConfig"]["AWSKMSKeyARN"] == {
        "Fn::GetAtt": ["DataKey", "Arn"]
    }
    assert not s3["ErrorOutputPrefix"].startswith(
        f"{ARCHIVE_PREFIX}/"
    )  # errors never look like data


def test_firehose_writes_what_sluice_replay_reads(core: dict[str, Any]) -> None:
    # The transformation Lambda makes the archive lines and returns the partition keys the prefix
    # uses; the objects get the extension the replay looks for.
    import base64

    from sluice.stream.archive import firehose_records

    (delivery,) = resources(core, "AWS::KinesisFirehose::DeliveryStream").values()
    s3 = delivery["ExtendedS3DestinationConfiguration"]
    (processor,) = s3["ProcessingConfiguration"]["Processors"]
    parameters = {p["ParameterName"]: p["ParameterValue"] for p in processor["Parameters"]}
    assert processor["Type"] == "Lambda" and s3["ProcessingConfiguration"]["Enabled"] is True
    assert parameters["LambdaArn"] == {"Fn::GetAtt": ["ArchiveTransformFunction", "Arn"]}
    function = resources(core, "AWS::Lambda::Function")["ArchiveTransformFunction"]
    assert function["Handler"] == "edge_lambdas.archive_transform.handler.lambda_handler"
    assert s3["DynamicPartitioningConfiguration"]["Enabled"] is True
    assert s3["FileExtension"] == ".jsonl.gz" and s3["CompressionFormat"] == "GZIP"
    sample = {
        "recordId": "1", "approximateArrivalTimestamp": 0, "data": base64.b64encode(b"{}").decode(),
        "kinesisRecordMetadata": {"shardId": "shardId-000000000000", "sequenceNumber": "1",
                                  "subsequenceNumber": 0, "approximateArrivalTimestamp": 0},
    }  # fmt: skip
    (answer,) = firehose_records([sample]).records
    keys = answer["metadata"]["partitionKeys"]
    assert (
        s3["Prefix"] == "raw/dt=!{partitionKeyFromLambda:dt}/hour=!{partitionKeyFromLambda:hour}/"
    )
    assert set(keys) == {"dt", "hour"}
    # Firehose may invoke only this function
    role = resources(core, "AWS::IAM::Role")["FirehoseRole"]
    (statement,) = [
        st for policy in role["Policies"] for st in policy["PolicyDocument"]["Statement"]
        if st["Sid"] == "TransformRecords"
    ]  # fmt: skip
    assert statement["Resource"] == {"Fn::GetAtt": ["ArchiveTransformFunction", "Arn"]}


def test_archive_lifecycle_standard_ia_glacier(env: str, core: dict[str, Any]) -> None:
    bucket = resources(core, "AWS::S3::Bucket")["RawArchiveBucket"]
    (rule,) = [r for r in bucket["LifecycleConfiguration"]["Rules"] if r.get("Prefix") == "raw/"]
    params = core_parameters(env)
    days = [
        (t["StorageClass"], resolve(t["TransitionInDays"], core, params))
        for t in rule["Transitions"]
    ]
    assert days == [("STANDARD_IA", 30), ("GLACIER", 90)]


def test_buckets_block_public_access_encrypt_and_refuse_plain_http(core: dict[str, Any]) -> None:
    buckets = resources(core, "AWS::S3::Bucket")
    policies = {
        p["Bucket"]["Ref"]: p["PolicyDocument"]
        for p in resources(core, "AWS::S3::BucketPolicy").values()
    }
    assert set(buckets) == {
        "AccessLogBucket",
        "WarehouseBucket",
        "RawArchiveBucket",
        "LogBucket",
        "AthenaResultsBucket",
    }
    for name, bucket in buckets.items():
        assert all(bucket["PublicAccessBlockConfiguration"].values()), name
        (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        algorithm = sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
        assert algorithm == ("AES256" if name == "AccessLogBucket" else "aws:kms"), name
        deny = [s for s in policies[name]["Statement"] if s["Effect"] == "Deny"]
        assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, name
    for name in ("WarehouseBucket", "RawArchiveBucket"):
        assert buckets[name]["VersioningConfiguration"] == {"Status": "Enabled"}, name


def test_stream_table_and_queue_are_encrypted_and_recoverable(
    env: str, core: dict[str, Any]
) -> None:
    stream = resources(core, "AWS::Kinesis::Stream")["Stream"]
    assert stream["StreamEncryption"] == {
        "EncryptionType": "KMS",
        "KeyId": {"Fn::GetAtt": ["DataKey", "Arn"]},
    }
    assert stream["StreamModeDetails"] == {"StreamMode": {"Ref": "StreamMode"}}
    assert stream["ShardCount"] == {
        "Fn::If": ["IsProvisioned", {"Ref": "ShardCount"}, {"Ref": "AWS::NoValue"}]
    }
    assert core_parameters(env)["StreamMode"] == "ON_DEMAND"
    table = resources(core, "AWS::DynamoDB::Table")["CheckpointTable"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["KeySchema"] == [{"AttributeName": "feed", "KeyType": "HASH"}]
    queue = resources(core, "AWS::SQS::Queue")["EdgeFailureQueue"]
    assert queue["KmsMasterKeyId"] == {"Ref": "DataKey"}


# ------------------------------------------------------------------------------------------ MSF


def test_msf_application_properties(flink: dict[str, Any]) -> None:
    app = flink["Resources"]["StreamJob"]["Properties"]
    assert app["RuntimeEnvironment"] == "FLINK-2_2"
    config = app["ApplicationConfiguration"]
    groups = {
        g["PropertyGroupId"]: g["PropertyMap"]
        for g in config["EnvironmentProperties"]["PropertyGroups"]
    }
    assert groups["kinesis.analytics.flink.run.options"] == {
        "python": "main.py",
        "jarfile": "lib/pyflink-dependencies.jar",
        "pyFiles": "dep/",
    }
    assert set(groups) == {
        "kinesis.analytics.flink.run.options",
        "sluice.source",
        "sluice.iceberg",
        "sluice.job",
    }
    assert groups["sluice.iceberg"]["catalog"] == "glue"
    flink_config = config["FlinkApplicationConfiguration"]
    checkpoints = flink_config["CheckpointConfiguration"]
    assert (
        checkpoints["ConfigurationType"] == "CUSTOM" and checkpoints["CheckpointingEnabled"] is True
    )
    assert checkpoints["CheckpointInterval"] == {"Ref": "CheckpointIntervalMillis"}
    # The job's commit interval is the checkpoint interval (Iceberg commits on checkpoints).
    for interval in flink["Parameters"]["CheckpointIntervalMillis"]["AllowedValues"]:
        seconds = resolve(
            groups["sluice.job"]["commit_interval_seconds"],
            flink,
            {"CheckpointIntervalMillis": interval},
        )
        assert seconds * 1000 == int(interval)
    parallelism = flink_config["ParallelismConfiguration"]
    assert parallelism["AutoScalingEnabled"] == {"Ref": "AutoScalingEnabled"}
    # cfn-lint does not check MSF's maximum of 8 tasks per KPU; the parameter does.
    assert flink["Parameters"]["ParallelismPerKPU"]["MaxValue"] == 8
    assert flink_config["MonitoringConfiguration"]["ConfigurationType"] == "CUSTOM"
    assert config["ApplicationSnapshotConfiguration"] == {"SnapshotsEnabled": True}
    restore = app["RunConfiguration"]["ApplicationRestoreConfiguration"]
    assert restore["ApplicationRestoreType"] == "RESTORE_FROM_LATEST_SNAPSHOT"
    logging = resources(flink, "AWS::KinesisAnalyticsV2::ApplicationCloudWatchLoggingOption")
    assert [p["ApplicationName"] for p in logging.values()] == [{"Ref": "StreamJob"}]


# ------------------------------------------------------------------------------------------ IAM

# Actions that have no resource-level permissions: the only ones allowed on "*".
RESOURCE_LESS_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def _role_statements(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for name, role in resources(template, "AWS::IAM::Role").items():
        assert not role.get("ManagedPolicyArns"), (
            f"{name}: managed policies are not least privilege"
        )
        for policy in role.get("Policies", []):
            found.setdefault(name, []).extend(policy["PolicyDocument"]["Statement"])
    for name, policy in resources(template, "AWS::IAM::Policy").items():
        found.setdefault(name, []).extend(policy["PolicyDocument"]["Statement"])
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("stack", ["core", "flink"])
def test_no_wildcard_actions_and_star_resources_only_where_aws_has_no_arn(stack: str) -> None:
    template = (
        translated_core("dev") if stack == "core" else load_template(STACKS["flink"].template)
    )
    statements = _role_statements(template)
    assert statements
    for role, role_statements in statements.items():
        for statement in role_statements:
            assert statement["Effect"] == "Allow", role
            actions = _as_list(statement["Action"])
            for action in actions:
                assert "*" not in action, f"{role}: wildcard action {action}"
            if "*" in _as_list(statement["Resource"]):
                assert set(actions) <= RESOURCE_LESS_ACTIONS, f"{role}: {actions} on *"


def test_each_function_touches_only_its_own_resources(core: dict[str, Any]) -> None:
    statements = _role_statements(core)
    text = {
        role: json.dumps(statements[role])
        for role in ("IotIngestRole", "LogIngestRole", "FeedPollerRole")
    }
    assert "CheckpointTable" not in text["IotIngestRole"] + text["LogIngestRole"]
    assert "-logs-" not in text["IotIngestRole"] + text["FeedPollerRole"]
    assert "EdgeFailureQueue" not in text["IotIngestRole"]  # synchronous: no failure destination
    for role, body in text.items():
        assert "WarehouseBucket" not in body, role  # only the job writes tables
        assert "kinesis:GetRecords" not in body, role  # edges write, never read
        assert (
            '"Action": "s3:PutObject", "Resource": {"Fn::Sub": "${RawArchiveBucket.Arn}/dead-letters/edge/*"}'
            in body
        )
    # The schedule's role (made by SAM) may only invoke the poller.
    (schedule_role,) = [r for r in statements if r.startswith("FeedPollerFunctionPoll")]
    (invoke,) = statements[schedule_role]
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert invoke["Resource"] == {"Fn::GetAtt": ["FeedPollerFunction", "Arn"]}


# ------------------------------------------------------------------ the edges as configured here

SETTINGS = {
    "IotIngestFunction": "edge_lambdas.iot_ingest.settings:IotIngestSettings",
    "LogIngestFunction": "edge_lambdas.log_ingest.settings:LogIngestSettings",
    "FeedPollerFunction": "edge_lambdas.feed_poller.settings:FeedPollerSettings",
    "ArchiveTransformFunction": None,  # no settings of its own: Powertools' variables only
    "StreamTransformFunction": "edge_lambdas.stream_transform.settings:StreamTransformSettings",
}


def _placeholder(value: Any) -> str:
    # Intrinsics become plausible values of what they name (a stream name, a bucket, a table).
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return str(int(value))
    text = json.dumps(value)
    if "Stream" in text:
        return "sluice-dev-events"
    if "Bucket" in text:
        return "sluice-dev-raw-123456789012"
    if "CheckpointTable" in text:
        return "sluice-dev-feed-checkpoints"
    return "auto"


def test_handlers_exist_and_every_sluice_variable_is_a_setting(
    core: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_lambdas.shared.settings import EdgeSettings

    functions = resources(core, "AWS::Lambda::Function")
    assert set(functions) == set(SETTINGS)
    for name, function in functions.items():
        module, _, attribute = function["Handler"].rpartition(".")
        assert attribute == "lambda_handler"
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, module
        assert "def lambda_handler(" in Path(spec.origin).read_text()
        variables = {k: _placeholder(v) for k, v in function["Environment"]["Variables"].items()}
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Sluice"
        if SETTINGS[name] is None:
            # Only the Globals' stream and dead-letter names, which it does not read.
            assert {v for v in variables if v.startswith("SLUICE_")} <= {
                "SLUICE_STREAM_NAME", "SLUICE_DEAD_LETTER_BUCKET", "SLUICE_DEAD_LETTER_PREFIX"
            }, name  # fmt: skip
            assert "SLUICE_" not in Path(spec.origin).read_text()
            continue
        settings_module, _, settings_name = str(SETTINGS[name]).partition(":")
        settings_class = getattr(importlib.import_module(settings_module), settings_name)
        variables = {
            k: _placeholder(resolve(v, core, core_parameters("dev")))
            for k, v in function["Environment"]["Variables"].items()
        }
        fields = set(settings_class.model_fields)
        if name == "FeedPollerFunction":
            fields |= set(EdgeSettings.model_fields)  # its publisher reads the edge settings
        for variable in variables:
            if variable.startswith("SLUICE_"):
                assert variable.removeprefix("SLUICE_").lower() in fields, f"{name}: {variable}"
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Sluice"
        # The settings validate with exactly this environment (cold start would fail otherwise).
        for variable in [v for v in list(__import__("os").environ) if v.startswith("SLUICE_")]:
            monkeypatch.delenv(variable)
        for variable, value in variables.items():
            monkeypatch.setenv(variable, value)
        settings_class()


def test_poller_timeout_is_below_its_lease(core: dict[str, Any]) -> None:
    poller = resources(core, "AWS::Lambda::Function")["FeedPollerFunction"]
    lease = float(poller["Environment"]["Variables"]["SLUICE_LEASE_SECONDS"])
    assert poller["Timeout"] < lease
    (invoke_config,) = [
        c
        for c in resources(core, "AWS::Lambda::EventInvokeConfig").values()
        if c["FunctionName"] == {"Ref": "FeedPollerFunction"}
    ]
    assert invoke_config["MaximumRetryAttempts"] == 0
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["EdgeFailureQueue", "Arn"]
    }
    (schedule,) = resources(core, "AWS::Scheduler::Schedule").values()
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": ["FeedPollerFunction", "Arn"]}
    assert schedule["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == 0


def test_log_edge_triggers(core: dict[str, Any]) -> None:
    bucket = resources(core, "AWS::S3::Bucket")["LogBucket"]
    (notification,) = bucket["NotificationConfiguration"]["LambdaConfigurations"]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Function"] == {"Fn::GetAtt": ["LogIngestFunction", "Arn"]}
    (subscription,) = resources(core, "AWS::Logs::SubscriptionFilter").values()
    assert subscription["LogGroupName"] == {"Ref": "NginxAccessLogGroup"}
    assert subscription["DestinationArn"] == {"Fn::GetAtt": ["LogIngestFunction", "Arn"]}


def test_http_api_requires_a_jwt_with_the_ingest_scope(core: dict[str, Any]) -> None:
    (api,) = resources(core, "AWS::ApiGatewayV2::Api").values()
    body = api["Body"]
    (route,) = body["paths"]["/iot"].values()
    assert route["security"] == [{"DeviceJwt": ["sluice/ingest"]}]
    scheme = body["components"]["securitySchemes"]["DeviceJwt"]
    assert scheme["x-amazon-apigateway-authorizer"]["type"] == "jwt"


# ---------------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("env_name", ENVIRONMENTS)
def test_parameter_files_are_complete_and_in_range(env_name: str) -> None:
    core_template = load_template(STACKS["core"].template)
    flink_template = load_template(STACKS["flink"].template)
    assert check_parameters(core_template, core_parameters(env_name)) == []
    assert check_parameters(flink_template, flink_parameters(env_name)) == []


def test_parameter_problems_are_one_line_each() -> None:
    template = load_template(STACKS["flink"].template)
    values = {**flink_parameters("dev"), "ParallelismPerKPU": "9", "Typo": "1", "LogLevel": "LOUD"}
    del values["CodeKey"]
    assert check_parameters(template, values) == [
        "unknown parameter Typo",
        "parameter CodeKey is required",
        "parameter ParallelismPerKPU=9 is above its maximum 8",
        "parameter LogLevel='LOUD' is not one of ['INFO', 'WARN', 'ERROR', 'DEBUG']",
    ]


def test_runtime_and_architectures_match_the_packages(core: dict[str, Any]) -> None:
    from infra.aws.deploy import LAMBDA_PYTHON, LAMBDAS

    functions = resources(core, "AWS::Lambda::Function")
    for package in LAMBDAS:
        (function,) = [
            f
            for f in functions.values()
            if f["Handler"].startswith(f"edge_lambdas.{package.name}.")
        ]
        assert function["Runtime"] == f"python{LAMBDA_PYTHON}"
        assert function["Architectures"] == [package.architecture]
        assert function["Code"]["S3Key"] == {"Ref": package.parameter}


# --------------------------------------------------------------------- the Lambda path (issue 15)

TRANSFORM_RESOURCES = {
    "TransformFailureQueue", "TransformLogGroup", "TransformRole", "StreamTransformFunction",
    "StreamTransformMapping", "TransformErrorsAlarm", "TransformFailedBatchesAlarm",
    "TransformIteratorAgeAlarm", "TransformGaveUpAlarm",
}  # fmt: skip


def test_the_lambda_path_exists_only_with_processing_lambda(core: dict[str, Any]) -> None:
    assert core["Conditions"]["ProcessesOnLambda"] == {
        "Fn::Equals": [{"Ref": "Processing"}, "lambda"]
    }
    conditioned = {
        name for name, r in core["Resources"].items() if r.get("Condition") == "ProcessesOnLambda"
    }
    assert conditioned == TRANSFORM_RESOURCES
    outputs = {n for n, o in core["Outputs"].items() if o.get("Condition") == "ProcessesOnLambda"}
    assert outputs == {"StreamTransformFunctionName", "TransformFailureQueueUrl"}
    assert core["Parameters"]["Processing"]["AllowedValues"] == ["flink", "lambda"]


def test_the_mapping_commits_per_shard_in_order_and_never_drops_silently(
    core: dict[str, Any],
) -> None:
    (mapping,) = resources(core, "AWS::Lambda::EventSourceMapping").values()
    params = core_parameters("dev")
    assert mapping["FunctionName"] == {"Ref": "StreamTransformFunction"}
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["Stream", "Arn"]}
    assert mapping["ParallelizationFactor"] == 1  # one invocation per shard at a time
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["StartingPosition"] == "TRIM_HORIZON"  # the tables' positions skip the rest
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["TransformFailureQueue", "Arn"]
    }
    # Records are given up only after retrying past their age, which stays below the retention:
    # the failure queue records the range while Kinesis still holds it.
    assert resolve(mapping["MaximumRetryAttempts"], core, params) == -1
    age = resolve(mapping["MaximumRecordAgeInSeconds"], core, params)
    assert 0 < age < float(params["StreamRetentionHours"]) * 3600
    assert resolve(mapping["MaximumBatchingWindowInSeconds"], core, params) == 60
    function = resources(core, "AWS::Lambda::Function")["StreamTransformFunction"]
    assert function["Handler"] == "edge_lambdas.stream_transform.handler.lambda_handler"
    assert function["Code"]["S3Key"] == {"Ref": "StreamTransformCodeKey"}
    assert resolve(function["Timeout"], core, params) < age
    variables = function["Environment"]["Variables"]
    assert variables["SLUICE_CATALOG"] == "glue"
    assert variables["SLUICE_DEPLOYMENT_ID"] == {"Ref": "TransformDeploymentId"}


def test_the_transform_role_reads_the_stream_and_writes_only_the_warehouse(
    core: dict[str, Any],
) -> None:
    (policy,) = resources(core, "AWS::IAM::Role")["TransformRole"]["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert "kinesis:GetRecords" in statements["ReadStream"]["Action"]
    assert not [a for a in statements["ReadStream"]["Action"] if a.startswith("kinesis:Put")]
    assert statements["WarehouseObjects"]["Resource"] == {
        "Fn::Sub": "${WarehouseBucket.Arn}/warehouse/*"
    }
    assert statements["FailedBatches"]["Resource"] == {
        "Fn::GetAtt": ["TransformFailureQueue", "Arn"]
    }
    text = json.dumps(policy)
    assert "RawArchiveBucket" not in text and "CheckpointTable" not in text


def test_the_transform_package_has_the_tables_layer() -> None:
    from infra.aws.deploy import LAMBDAS, TRANSFORM

    assert TRANSFORM not in LAMBDAS  # packaged only when Processing is lambda
    assert "tables" in TRANSFORM.core_packages and TRANSFORM.prune
    assert any(r.startswith("pyiceberg[") for r in TRANSFORM.requirements)
