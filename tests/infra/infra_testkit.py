"""Helpers of the infrastructure tests: the templates with each environment's parameters filled in.

The code locations sluice deploy would fill in are placeholders here; everything else comes from
infra/aws/params/<env>.json, so the tests check the templates as each environment deploys them.
"""

from __future__ import annotations

from typing import Any

from infra.aws.templates import STACKS, load_parameters, load_template, translate_sam

REGION = "us-east-1"
PLACEHOLDER_CODE = {
    "ArtifactBucket": "sluice-artifacts-test",
    "IotIngestCodeKey": "edges/iot_ingest-0.zip",
    "LogIngestCodeKey": "edges/log_ingest-0.zip",
    "FeedPollerCodeKey": "edges/feed_poller-0.zip",
    "ArchiveTransformCodeKey": "edges/archive_transform-0.zip",
    "StreamTransformCodeKey": "edges/stream_transform-0.zip",
}
PLACEHOLDER_FLINK = {
    "CoreStackName": "sluice-test-core",
    "CodeBucket": "sluice-artifacts-test",
    "CodeKey": "flink/stream_job-0.zip",
}


def core_parameters(env: str) -> dict[str, str]:
    return {**load_parameters(env)["core"], **PLACEHOLDER_CODE}


def flink_parameters(env: str) -> dict[str, str]:
    return {**load_parameters(env)["flink"], **PLACEHOLDER_FLINK}


_translated: dict[str, dict[str, Any]] = {}


def translated_core(env: str) -> dict[str, Any]:
    """The core SAM template of ``env`` as plain CloudFormation (translated once per process)."""
    if env not in _translated:
        _translated[env] = translate_sam(
            load_template(STACKS["core"].template), core_parameters(env), REGION
        )
    return _translated[env]
