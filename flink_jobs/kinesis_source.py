"""Sluice's Kinesis source for PyFlink: the Java source in ``pyflink-dependencies.jar``
(``flink_jobs/java/kinesis-source``), built from the core's ``KinesisReadSettings`` through py4j.

In: a PyFlink ``StreamExecutionEnvironment`` whose jars include ``make flink-jar``'s shaded jar
(``pipeline.jars`` locally, MSF's ``jarfile`` run option in production), the core's
``KinesisReadSettings``, and the endpoint and credentials (None: AWS's endpoint and the default
credentials provider chain, as on MSF).
Out: ``read_kinesis`` gives a ``DataStream`` of one ``Row`` per Kinesis record, KPL aggregates kept
whole (``sluice.stream.kpl`` de-aggregates them), with the fields of ``KINESIS_ROW``:
``shard_id`` (str), ``sequence_number`` (str), ``arrival_millis`` (int, epoch ms, also the record's
Flink timestamp) and ``data`` (bytes). Per shard the rows come in sequence order; a child shard is
read only after its parents; the position (last sequence number emitted) is Flink checkpoint state,
so with checkpoints each record is emitted exactly once into the job's state and sinks.
``bounded=True``: the shards listed at start are read until each is caught up (a GetRecords call
returns nothing and is 0 ms behind the shard's tip), then the source ends (a backfill, or a test
over a pre-filled stream: the watermark then goes to the end of time, so every window closes).
Errors: settings this source cannot honour (saved positions, ``stop_when_idle_seconds``) or a jar
without the source are a ``ConfigError`` with one line naming the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# .venv-flink has PyFlink; the main environment (where mypy runs) does not.
from pyflink.common import Types, WatermarkStrategy  # type: ignore[import-not-found,unused-ignore]
from pyflink.datastream.connectors import Source  # type: ignore[import-not-found,unused-ignore]
from pyflink.java_gateway import get_gateway  # type: ignore[import-not-found,unused-ignore]

from sluice.core.errors import ConfigError

if TYPE_CHECKING:
    from pyflink.common.typeinfo import TypeInformation  # type: ignore[import-not-found,unused-ignore]
    from pyflink.datastream import (  # type: ignore[import-not-found,unused-ignore]
        DataStream,
        StreamExecutionEnvironment,
    )

    from sluice.stream.kinesis.settings import KinesisReadSettings

__all__ = ["JAVA_PACKAGE", "KINESIS_FIELDS", "KINESIS_ROW", "kinesis_source", "read_kinesis"]

JAVA_PACKAGE = "io.sluice.flink.kinesis"
KINESIS_FIELDS = ("shard_id", "sequence_number", "arrival_millis", "data")
KINESIS_ROW: TypeInformation = Types.ROW_NAMED(
    list(KINESIS_FIELDS),
    [Types.STRING(), Types.STRING(), Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())],
)
"""The type of the source's rows, the same as the Java source's ``KinesisSource.rowType()``."""


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def kinesis_source(
    settings: KinesisReadSettings,
    *,
    endpoint: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    bounded: bool = False,
    check: bool = True,
) -> Source:
    """The Java source for ``settings`` (its Python wrapper, for ``env.from_source``). With
    ``check`` (the default) the stream is listed once first, where the job is built, so an
    unreachable endpoint, a missing stream or refused credentials is a one-line ``ConfigError`` at
    start rather than tasks that fail and restart."""
    if settings.start.after_sequence:
        raise ConfigError(
            "Kinesis source: saved positions (start.after_sequence) do not apply to the Flink job; "
            "its positions are checkpoint state: restore from a checkpoint or savepoint instead"
        )
    if settings.stop_when_idle_seconds is not None:
        raise ConfigError(
            "Kinesis source: stop_when_idle_seconds does not apply to the Flink job (the source is "
            "unbounded, or bounded=True to stop once caught up): leave it unset"
        )
    if (access_key_id is None) != (secret_access_key is None):
        raise ConfigError(
            "Kinesis source: static credentials need both access_key_id and secret_access_key"
        )
    jvm: Any = get_gateway().jvm
    package: Any = jvm
    for part in JAVA_PACKAGE.split("."):
        package = getattr(package, part)
    try:
        config = package.KinesisSourceConfig.forStream(settings.stream_name)
    except Exception as error:  # py4j: the class is missing from the job's jars
        raise ConfigError(
            f"Kinesis source: {JAVA_PACKAGE}.KinesisSourceConfig is not on the job's class path "
            "(add build/flink/pyflink-dependencies.jar: run 'make flink-jar')"
        ) from error
    start = settings.start
    timestamp_millis = round(start.timestamp.timestamp() * 1000) if start.timestamp else 0
    config = (
        config.withStartPosition(start.kind, timestamp_millis)
        .withPolling(
            settings.max_records_per_call,
            _millis(settings.poll_interval_seconds),
            200,  # Kinesis allows 5 GetRecords calls per second per shard
        )
        .withThrottleBackoff(
            _millis(settings.backoff_base_seconds),
            _millis(settings.backoff_cap_seconds),
            settings.max_retries,
        )
        .withDiscoveryInterval(_millis(settings.discovery_interval_seconds))
        .withHttpTimeout(
            _millis(max(settings.connect_timeout_seconds, settings.read_timeout_seconds))
        )
    )
    if settings.region_name is not None:
        config = config.withRegion(settings.region_name)
    if endpoint is not None:
        # Local endpoints (moto server) speak Kinesis' JSON protocol, not the SDK's default CBOR.
        config = config.withEndpoint(endpoint).withCbor(False)
    if access_key_id is not None:
        config = config.withStaticCredentials(access_key_id, secret_access_key)
    if bounded:
        config = config.withBounded(True)
    try:
        source = package.KinesisSource.of(config)
    except Exception as error:  # py4j wraps the source's IllegalArgumentException
        raise ConfigError(_java_reason(error, "IllegalArgumentException: ")) from error
    if check:
        try:
            source.checkStream()
        except Exception as error:  # py4j wraps the check's IllegalStateException
            raise ConfigError(
                _java_reason(error, "IllegalStateException: ")
                + ": check sluice.input (stream.arn, aws.region, aws.endpoint) and the credentials"
            ) from error
    return Source(source)


def _java_reason(error: Exception, exception_prefix: str) -> str:
    """The one ``Kinesis source: ...`` line of a py4j error (else its first line)."""
    message = str(error).splitlines() or [repr(error)]
    reason = next((line for line in message if "Kinesis source:" in line), message[0])
    return reason.split(exception_prefix)[-1].strip()


def read_kinesis(
    env: StreamExecutionEnvironment,
    settings: KinesisReadSettings,
    *,
    endpoint: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    bounded: bool = False,
    name: str = "ReadFromKinesis",
) -> DataStream:
    """The stream of ``KINESIS_ROW`` rows, one per Kinesis record (no watermarks: the job assigns
    its own, by arrival time, downstream)."""
    source = kinesis_source(
        settings,
        endpoint=endpoint,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        bounded=bounded,
    )
    return env.from_source(source, WatermarkStrategy.no_watermarks(), name, KINESIS_ROW).uid(name)
