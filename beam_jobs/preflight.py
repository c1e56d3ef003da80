"""Checks before the job starts: region, credentials, the Kinesis endpoint, the stream, the catalog.

In: the job's settings and the standard AWS environment (``AWS_REGION``/``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``, credentials).
Out: the stream's identity (``check_stream``: name, ARN, creation time, which the tables' owner
records) when everything answers; otherwise a ``ConfigError`` of one line naming what to set or
start, raised before the pipeline is built.

Why: without these checks a missing region or a stopped local endpoint surfaced as a traceback of
about 190 lines from inside the Beam runner, after the pipeline had started.
"""

from __future__ import annotations

import os

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from beam_jobs.settings import JobSettings
from sluice.core.aws_errors import aws_error
from sluice.core.errors import ConfigError
from sluice.tables.ownership import StreamIdentity
from sluice.tables.warehouse import open_catalog

__all__ = ["check_catalog", "check_stream"]

_QUICK = Config(connect_timeout=3, read_timeout=5, retries={"total_max_attempts": 2})


def region_of(settings: JobSettings) -> str:
    """The region the job talks to: ``--region_name``, else the AWS environment and config files."""
    region = settings.region_name or boto3.session.Session().region_name
    if not region:
        raise ConfigError(
            "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or give --region_name"
        )
    return region


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_KINESIS") or os.environ.get("AWS_ENDPOINT_URL") or ""


def check_stream(settings: JobSettings) -> StreamIdentity:
    """The stream exists and answers, with the credentials at hand; returns who it is."""
    region = region_of(settings)
    where = _endpoint() or f"the Kinesis endpoint of {region}"
    try:
        client = boto3.client("kinesis", region_name=region, config=_QUICK)
        summary = client.describe_stream_summary(StreamName=settings.stream_name)[
            "StreamDescriptionSummary"
        ]
    except NoRegionError:
        raise ConfigError("no AWS region: set AWS_REGION, or give --region_name") from None
    except NoCredentialsError:
        raise ConfigError(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        ) from None
    except (EndpointConnectionError, BotoConnectionError) as err:
        raise ConfigError(
            f"cannot reach {where} ({type(err).__name__}): start the endpoint or set "
            "AWS_ENDPOINT_URL to one that runs"
        ) from None
    except ClientError as err:
        found = aws_error(err)
        if found is not None and found.code == "ResourceNotFoundException":
            raise ConfigError(
                f"Kinesis stream {settings.stream_name!r} does not exist at {where}: create it, "
                "or give --stream_name"
            ) from None
        raise ConfigError(f"Kinesis at {where} refused DescribeStreamSummary: {found}") from None
    except BotoCoreError as err:
        raise ConfigError(f"cannot call Kinesis at {where}: {err}") from None
    return StreamIdentity(
        name=settings.stream_name,
        arn=str(summary["StreamARN"]),
        created=float(summary["StreamCreationTimestamp"].timestamp()),
    )


def check_catalog(settings: JobSettings) -> None:
    """The Iceberg catalog opens, lists its namespaces, and its existing tables load (a local one
    refuses tables stored outside its state folder: a copied or moved folder)."""
    warehouse = settings.warehouse_settings()
    try:
        catalog = open_catalog(warehouse)
        if (warehouse.namespace,) in catalog.list_namespaces():
            for identifier in catalog.list_tables(warehouse.namespace):
                catalog.load_table(identifier)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - pyiceberg's backends raise many kinds; one line each
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            f"cannot open the {warehouse.catalog} catalog ({warehouse.resolved_catalog_uri() if warehouse.catalog == 'sql' else warehouse.namespace}): {detail}"
        ) from None
